// TensorRT glue of jetmamba::RMSNormQuant: the table (trt_ops.h) and the launcher that fills
// JmRmsNormQuantParams from the plugin's tensors and fields. No TensorRT types here.
#include "common/trt_ops.h"
#include "rms_norm_quant/rms_norm_quant.h"

// Weak, so that a library built without the kernel (the emulated interface tests) still loads;
// enqueue then says the kernel is missing. The real library always links it.
extern "C" cudaError_t jm_rms_norm_quant(const JmRmsNormQuantParams* p, cudaStream_t stream) __attribute__((weak));

namespace {

using namespace jm::trt;

// inputs: x, residual (optional), weight; outputs: y, residual_out
std::string launch(const LaunchArgs& a) {
  if (jm_rms_norm_quant == nullptr) return kernel_not_linked(*a.op, "jm_rms_norm_quant");
  int64_t rows = 0, d = 0;
  if (!rows_and_last(a.inputs[0].shape, &rows, &d)) return "RMSNormQuant: x is too large for the kernel";
  JmRmsNormQuantParams p{};
  p.x = a.inputs[0].data;
  p.residual = a.inputs[1].data;  // nullptr when the graph has no residual input
  p.weight = a.inputs[2].data;
  p.y = static_cast<int8_t*>(a.outputs[0].data);
  p.residual_out = a.outputs[1].data;
  p.rows = static_cast<int>(rows);
  p.d = static_cast<int>(d);
  p.x_dtype = a.inputs[0].dtype;  // JmNormDtype numbers TensorRT's kFLOAT / kHALF as TensorRT does
  p.weight_dtype = a.inputs[2].dtype;
  p.eps = a.fields->get_float("eps");
  p.out_scale = a.fields->get_float("out_scale");
  const cudaError_t err = jm_rms_norm_quant(&p, static_cast<cudaStream_t>(a.stream));
  return cuda_status("jm_rms_norm_quant", err, cudaGetErrorString(err));
}

}  // namespace

JM_TRT_DEFINE_GLUE(rms_norm_quant, &ops::kRMSNormQuant, launch)
