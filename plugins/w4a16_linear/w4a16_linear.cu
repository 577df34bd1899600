// C launcher of jetmamba::W4A16Linear (see w4a16_linear.h, and w4a16_linear.cuh for the kernels).
#include "w4a16_linear/w4a16_linear.cuh"

extern "C" cudaError_t jm_w4a16_linear(const JmW4A16LinearParams* p, cudaStream_t stream) {
  if (p == nullptr || !jm_w4::check_common(p->x, 2, p->qweight, p->scales, p->bias, p->y, p->M, p->N, p->K,
                                           p->group_size)) {
    return cudaErrorInvalidValue;
  }
  if (p->M == 0) return cudaSuccess;
  return jm_w4::launch_w4a16(*p, stream);
}

extern "C" size_t jm_w4a16_linear_params_size(void) { return sizeof(JmW4A16LinearParams); }
