// TensorRT glue of jetmamba::HadamardQuant: the table (trt_ops.h) and the launcher that fills
// JmHadamardQuantParams from the plugin's tensors and fields. No TensorRT types here.
#include "common/trt_ops.h"
#include "hadamard_quant/hadamard_quant.h"

// Weak, so that a library built without the kernel (the emulated interface tests) still loads;
// enqueue then says the kernel is missing. The real library always links it.
extern "C" cudaError_t jm_hadamard_quant(const JmHadamardQuantParams* p, cudaStream_t stream) __attribute__((weak));

namespace {

using namespace jm::trt;

// input: x [..., n]; output: y [..., n]
std::string launch(const LaunchArgs& a) {
  if (jm_hadamard_quant == nullptr) return kernel_not_linked(*a.op, "jm_hadamard_quant");
  const Shape& x = a.inputs[0].shape;
  int64_t rows = 1;
  for (int j = 0; j + 1 < x.rank; ++j) rows *= x.d[j];  // the kernel counts rows in 64 bits
  JmHadamardQuantParams p{};
  p.x = a.inputs[0].data;
  p.y = static_cast<int8_t*>(a.outputs[0].data);
  p.rows = rows;
  p.n = static_cast<int>(x.d[x.rank - 1]);  // a supported order (the table's limit), so small
  p.dtype = a.inputs[0].dtype;  // JmHadamardDtype numbers TensorRT's kFLOAT / kHALF as TensorRT does
  p.out_scale = a.fields->get_float("out_scale");
  const cudaError_t err = jm_hadamard_quant(&p, static_cast<cudaStream_t>(a.stream));
  return cuda_status("jm_hadamard_quant", err, cudaGetErrorString(err));
}

}  // namespace

JM_TRT_DEFINE_GLUE(hadamard_quant, &ops::kHadamardQuant, launch)
