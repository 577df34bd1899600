// jetmamba::SelectiveScan (and SelectiveScanInt8State) launcher: validates the arguments, then picks
// the instantiation for the state and output dtypes (decode kernel for seqlen 1, prefill otherwise; see selective_scan.cuh).
#include "selective_scan.cuh"

#include "selective_scan.h"

namespace {

bool valid_scale(float s) { return s > 0.0f && s <= 3.402823466e38f; }  // false for NaN and inf

template <class State, class Out>
cudaError_t run(const JmSelectiveScanParams& p, cudaStream_t stream) {
  jm_scan::ScanArgs<int8_t, State, Out> a{};
  a.u = p.u;
  a.dt = p.dt;
  a.B = p.B;
  a.C = p.C;
  a.z = p.z;
  a.A = p.A;
  a.D = p.D;
  a.dt_bias = p.dt_bias;
  a.gate_smooth = p.gate_smooth;
  a.state_in = static_cast<const State*>(p.ssm_state);
  a.state_out = static_cast<State*>(p.ssm_state_out);
  a.state_scale_in = p.ssm_state_scale;
  a.state_scale_out = p.ssm_state_scale_out;
  a.y = static_cast<Out*>(p.y);
  a.batch = p.batch;
  a.seqlen = p.seqlen;
  a.d = p.d;
  a.n = p.n;
  a.u_scale = p.u_scale;
  a.dt_scale = p.dt_scale;
  a.B_scale = p.B_scale;
  a.C_scale = p.C_scale;
  a.z_scale = p.z_scale;
  return jm_scan::launch(a, stream);
}

template <class State>
cudaError_t run_state(const JmSelectiveScanParams& p, cudaStream_t stream) {
  return p.out_dtype == JM_SCAN_FLOAT16 ? run<State, __half>(p, stream) : run<State, float>(p, stream);
}

}  // namespace

extern "C" {

size_t jm_selective_scan_params_size(void) { return sizeof(JmSelectiveScanParams); }

int jm_selective_scan_supports_n(int n) { return jm_scan::supported_n(n) ? 1 : 0; }

cudaError_t jm_selective_scan(const JmSelectiveScanParams* p, cudaStream_t stream) {
  if (p == nullptr) return cudaErrorInvalidValue;
  const bool int8_state = p->state_dtype == JM_SCAN_INT8;
  const bool dtypes = (p->state_dtype == JM_SCAN_FLOAT16 || p->state_dtype == JM_SCAN_FLOAT32 || int8_state) &&
                      (p->out_dtype == JM_SCAN_FLOAT16 || p->out_dtype == JM_SCAN_FLOAT32);
  // an int8 state needs both scale tensors; an fp state has none (a scale there is a caller's mix-up)
  const bool scale_pointers = int8_state ? (p->ssm_state_scale && p->ssm_state_scale_out)
                                         : (!p->ssm_state_scale && !p->ssm_state_scale_out);
  const bool pointers = p->u && p->dt && p->A && p->B && p->C && p->D && p->z && p->dt_bias && p->ssm_state && p->y &&
                        p->ssm_state_out && scale_pointers;
  const bool scales = valid_scale(p->u_scale) && valid_scale(p->dt_scale) && valid_scale(p->B_scale) &&
                      valid_scale(p->C_scale) && valid_scale(p->z_scale);
  if (!dtypes || !pointers || !scales || !jm_scan::valid_shape(p->batch, p->seqlen, p->d, p->n)) {
    return cudaErrorInvalidValue;
  }
  const size_t element = p->state_dtype == JM_SCAN_FLOAT16 ? 2 : int8_state ? 1 : 4;
  const size_t channels = static_cast<size_t>(p->batch) * p->d;
  if (jm_scan::partial_overlap(p->ssm_state, p->ssm_state_out, channels * p->n * element)) return cudaErrorInvalidValue;
  if (int8_state && jm_scan::partial_overlap(p->ssm_state_scale, p->ssm_state_scale_out, channels * sizeof(float))) {
    return cudaErrorInvalidValue;
  }
  if (int8_state) return run_state<int8_t>(*p, stream);
  return p->state_dtype == JM_SCAN_FLOAT16 ? run_state<__half>(*p, stream) : run_state<float>(*p, stream);
}

}  // extern "C"
