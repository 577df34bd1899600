// TensorRT glue of jetmamba::SSDScan: the table (trt_ops.h), the launcher that fills JmSsdScanParams
// (the per-channel / per-group scales are the plugin's device copies of its fields), and the
// kernels' own sizes (d_state, head_dim, heads a multiple of groups). No TensorRT types here.
#include "common/trt_ops.h"
#include "ssd_scan/ssd_scan.h"

// Weak, so that a library built without the kernel (the emulated interface tests) still loads;
// enqueue then says the kernel is missing. The real library always links it.
extern "C" cudaError_t jm_ssd_scan(const JmSsdScanParams* p, cudaStream_t stream) __attribute__((weak));
extern "C" int jm_ssd_scan_supports_d_state(int d_state) __attribute__((weak));
extern "C" int jm_ssd_scan_supports_head_dim(int head_dim) __attribute__((weak));

namespace {

using namespace jm::trt;

// The SSD kernels number fp16 / fp32 their own way (fp16 first); TensorRT's kHALF is 1.
int32_t ssd_dtype(int32_t trt_dtype) { return trt_dtype == 1 ? JM_SSD_FLOAT16 : JM_SSD_FLOAT32; }

// inputs: x [b, l, H*P], dt [b, l, H], A, B [b, l, G, N], C, D, dt_bias, ssm_state [b, H, P, N]
std::string check(const OpTable& op, const ParsedFields& fields, const Shape* inputs) {
  const int64_t heads = fields.get_int("heads");
  const int64_t channels = inputs[0].rank == 3 ? inputs[0].d[2] : -1;
  const int64_t groups = inputs[3].rank == 4 ? inputs[3].d[2] : -1;
  const int64_t d_state = inputs[3].rank == 4 ? inputs[3].d[3] : -1;
  const std::string name = op.name;
  if (groups > 0 && heads % groups != 0)
    return name + ": heads = " + std::to_string(heads) + " is not a multiple of the groups, " + std::to_string(groups);
  if (d_state >= 0 && jm_ssd_scan_supports_d_state != nullptr &&
      (!fits_int(d_state) || !jm_ssd_scan_supports_d_state(static_cast<int>(d_state))))
    return name + ": the kernels do not support d_state N = " + std::to_string(d_state);
  if (channels >= 0 && heads > 0 && channels % heads == 0 && jm_ssd_scan_supports_head_dim != nullptr &&
      (!fits_int(channels / heads) || !jm_ssd_scan_supports_head_dim(static_cast<int>(channels / heads))))
    return name + ": the kernels do not support head_dim P = " + std::to_string(channels / heads);
  return std::string();
}

// inputs: x, dt, A, B, C, D, dt_bias, ssm_state; outputs: y [b, l, H, P], ssm_state_out
std::string launch(const LaunchArgs& a) {
  if (jm_ssd_scan == nullptr) return kernel_not_linked(*a.op, "jm_ssd_scan");
  const Shape& x = a.inputs[0].shape;
  const Shape& B = a.inputs[3].shape;
  const ParsedFields& f = *a.fields;
  const int32_t heads = f.get_int("heads");
  if (!fits_int(x.d[0]) || !fits_int(x.d[1]) || !fits_int(x.d[2]) || !fits_int(B.d[2]) || !fits_int(B.d[3]))
    return "SSDScan: x is too large for the kernel";
  const int xs = f.index_of("x_scale"), bs = f.index_of("B_scale"), cs = f.index_of("C_scale");
  JmSsdScanParams p{};
  p.x = static_cast<const int8_t*>(a.inputs[0].data);
  p.dt = a.inputs[1].data;
  p.A = static_cast<const float*>(a.inputs[2].data);
  p.B = static_cast<const int8_t*>(a.inputs[3].data);
  p.C = static_cast<const int8_t*>(a.inputs[4].data);
  p.D = static_cast<const float*>(a.inputs[5].data);
  p.dt_bias = static_cast<const float*>(a.inputs[6].data);
  p.ssm_state = a.inputs[7].data;
  p.x_scale = a.device_floats[xs];
  p.B_scale = a.device_floats[bs];
  p.C_scale = a.device_floats[cs];
  p.y = a.outputs[0].data;
  p.ssm_state_out = a.outputs[1].data;
  p.batch = static_cast<int32_t>(x.d[0]);
  p.seqlen = static_cast<int32_t>(x.d[1]);
  p.heads = heads;
  p.head_dim = static_cast<int32_t>(x.d[2] / heads);  // the table checked that heads divides x's channels
  p.groups = static_cast<int32_t>(B.d[2]);
  p.d_state = static_cast<int32_t>(B.d[3]);
  p.x_scale_count = static_cast<int32_t>(f.at(xs).fs.size());
  p.B_scale_count = static_cast<int32_t>(f.at(bs).fs.size());
  p.C_scale_count = static_cast<int32_t>(f.at(cs).fs.size());
  p.dt_min = f.get_float("dt_min");
  p.dt_max = f.get_float("dt_max");
  p.dt_dtype = ssd_dtype(a.inputs[1].dtype);
  p.state_dtype = ssd_dtype(a.inputs[7].dtype);
  p.out_dtype = ssd_dtype(a.outputs[0].dtype);
  const cudaError_t err = jm_ssd_scan(&p, static_cast<cudaStream_t>(a.stream));
  return cuda_status("jm_ssd_scan", err, cudaGetErrorString(err));
}

}  // namespace

JM_TRT_DEFINE_GLUE(ssd_scan, &ops::kSSDScan, launch, nullptr, nullptr, check)
