// TensorRT glue of jetmamba::W4A16Linear: the table (trt_ops.h), the launcher that fills JmW4A16LinearParams
// from the plugin's tensors and fields, and the kernels' shape rules. No TensorRT types here.
#include "common/trt_ops.h"
#include "w4a16_linear/w4a16_linear.h"

// Weak, so that a library built without the kernel (the emulated interface tests) still loads;
// enqueue then says the kernel is missing. The real library always links it.
extern "C" cudaError_t jm_w4a16_linear(const JmW4A16LinearParams* p, cudaStream_t stream) __attribute__((weak));

namespace {

using namespace jm::trt;

// The spec checks qweight [N, K/2] and scales [N, K/G] by floor division; the kernels also need K
// even and a multiple of G, and G a multiple of 32 (the field's minimum is 32).
std::string check(const OpTable& op, const ParsedFields& fields, const Shape* inputs) {
  const int64_t k = inputs[0].rank == 3 ? inputs[0].d[2] : -1;
  const int64_t g = fields.get_int("group_size");
  if (g % 32 != 0) return std::string(op.name) + ": group_size " + std::to_string(g) + " is not a multiple of 32";
  if (k >= 0 && k % g != 0)
    return std::string(op.name) + ": group_size " + std::to_string(g) + " does not divide K = " + std::to_string(k);
  return std::string();
}

// inputs: x, qweight, scales, bias (optional); outputs: y
std::string launch(const LaunchArgs& a) {
  if (jm_w4a16_linear == nullptr) return kernel_not_linked(*a.op, "jm_w4a16_linear");
  int64_t rows = 0, k = 0;
  const Shape& w = a.inputs[1].shape;
  if (!rows_and_last(a.inputs[0].shape, &rows, &k) || !fits_int(w.d[0])) return "W4A16Linear: x is too large for the kernel";
  JmW4A16LinearParams p{};
  p.x = static_cast<const void*>(a.inputs[0].data);
  p.qweight = static_cast<const uint8_t*>(a.inputs[1].data);
  p.scales = a.inputs[2].data;
  p.bias = static_cast<const float*>(a.inputs[3].data);  // nullptr when the graph has no bias
  p.y = a.outputs[0].data;
  p.M = static_cast<int>(rows);
  p.N = static_cast<int>(w.d[0]);
  p.K = static_cast<int>(k);
  p.group_size = static_cast<int>(a.fields->get_int("group_size"));
  const cudaError_t err = jm_w4a16_linear(&p, static_cast<cudaStream_t>(a.stream));
  return cuda_status("jm_w4a16_linear", err, cudaGetErrorString(err));
}

}  // namespace

JM_TRT_DEFINE_GLUE(w4a16_linear, &ops::kW4A16Linear, launch, nullptr, nullptr, check)
