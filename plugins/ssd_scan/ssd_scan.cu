// jetmamba::SSDScan launcher: validates the arguments, then picks the instantiation for the state
// and output dtypes (decode kernel for seqlen 1, chunked prefill otherwise; see ssd_scan.cuh).
#include "ssd_scan.cuh"

#include "ssd_scan.h"

namespace {

bool valid_dtype(int32_t d) { return d == JM_SSD_FLOAT16 || d == JM_SSD_FLOAT32; }

template <class State, class Out>
cudaError_t run(const JmSsdScanParams& p, cudaStream_t stream) {
  jm_ssd::SsdArgs<int8_t, State, Out> a{};
  a.x = p.x;
  a.dt = p.dt;
  a.A = p.A;
  a.B = p.B;
  a.C = p.C;
  a.D = p.D;
  a.dt_bias = p.dt_bias;
  a.state_in = static_cast<const State*>(p.ssm_state);
  a.state_out = static_cast<State*>(p.ssm_state_out);
  a.y = static_cast<Out*>(p.y);
  a.x_scale = p.x_scale;
  a.B_scale = p.B_scale;
  a.C_scale = p.C_scale;
  a.x_scale_step = p.x_scale_count == 1 ? 0 : 1;
  a.B_scale_step = p.B_scale_count == 1 ? 0 : 1;
  a.C_scale_step = p.C_scale_count == 1 ? 0 : 1;
  a.batch = p.batch;
  a.seqlen = p.seqlen;
  a.heads = p.heads;
  a.head_dim = p.head_dim;
  a.groups = p.groups;
  a.d_state = p.d_state;
  a.dt_min = p.dt_min;
  a.dt_max = p.dt_max;
  a.dt_half = p.dt_dtype == JM_SSD_FLOAT16;
  return jm_ssd::launch(a, stream);
}

template <class State>
cudaError_t run_state(const JmSsdScanParams& p, cudaStream_t stream) {
  return p.out_dtype == JM_SSD_FLOAT16 ? run<State, __half>(p, stream) : run<State, float>(p, stream);
}

}  // namespace

extern "C" {

size_t jm_ssd_scan_params_size(void) { return sizeof(JmSsdScanParams); }

int jm_ssd_scan_supports_d_state(int d_state) { return jm_ssd::supported_n(d_state) ? 1 : 0; }

int jm_ssd_scan_supports_head_dim(int head_dim) { return jm_ssd::supported_p(head_dim) ? 1 : 0; }

cudaError_t jm_ssd_scan(const JmSsdScanParams* p, cudaStream_t stream) {
  if (p == nullptr) return cudaErrorInvalidValue;
  const bool dtypes = valid_dtype(p->dt_dtype) && valid_dtype(p->state_dtype) && valid_dtype(p->out_dtype);
  const bool pointers = p->x && p->dt && p->A && p->B && p->C && p->D && p->dt_bias && p->ssm_state && p->x_scale &&
                        p->B_scale && p->C_scale && p->y && p->ssm_state_out;
  if (!dtypes || !pointers || !jm_ssd::valid_dt_limits(p->dt_min, p->dt_max) ||
      !jm_ssd::valid_shape(p->batch, p->seqlen, p->heads, p->head_dim, p->groups, p->d_state)) {
    return cudaErrorInvalidValue;
  }
  const long long channels = static_cast<long long>(p->heads) * p->head_dim;
  const bool counts = (p->x_scale_count == 1 || p->x_scale_count == channels) &&
                      (p->B_scale_count == 1 || p->B_scale_count == p->groups) &&
                      (p->C_scale_count == 1 || p->C_scale_count == p->groups);
  if (!counts) return cudaErrorInvalidValue;
  const size_t state_bytes =
      static_cast<size_t>(p->batch) * channels * p->d_state * (p->state_dtype == JM_SSD_FLOAT16 ? 2 : 4);
  if (jm_ssd::partial_overlap(p->ssm_state, p->ssm_state_out, state_bytes)) return cudaErrorInvalidValue;
  return p->state_dtype == JM_SSD_FLOAT16 ? run_state<__half>(*p, stream) : run_state<float>(*p, stream);
}

}  // extern "C"
