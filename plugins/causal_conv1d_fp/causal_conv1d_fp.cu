// C launcher of jetmamba::CausalConv1dFp (fp16 / fp32); the kernel is shared with the int8 op, in
// ../causal_conv1d/causal_conv1d.cuh.
#include "causal_conv1d_fp.h"

#include "causal_conv1d/causal_conv1d.cuh"

namespace {

template <class T>
cudaError_t run(const JmCausalConv1dFpParams* p, cudaStream_t stream) {
  namespace cc = jm::causal_conv1d;
  cc::ConvArgs<T> a{};
  a.x = static_cast<const T*>(p->x);
  a.weight = static_cast<const T*>(p->weight);
  a.bias = static_cast<const T*>(p->bias);
  a.state = static_cast<const T*>(p->conv_state);
  a.y = static_cast<T*>(p->y);
  a.state_out = static_cast<T*>(p->conv_state_out);
  a.seqlen = p->seqlen;
  a.channels = p->channels;
  if (!cc::valid_conv_args(a, p->batch, p->k, p->seq_chunk)) return cudaErrorInvalidValue;
  return cc::launch(a, p->batch, p->k, p->seq_chunk, stream);
}

}  // namespace

extern "C" cudaError_t jm_causal_conv1d_fp(const JmCausalConv1dFpParams* p, cudaStream_t stream) {
  if (p == nullptr) return cudaErrorInvalidValue;
  switch (p->dtype) {
    case JM_CAUSAL_CONV1D_FP32:
      return run<float>(p, stream);
    case JM_CAUSAL_CONV1D_FP16:
      return run<__half>(p, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

extern "C" size_t jm_causal_conv1d_fp_params_size(void) { return sizeof(JmCausalConv1dFpParams); }
