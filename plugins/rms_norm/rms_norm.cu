// C launcher of jetmamba::RMSNorm: RMSNormQuant's kernel (rms_norm_quant/rms_norm_quant.cuh) with an
// fp output in x's dtype.
#include "rms_norm/rms_norm.h"
#include "rms_norm_quant/rms_norm_quant.cuh"

extern "C" cudaError_t jm_rms_norm(const JmRmsNormParams* p, cudaStream_t stream) {
  if (p == nullptr) return cudaErrorInvalidValue;
  return jm_norm::rms_norm_launch<false>(p->x, p->residual, p->weight, p->y, p->residual_out, p->rows, p->d,
                                         p->x_dtype, p->weight_dtype, p->eps, 1.0f, stream);
}
