// TensorRT glue of jetmamba::CausalConv1dFp: the table (trt_ops.h), the launcher that fills
// JmCausalConv1dFpParams, and the kernel's rule that every tensor has x's dtype (the spec lets
// weight and bias have their own). No TensorRT types here.
#include "common/trt_ops.h"
#include "causal_conv1d_fp/causal_conv1d_fp.h"

// Weak, so that a library built without the kernel (the emulated interface tests) still loads;
// enqueue then says the kernel is missing. The real library always links it.
extern "C" cudaError_t jm_causal_conv1d_fp(const JmCausalConv1dFpParams* p, cudaStream_t stream)
    __attribute__((weak));

namespace {

using namespace jm::trt;

constexpr int32_t kWeight = 1, kBias = 2;  // spec input indices

bool supports(const OpTable& /*op*/, const Binding& binding, int32_t pos, const int32_t* dtypes) {
  if (pos >= binding.nb_actual) return true;  // the outputs follow x and conv_state by the table
  const int32_t spec = binding.spec_of_actual[pos];
  if (spec != kWeight && spec != kBias) return true;
  const int32_t x = earlier_input_dtype(binding, 0, pos, dtypes);
  return x < 0 || x == dtypes[pos];
}

// inputs: x [b, l, c], weight [c, k], bias [c] (optional), conv_state [b, k-1, c];
// outputs: y [b, l, c], conv_state_out [b, k-1, c]
std::string launch(const LaunchArgs& a) {
  if (jm_causal_conv1d_fp == nullptr) return kernel_not_linked(*a.op, "jm_causal_conv1d_fp");
  const Shape& x = a.inputs[0].shape;
  if (!fits_int(x.d[0]) || !fits_int(x.d[1]) || !fits_int(x.d[2])) return "CausalConv1dFp: x is too large for the kernel";
  JmCausalConv1dFpParams p{};
  p.x = a.inputs[0].data;
  p.weight = a.inputs[1].data;
  p.bias = a.inputs[2].data;  // nullptr without a bias input
  p.conv_state = a.inputs[3].data;
  p.y = a.outputs[0].data;
  p.conv_state_out = a.outputs[1].data;
  p.dtype = a.inputs[0].dtype;  // JmCausalConv1dFpDtype numbers kFLOAT / kHALF as TensorRT does
  p.batch = static_cast<int>(x.d[0]);
  p.seqlen = static_cast<int>(x.d[1]);
  p.channels = static_cast<int>(x.d[2]);
  p.k = static_cast<int>(a.inputs[1].shape.d[1]);
  p.seq_chunk = 0;  // the launcher's choice
  const cudaError_t err = jm_causal_conv1d_fp(&p, static_cast<cudaStream_t>(a.stream));
  return cuda_status("jm_causal_conv1d_fp", err, cudaGetErrorString(err));
}

}  // namespace

JM_TRT_DEFINE_GLUE(causal_conv1d_fp, &ops::kCausalConv1dFp, launch, nullptr, supports)
