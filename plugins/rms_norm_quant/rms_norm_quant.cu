// C launcher of jetmamba::RMSNormQuant (see rms_norm_quant.h, and rms_norm_quant.cuh for the kernel).
#include "rms_norm_quant/rms_norm_quant.cuh"

extern "C" cudaError_t jm_rms_norm_quant(const JmRmsNormQuantParams* p, cudaStream_t stream) {
  if (p == nullptr) return cudaErrorInvalidValue;
  return jm_norm::rms_norm_launch<true>(p->x, p->residual, p->weight, p->y, p->residual_out, p->rows, p->d,
                                        p->x_dtype, p->weight_dtype, p->eps, p->out_scale, stream);
}
