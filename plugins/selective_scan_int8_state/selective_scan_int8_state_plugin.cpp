// TensorRT glue of jetmamba::SelectiveScanInt8State: SelectiveScan with an int8 SSM state and its
// per-channel scales. The kernel is SelectiveScan's launcher (../selective_scan) with state_dtype
// JM_SCAN_INT8; this folder holds only the glue, since the op's I/O differs (see README.md).
#include "common/trt_ops.h"
#include "selective_scan/selective_scan.h"

// Weak, as in selective_scan_plugin.cpp: a library built without the kernels still loads.
extern "C" cudaError_t jm_selective_scan(const JmSelectiveScanParams* p, cudaStream_t stream) __attribute__((weak));
extern "C" int jm_selective_scan_supports_n(int n) __attribute__((weak));

namespace {

using namespace jm::trt;

// n = A's dim 1 (A [d, n]) must be a state size the kernels are instantiated for
std::string check(const OpTable& op, const ParsedFields& /*fields*/, const Shape* inputs) {
  const int64_t n = inputs[2].rank == 2 ? inputs[2].d[1] : -1;
  if (n >= 0 && jm_selective_scan_supports_n != nullptr && (!fits_int(n) || !jm_selective_scan_supports_n(static_cast<int>(n))))
    return std::string(op.name) + ": the kernels do not support d_state n = " + std::to_string(n);
  return std::string();
}

// inputs: u, dt, A, B, C, D, z, dt_bias, ssm_state, ssm_state_scale, gate_smooth (optional);
// outputs: y (fp16), ssm_state_out, ssm_state_scale_out
std::string launch(const LaunchArgs& a) {
  if (jm_selective_scan == nullptr) return kernel_not_linked(*a.op, "jm_selective_scan");
  const Shape& u = a.inputs[0].shape;
  const Shape& A = a.inputs[2].shape;
  if (!fits_int(u.d[0]) || !fits_int(u.d[1]) || !fits_int(u.d[2]) || !fits_int(A.d[1]))
    return "SelectiveScanInt8State: u is too large for the kernel";
  const ParsedFields& f = *a.fields;
  JmSelectiveScanParams p{};
  p.u = static_cast<const int8_t*>(a.inputs[0].data);
  p.dt = static_cast<const int8_t*>(a.inputs[1].data);
  p.A = static_cast<const float*>(a.inputs[2].data);
  p.B = static_cast<const int8_t*>(a.inputs[3].data);
  p.C = static_cast<const int8_t*>(a.inputs[4].data);
  p.D = static_cast<const float*>(a.inputs[5].data);
  p.z = static_cast<const int8_t*>(a.inputs[6].data);
  p.dt_bias = static_cast<const float*>(a.inputs[7].data);
  p.ssm_state = a.inputs[8].data;
  p.ssm_state_scale = static_cast<const float*>(a.inputs[9].data);
  p.gate_smooth = static_cast<const float*>(a.inputs[10].data);  // nullptr: the SiLU gate
  p.y = a.outputs[0].data;
  p.ssm_state_out = a.outputs[1].data;
  p.ssm_state_scale_out = static_cast<float*>(a.outputs[2].data);
  p.batch = static_cast<int32_t>(u.d[0]);
  p.seqlen = static_cast<int32_t>(u.d[1]);
  p.d = static_cast<int32_t>(u.d[2]);
  p.n = static_cast<int32_t>(A.d[1]);
  p.u_scale = f.get_float("u_scale");
  p.dt_scale = f.get_float("dt_scale");
  p.B_scale = f.get_float("B_scale");
  p.C_scale = f.get_float("C_scale");
  p.z_scale = f.get_float("z_scale");
  p.state_dtype = JM_SCAN_INT8;
  p.out_dtype = JM_SCAN_FLOAT16;  // the op's y is fp16 (its table admits nothing else)
  const cudaError_t err = jm_selective_scan(&p, static_cast<cudaStream_t>(a.stream));
  return cuda_status("jm_selective_scan", err, cudaGetErrorString(err));
}

}  // namespace

JM_TRT_DEFINE_GLUE(selective_scan_int8_state, &ops::kSelectiveScanInt8State, launch, nullptr, nullptr, check)
