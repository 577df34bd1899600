// TensorRT glue of jetmamba::GatedRMSNorm: the table (trt_ops.h), the launcher that fills
// JmGatedRmsNormParams, and the kernel's rule that group_size divides d. No TensorRT types.
#include "common/trt_ops.h"
#include "gated_rms_norm/gated_rms_norm.h"

// Weak, so that a library built without the kernel (the emulated interface tests) still loads;
// enqueue then says the kernel is missing. The real library always links it.
extern "C" cudaError_t jm_gated_rms_norm(const JmGatedRmsNormParams* p, cudaStream_t stream) __attribute__((weak));

namespace {

using namespace jm::trt;

// inputs: y [b, l, d], z, weight; the groups tile the channels
std::string check(const OpTable& op, const ParsedFields& fields, const Shape* inputs) {
  const int64_t d = inputs[0].rank == 3 ? inputs[0].d[2] : -1;
  const int32_t group_size = fields.get_int("group_size");
  if (d >= 0 && group_size > 0 && d % group_size != 0)
    return std::string(op.name) + ": group_size " + std::to_string(group_size) + " does not divide d = " + std::to_string(d);
  return std::string();
}

// inputs: y, z, weight; output: out
std::string launch(const LaunchArgs& a) {
  if (jm_gated_rms_norm == nullptr) return kernel_not_linked(*a.op, "jm_gated_rms_norm");
  int64_t rows = 0, d = 0;
  if (!rows_and_last(a.inputs[0].shape, &rows, &d)) return "GatedRMSNorm: y is too large for the kernel";
  JmGatedRmsNormParams p{};
  p.y = a.inputs[0].data;
  p.z = a.inputs[1].data;
  p.weight = a.inputs[2].data;
  p.out = a.outputs[0].data;
  p.rows = static_cast<int>(rows);
  p.d = static_cast<int>(d);
  p.group_size = a.fields->get_int("group_size");
  p.y_dtype = a.inputs[0].dtype;  // JmNormDtype numbers TensorRT's kFLOAT / kHALF as TensorRT does
  p.weight_dtype = a.inputs[2].dtype;
  p.eps = a.fields->get_float("eps");
  const cudaError_t err = jm_gated_rms_norm(&p, static_cast<cudaStream_t>(a.stream));
  return cuda_status("jm_gated_rms_norm", err, cudaGetErrorString(err));
}

}  // namespace

JM_TRT_DEFINE_GLUE(gated_rms_norm, &ops::kGatedRMSNorm, launch, nullptr, nullptr, check)
