// TensorRT glue of jetmamba::CausalConv1d: the table (trt_ops.h) and the launcher that fills
// JmCausalConv1dParams; the per-channel scales are the plugin's device copies of its fields.
// No TensorRT types here.
#include "common/trt_ops.h"
#include "causal_conv1d/causal_conv1d.h"

// Weak, so that a library built without the kernel (the emulated interface tests) still loads;
// enqueue then says the kernel is missing. The real library always links it.
extern "C" cudaError_t jm_causal_conv1d(const JmCausalConv1dParams* p, cudaStream_t stream) __attribute__((weak));

namespace {

using namespace jm::trt;

// inputs: x [b, l, c], weight [c, k], bias [c] (optional), conv_state [b, k-1, c];
// outputs: y [b, l, c], conv_state_out [b, k-1, c]
std::string launch(const LaunchArgs& a) {
  if (jm_causal_conv1d == nullptr) return kernel_not_linked(*a.op, "jm_causal_conv1d");
  const Shape& x = a.inputs[0].shape;
  if (!fits_int(x.d[0]) || !fits_int(x.d[1]) || !fits_int(x.d[2])) return "CausalConv1d: x is too large for the kernel";
  const ParsedFields& f = *a.fields;
  const int xs = f.index_of("x_scale"), ws = f.index_of("w_scale"), os = f.index_of("out_scale");
  JmCausalConv1dParams p{};
  p.x = static_cast<const int8_t*>(a.inputs[0].data);
  p.weight = static_cast<const int8_t*>(a.inputs[1].data);
  p.bias = static_cast<const float*>(a.inputs[2].data);  // nullptr without a bias input
  p.conv_state = static_cast<const int8_t*>(a.inputs[3].data);
  p.y = static_cast<int8_t*>(a.outputs[0].data);
  p.conv_state_out = static_cast<int8_t*>(a.outputs[1].data);
  p.x_scale = a.device_floats[xs];
  p.w_scale = a.device_floats[ws];
  p.out_scale = a.device_floats[os];
  p.x_scale_count = static_cast<int>(f.at(xs).fs.size());
  p.w_scale_count = static_cast<int>(f.at(ws).fs.size());
  p.out_scale_count = static_cast<int>(f.at(os).fs.size());
  p.batch = static_cast<int>(x.d[0]);
  p.seqlen = static_cast<int>(x.d[1]);
  p.channels = static_cast<int>(x.d[2]);
  p.k = static_cast<int>(a.inputs[1].shape.d[1]);
  p.seq_chunk = 0;  // the launcher's choice
  const cudaError_t err = jm_causal_conv1d(&p, static_cast<cudaStream_t>(a.stream));
  return cuda_status("jm_causal_conv1d", err, cudaGetErrorString(err));
}

}  // namespace

JM_TRT_DEFINE_GLUE(causal_conv1d, &ops::kCausalConv1d, launch)
