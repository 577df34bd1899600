// C launcher of jetmamba::GatedRMSNormQuant (see gated_rms_norm_quant.h; the kernel is the segment
// norm of rms_norm_quant.cuh with gated_rms_norm_quant.cuh's element operation).
#include "gated_rms_norm_quant/gated_rms_norm_quant.cuh"

extern "C" cudaError_t jm_gated_rms_norm_quant(const JmGatedRmsNormQuantParams* p, cudaStream_t stream) {
  if (p == nullptr) return cudaErrorInvalidValue;
  return jm_norm::gated_rms_norm_launch<true>(p->y, p->z, p->weight, p->out, p->rows, p->d, p->group_size,
                                              p->y_dtype, p->weight_dtype, p->z_scale, p->eps, p->out_scale,
                                              p->hadamard, p->workspace, stream);
}
