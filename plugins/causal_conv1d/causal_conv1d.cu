// C launcher of jetmamba::CausalConv1d (int8); the kernel is in causal_conv1d.cuh.
#include "causal_conv1d.h"

#include "causal_conv1d.cuh"

namespace {

bool valid_scale(const float* scale, int count, int channels) {
  return scale != nullptr && (count == 1 || (count == channels && count > 0));
}

}  // namespace

extern "C" cudaError_t jm_causal_conv1d(const JmCausalConv1dParams* p, cudaStream_t stream) {
  namespace cc = jm::causal_conv1d;
  if (p == nullptr) return cudaErrorInvalidValue;
  if (!valid_scale(p->x_scale, p->x_scale_count, p->channels) ||
      !valid_scale(p->w_scale, p->w_scale_count, p->channels) ||
      !valid_scale(p->out_scale, p->out_scale_count, p->channels))
    return cudaErrorInvalidValue;
  cc::ConvArgs<int8_t> a{};
  a.x = p->x;
  a.weight = p->weight;
  a.bias = p->bias;
  a.state = p->conv_state;
  a.y = p->y;
  a.state_out = p->conv_state_out;
  a.x_scale = p->x_scale;
  a.w_scale = p->w_scale;
  a.out_scale = p->out_scale;
  a.x_scale_count = p->x_scale_count;
  a.w_scale_count = p->w_scale_count;
  a.out_scale_count = p->out_scale_count;
  a.seqlen = p->seqlen;
  a.channels = p->channels;
  if (!cc::valid_conv_args(a, p->batch, p->k, p->seq_chunk)) return cudaErrorInvalidValue;
  return cc::launch(a, p->batch, p->k, p->seq_chunk, stream);
}

extern "C" size_t jm_causal_conv1d_params_size(void) { return sizeof(JmCausalConv1dParams); }
