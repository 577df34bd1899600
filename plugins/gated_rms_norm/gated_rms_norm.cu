// C launcher of jetmamba::GatedRMSNorm: GatedRMSNormQuant's kernel (gated_rms_norm_quant.cuh) with
// fp z and an fp output in y's dtype.
#include "gated_rms_norm/gated_rms_norm.h"
#include "gated_rms_norm_quant/gated_rms_norm_quant.cuh"

extern "C" cudaError_t jm_gated_rms_norm(const JmGatedRmsNormParams* p, cudaStream_t stream) {
  if (p == nullptr) return cudaErrorInvalidValue;
  return jm_norm::gated_rms_norm_launch<false>(p->y, p->z, p->weight, p->out, p->rows, p->d, p->group_size,
                                               p->y_dtype, p->weight_dtype, 1.0f, p->eps, 1.0f, 0, nullptr, stream);
}
