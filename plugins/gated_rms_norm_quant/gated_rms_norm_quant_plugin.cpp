// TensorRT glue of jetmamba::GatedRMSNormQuant: the table (trt_ops.h), the launcher that fills
// JmGatedRmsNormQuantParams, and the kernel's rule that group_size divides d. No TensorRT types.
#include "common/trt_ops.h"
#include "gated_rms_norm_quant/gated_rms_norm_quant.h"

// Weak, so that a library built without the kernel (the emulated interface tests) still loads;
// enqueue then says the kernel is missing. The real library always links it.
extern "C" cudaError_t jm_gated_rms_norm_quant(const JmGatedRmsNormQuantParams* p, cudaStream_t stream)
    __attribute__((weak));

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

// hadamard = 1: the normalised rows in fp32 (rows x d floats), which HadamardQuant then transforms
size_t workspace(const OpTable&, const ParsedFields& fields, const Shape* inputs) {
  int64_t rows = 0, d = 0;
  if (fields.get_int("hadamard") != 1 || !rows_and_last(inputs[0], &rows, &d)) return 0;
  return static_cast<size_t>(rows) * static_cast<size_t>(d) * sizeof(float);
}

// inputs: y, z, weight; output: out
std::string launch(const LaunchArgs& a) {
  if (jm_gated_rms_norm_quant == nullptr) return kernel_not_linked(*a.op, "jm_gated_rms_norm_quant");
  int64_t rows = 0, d = 0;
  if (!rows_and_last(a.inputs[0].shape, &rows, &d)) return "GatedRMSNormQuant: y is too large for the kernel";
  JmGatedRmsNormQuantParams p{};
  p.y = a.inputs[0].data;
  p.z = static_cast<const int8_t*>(a.inputs[1].data);
  p.weight = a.inputs[2].data;
  p.out = static_cast<int8_t*>(a.outputs[0].data);
  p.rows = static_cast<int>(rows);
  p.d = static_cast<int>(d);
  p.group_size = a.fields->get_int("group_size");
  p.y_dtype = a.inputs[0].dtype;  // JmNormDtype numbers TensorRT's kFLOAT / kHALF as TensorRT does
  p.weight_dtype = a.inputs[2].dtype;
  p.z_scale = a.fields->get_float("z_scale");
  p.eps = a.fields->get_float("eps");
  p.out_scale = a.fields->get_float("out_scale");
  p.hadamard = a.fields->get_int("hadamard");
  p.workspace = static_cast<float*>(a.workspace);
  const cudaError_t err = jm_gated_rms_norm_quant(&p, static_cast<cudaStream_t>(a.stream));
  return cuda_status("jm_gated_rms_norm_quant", err, cudaGetErrorString(err));
}

}  // namespace

JM_TRT_DEFINE_GLUE(gated_rms_norm_quant, &ops::kGatedRMSNormQuant, launch, workspace, nullptr, check)
