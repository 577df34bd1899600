// jetmamba::GatedRMSNormQuant / GatedRMSNorm: Mamba2's gated RMSNorm on the segment-norm engine of
// rms_norm_quant.cuh. Each group of group_size channels of a row is one segment (a warp normalises
// a short group, a block a long one); the element operation is h = y * silu(gate), the gate being
// int8 z dequantised with z_scale (GatedRMSNormQuant) or fp z (GatedRMSNorm).
//
// Numerics as the reference (calibration/functional/norm.py gated_rms_norm): fp32 throughout,
// silu(g) = g / (1 + exp(-g)) as torch's CPU kernel writes it, then the group's
// 1 / sqrt(mean(h^2) + eps), times the weight, quantised (or rounded to y's dtype) as in
// rms_norm_quant.cuh, which also says why no IEEE division instruction is used.
// The Hadamard option of GatedRMSNormQuant transforms the whole row: the norm writes fp32 rows to a
// workspace and HadamardQuant's launcher (plugins/hadamard_quant) transforms and quantises them.
#pragma once

#include "gated_rms_norm_quant/gated_rms_norm_quant.h"
#include "hadamard_quant/hadamard_quant.h"
#include "rms_norm_quant/rms_norm_quant.cuh"

namespace jm_norm {

// The gate's value in fp32: int8 codes are dequantised (q * scale, as ONNX DequantizeLinear), fp
// values converted.
template <typename TZ>
struct Gate {
  static __device__ __forceinline__ float value(TZ v, float /*scale*/) { return Num<TZ>::to_float(v); }
};
template <>
struct Gate<int8_t> {
  static __device__ __forceinline__ float value(int8_t q, float scale) { return static_cast<float>(q) * scale; }
};

// silu(g) = g / (1 + exp(-g)), the division from the approximate reciprocal with one fma correction
// (the correctly rounded quotient but for rare inputs, then one ulp apart). The exponent is capped at
// 80 so that 1 + exp(-g) stays finite and below 2^126, where the approximate reciprocal flushes to 0:
// below g = -80 silu is g * 1.8e-35 instead of about g * exp(g), both nothing next to fp16 or int8.
__device__ __forceinline__ float silu(float g) {
  const float den = 1.0f + expf(fminf(-g, 80.0f));
  const float r = __fdividef(1.0f, den);
  const float q = g * r;
  return fmaf(fmaf(-q, den, g), r, q);
}

template <typename TY, typename TZ, typename TW, typename TOut>
struct GatedRmsNormOp {
  static constexpr int kVec = 16 / sizeof(TY);  // one 16-byte access of y

  const TY* y;
  const TZ* z;
  const TW* weight;
  TOut* out;
  float z_scale;      // int8 z only
  Divisor out_scale;  // int8 out only

  template <int V>
  __device__ __forceinline__ void input(size_t off, float (&h)[V]) const {
    float yv[V];
    load_floats<TY, V>(y + off, yv);
    const Pack<TZ, V> zv = load_pack<TZ, V>(z + off);
#pragma unroll
    for (int j = 0; j < V; ++j) {
      h[j] = yv[j] * silu(Gate<TZ>::value(zv.v[j], z_scale));
    }
  }

  // nothing was stored: recompute (the same instructions, so the same bits)
  template <int V>
  __device__ __forceinline__ void reinput(size_t off, float (&h)[V]) const {
    input<V>(off, h);
  }

  template <int V>
  __device__ __forceinline__ void output(size_t off, size_t woff, const float (&h)[V], float inv) const {
    scale_and_store<TW, TOut, V>(weight + woff, out + off, h, inv, out_scale);
  }
};

// TZ: the gate's type; TQ: the output's (int8 quantised, or fp: the fp variant's output, or the fp32
// rows the Hadamard option transforms next)
template <typename TY, typename TW, typename TQ, typename TZ = TQ>
cudaError_t launch_gated_norm(const void* y, const void* z, const void* weight, void* out, int segments,
                              int group_size, int groups, float z_scale, float eps, float out_scale, bool vec,
                              cudaStream_t stream) {
  const GatedRmsNormOp<TY, TZ, TW, TQ> op{static_cast<const TY*>(y), static_cast<const TZ*>(z),
                                          static_cast<const TW*>(weight), static_cast<TQ*>(out), z_scale,
                                          make_divisor(out_scale)};
  return launch(op, vec, segments, group_size, groups, eps, stream);
}

// hadamard = 1: the gated norm of every row in fp32 into the workspace (what the reference
// transforms), then HadamardQuant's transform + quantisation of the d-long rows. Arguments checked.
inline cudaError_t gated_norm_then_hadamard(const void* y, const void* z, const void* weight, void* out, int rows,
                                            int d, int group_size, int y_dtype, int weight_dtype, float z_scale,
                                            float eps, float out_scale, float* workspace, cudaStream_t stream) {
  const int segs = rows * (d / group_size);
  const int groups = d / group_size;
  const bool vec = aligned(y, 16) && aligned(z, y_dtype == JM_NORM_FP16 ? 8 : 4) && aligned(workspace, 16) &&
                   aligned(weight, 16);
  const bool w16 = weight_dtype == JM_NORM_FP16;
  cudaError_t err;
  if (y_dtype == JM_NORM_FP16) {
    err = w16 ? launch_gated_norm<__half, __half, float, int8_t>(y, z, weight, workspace, segs, group_size, groups,
                                                                 z_scale, eps, 1.0f, vec, stream)
              : launch_gated_norm<__half, float, float, int8_t>(y, z, weight, workspace, segs, group_size, groups,
                                                                z_scale, eps, 1.0f, vec, stream);
  } else {
    err = w16 ? launch_gated_norm<float, __half, float, int8_t>(y, z, weight, workspace, segs, group_size, groups,
                                                                z_scale, eps, 1.0f, vec, stream)
              : launch_gated_norm<float, float, float, int8_t>(y, z, weight, workspace, segs, group_size, groups,
                                                               z_scale, eps, 1.0f, vec, stream);
  }
  if (err != cudaSuccess) return err;
  JmHadamardQuantParams h{};
  h.x = workspace;
  h.y = static_cast<int8_t*>(out);
  h.rows = rows;
  h.n = d;
  h.dtype = JM_HADAMARD_FP32;
  h.out_scale = out_scale;
  return jm_hadamard_quant(&h, stream);
}

// Argument checks and type dispatch shared by jm_gated_rms_norm_quant (kQuant: int8 z and out) and
// jm_gated_rms_norm (z and out in y's dtype; the scales and hadamard unused).
template <bool kQuant>
cudaError_t gated_rms_norm_launch(const void* y, const void* z, const void* weight, void* out, int rows, int d,
                                  int group_size, int y_dtype, int weight_dtype, float z_scale, float eps,
                                  float out_scale, int hadamard, float* workspace, cudaStream_t stream) {
  const bool dtypes_ok = (y_dtype == JM_NORM_FP32 || y_dtype == JM_NORM_FP16) &&
                         (weight_dtype == JM_NORM_FP32 || weight_dtype == JM_NORM_FP16);
  if (y == nullptr || z == nullptr || weight == nullptr || out == nullptr || rows < 0 || d < 1 || group_size < 1 ||
      d % group_size != 0 || group_size > kMaxSegmentLength || !dtypes_ok || !finite_nonnegative(eps) ||
      (kQuant && (!finite_positive(z_scale) || !finite_positive(out_scale))) || (hadamard != 0 && hadamard != 1)) {
    return cudaErrorInvalidValue;
  }
  const long long segments = static_cast<long long>(rows) * (d / group_size);
  if (segments > kMaxSegments) return cudaErrorInvalidValue;
  if (hadamard == 1 && (!kQuant || workspace == nullptr || !jm_hadamard_order_supported(d))) {
    return cudaErrorInvalidValue;
  }
  if (rows == 0) return cudaSuccess;
  if constexpr (kQuant) {  // the fp variant never links HadamardQuant
    if (hadamard == 1) {
      return gated_norm_then_hadamard(y, z, weight, out, rows, d, group_size, y_dtype, weight_dtype, z_scale, eps,
                                      out_scale, workspace, stream);
    }
  }
  // the vector path's accesses: 16 bytes of y, kVec gate and output elements (16 bytes when fp,
  // kVec bytes when int8), kVec weights (16 bytes or more)
  const size_t kvec = y_dtype == JM_NORM_FP16 ? 8 : 4;
  const size_t z_out_align = kQuant ? kvec : 16;
  const bool vec = aligned(y, 16) && aligned(z, z_out_align) && aligned(out, z_out_align) && aligned(weight, 16);
  const int segs = static_cast<int>(segments);
  const int groups = d / group_size;
  const bool w16 = weight_dtype == JM_NORM_FP16;
  if (y_dtype == JM_NORM_FP16) {
    using Q = typename Select<kQuant, int8_t, __half>::type;
    return w16 ? launch_gated_norm<__half, __half, Q>(y, z, weight, out, segs, group_size, groups, z_scale, eps,
                                                      out_scale, vec, stream)
               : launch_gated_norm<__half, float, Q>(y, z, weight, out, segs, group_size, groups, z_scale, eps,
                                                     out_scale, vec, stream);
  }
  using Q = typename Select<kQuant, int8_t, float>::type;
  return w16 ? launch_gated_norm<float, __half, Q>(y, z, weight, out, segs, group_size, groups, z_scale, eps,
                                                   out_scale, vec, stream)
             : launch_gated_norm<float, float, Q>(y, z, weight, out, segs, group_size, groups, z_scale, eps, out_scale,
                                                  vec, stream);
}

}  // namespace jm_norm
