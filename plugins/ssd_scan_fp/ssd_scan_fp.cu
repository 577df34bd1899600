// jetmamba::SSDScanFp launcher: validates the arguments, then picks the instantiation for the input
// (= output) and state dtypes; the kernels are SSDScan's (ssd_scan.cuh).
#include "../ssd_scan/ssd_scan.cuh"

#include "ssd_scan_fp.h"

namespace {

template <class T, class State>
cudaError_t run(const JmSsdScanFpParams& p, cudaStream_t stream) {
  jm_ssd::SsdArgs<T, State, T> a{};
  a.x = static_cast<const T*>(p.x);
  a.dt = p.dt;
  a.A = p.A;
  a.B = static_cast<const T*>(p.B);
  a.C = static_cast<const T*>(p.C);
  a.D = p.D;
  a.dt_bias = p.dt_bias;
  a.state_in = static_cast<const State*>(p.ssm_state);
  a.state_out = static_cast<State*>(p.ssm_state_out);
  a.y = static_cast<T*>(p.y);
  a.x_scale = a.B_scale = a.C_scale = nullptr;  // never read: the inputs are not quantized
  a.batch = p.batch;
  a.seqlen = p.seqlen;
  a.heads = p.heads;
  a.head_dim = p.head_dim;
  a.groups = p.groups;
  a.d_state = p.d_state;
  a.dt_min = p.dt_min;
  a.dt_max = p.dt_max;
  a.dt_half = p.dtype == JM_SSD_FLOAT16;  // dt has x's dtype
  return jm_ssd::launch(a, stream);
}

template <class T>
cudaError_t run_input(const JmSsdScanFpParams& p, cudaStream_t stream) {
  return p.state_dtype == JM_SSD_FLOAT16 ? run<T, __half>(p, stream) : run<T, float>(p, stream);
}

}  // namespace

extern "C" {

size_t jm_ssd_scan_fp_params_size(void) { return sizeof(JmSsdScanFpParams); }

cudaError_t jm_ssd_scan_fp(const JmSsdScanFpParams* p, cudaStream_t stream) {
  if (p == nullptr) return cudaErrorInvalidValue;
  const bool dtypes = (p->dtype == JM_SSD_FLOAT16 || p->dtype == JM_SSD_FLOAT32) &&
                      (p->state_dtype == JM_SSD_FLOAT16 || p->state_dtype == JM_SSD_FLOAT32);
  const bool pointers =
      p->x && p->dt && p->A && p->B && p->C && p->D && p->dt_bias && p->ssm_state && p->y && p->ssm_state_out;
  if (!dtypes || !pointers || !jm_ssd::valid_dt_limits(p->dt_min, p->dt_max) ||
      !jm_ssd::valid_shape(p->batch, p->seqlen, p->heads, p->head_dim, p->groups, p->d_state)) {
    return cudaErrorInvalidValue;
  }
  const size_t state_bytes = static_cast<size_t>(p->batch) * p->heads * p->head_dim * p->d_state *
                             (p->state_dtype == JM_SSD_FLOAT16 ? 2 : 4);
  if (jm_ssd::partial_overlap(p->ssm_state, p->ssm_state_out, state_bytes)) return cudaErrorInvalidValue;
  return p->dtype == JM_SSD_FLOAT16 ? run_input<__half>(*p, stream) : run_input<float>(*p, stream);
}

}  // extern "C"
