// C launcher of jetmamba::W4A8Linear (see w4a8_linear.h, and w4a8_linear.cuh for the kernels).
#include "w4a8_linear/w4a8_linear.cuh"

extern "C" cudaError_t jm_w4a8_linear(const JmW4A8LinearParams* p, cudaStream_t stream) {
  if (p == nullptr || !(p->x_scale > 0.0f && p->x_scale <= 3.402823466e38f) ||
      !jm_w4::check_common(p->x, 1, p->qweight, p->scales, p->bias, p->y, p->M, p->N, p->K, p->group_size)) {
    return cudaErrorInvalidValue;
  }
  if (p->M == 0) return cudaSuccess;
  return jm_w4::launch_w4a8(*p, stream);
}

extern "C" size_t jm_w4a8_linear_params_size(void) { return sizeof(JmW4A8LinearParams); }
