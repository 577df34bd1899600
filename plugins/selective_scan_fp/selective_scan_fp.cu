// jetmamba::SelectiveScanFp launcher: validates the arguments, then picks the instantiation for the
// input (= output) and state dtypes; the kernels are SelectiveScan's (selective_scan.cuh).
#include "../selective_scan/selective_scan.cuh"

#include "selective_scan_fp.h"

namespace {

template <class T, class State>
cudaError_t run(const JmSelectiveScanFpParams& p, cudaStream_t stream) {
  jm_scan::ScanArgs<T, State, T> a{};
  a.u = static_cast<const T*>(p.u);
  a.dt = static_cast<const T*>(p.dt);
  a.B = static_cast<const T*>(p.B);
  a.C = static_cast<const T*>(p.C);
  a.z = static_cast<const T*>(p.z);
  a.A = p.A;
  a.D = p.D;
  a.dt_bias = p.dt_bias;
  a.gate_smooth = nullptr;  // SiLU
  a.state_in = static_cast<const State*>(p.ssm_state);
  a.state_out = static_cast<State*>(p.ssm_state_out);
  a.y = static_cast<T*>(p.y);
  a.batch = p.batch;
  a.seqlen = p.seqlen;
  a.d = p.d;
  a.n = p.n;
  a.u_scale = a.dt_scale = a.B_scale = a.C_scale = a.z_scale = 1.0f;  // unused: the inputs are not quantized
  return jm_scan::launch(a, stream);
}

template <class T>
cudaError_t run_input(const JmSelectiveScanFpParams& p, cudaStream_t stream) {
  return p.state_dtype == JM_SCAN_FLOAT16 ? run<T, __half>(p, stream) : run<T, float>(p, stream);
}

}  // namespace

extern "C" {

size_t jm_selective_scan_fp_params_size(void) { return sizeof(JmSelectiveScanFpParams); }

cudaError_t jm_selective_scan_fp(const JmSelectiveScanFpParams* p, cudaStream_t stream) {
  if (p == nullptr) return cudaErrorInvalidValue;
  const bool dtypes = (p->dtype == JM_SCAN_FLOAT16 || p->dtype == JM_SCAN_FLOAT32) &&
                      (p->state_dtype == JM_SCAN_FLOAT16 || p->state_dtype == JM_SCAN_FLOAT32);
  const bool pointers = p->u && p->dt && p->A && p->B && p->C && p->D && p->z && p->dt_bias && p->ssm_state && p->y &&
                        p->ssm_state_out;
  if (!dtypes || !pointers || !jm_scan::valid_shape(p->batch, p->seqlen, p->d, p->n)) return cudaErrorInvalidValue;
  const size_t state_bytes = static_cast<size_t>(p->batch) * p->d * p->n * (p->state_dtype == JM_SCAN_FLOAT16 ? 2 : 4);
  if (jm_scan::partial_overlap(p->ssm_state, p->ssm_state_out, state_bytes)) return cudaErrorInvalidValue;
  return p->dtype == JM_SCAN_FLOAT16 ? run_input<__half>(*p, stream) : run_input<float>(*p, stream);
}

}  // extern "C"
