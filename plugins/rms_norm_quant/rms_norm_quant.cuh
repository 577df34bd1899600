// RMS normalisation of contiguous segments, the engine of the four norm kernels (RMSNormQuant,
// RMSNorm, GatedRMSNormQuant, GatedRMSNorm); and RMSNormQuant's / RMSNorm's element operation.
//
// A tensor [rows, d] is cut into `segments` contiguous segments of n channels (a row for RMSNorm,
// a group of a row for the gated norm, so segment s starts at s * n and uses weight[(s % groups)
// * n ...]). A *team* normalises one segment: one warp for short segments (several per block, no
// barrier), a whole block (up to 1024 threads) for long ones. Each thread
//   1. loads kVec-wide vectors of its segment (team-strided, so a warp's loads are coalesced),
//      computes the value to normalise (Op::input: the residual add, or y * silu(z)) and keeps it
//      in registers, accumulating the sum of squares in fp32;
//   2. the team reduces the sum (xor-butterfly shuffles, then 32 floats of shared memory across
//      warps; every lane ends with the same bits, so all use one inverse rms);
//   3. scales the cached values by the inverse rms and the weight and writes them (Op::output:
//      int8 quantised, or fp).
// The cache holds 16 floats per thread, i.e. 16 * 1024 = 16384 channels per segment on the
// vectorised path (8192 element by element); longer segments are still correct: the vectors past
// the cache are recomputed in step 3 (Op::reinput) instead of being held, at the cost of reading
// them twice.
//
// Alignment: the vectorised path moves kVec = 16 / sizeof(x element) channels per access (8 fp16,
// 4 fp32) and needs n % kVec == 0 and every tensor 16-byte aligned (int8 tensors kVec-byte
// aligned); the launchers check and otherwise take the element-by-element path (kVec = 1), which
// handles any n and any element-aligned pointers.
//
// Numerics follow the references (compiler/ops/reference.py, calibration/functional/norm.py):
// fp32 throughout, mean = sum / n, inverse rms = 1 / sqrt(mean + eps) as torch's CPU rsqrt computes
// it (a rounded sqrt, then a rounded division), value = weight * (v * inv), int8 =
// saturate(round_half_to_even(value / scale)) as ONNX QuantizeLinear. Only the summation order
// differs from torch's, so results agree to rounding.
// No IEEE division or sqrt instruction is used: nvcc expands those into a fast path plus a slow-path
// subroutine, and the call makes ptxas save the live register cache to the stack (spills). The
// divisions by n and by the scale use the reciprocal rounded on the host and one fma correction,
// which gives the correctly rounded quotient (Markstein); the square root and the reciprocal of the
// inverse rms start from the approximate instructions and are corrected by one fma step each,
// correctly rounded in all but about 3 of a million inputs (then one ulp apart).
#pragma once

#include "common/cuda_emu.h"
#include "rms_norm_quant/rms_norm_quant.h"

namespace jm_norm {

constexpr int kMaxBlock = 1024;       // threads of a block team: the launch bound allows 64 registers each
constexpr int kCacheFloats = 16;      // cached values per thread of a block team: spill-free in 64 registers
constexpr int kScalarCacheItems = 8;  // ... on the element-by-element path, whose separately addressed
                                      // accesses need more registers per cached value
constexpr int kWarpTeamBlock = 128;   // threads of a block of warp teams (four segments per block)
constexpr int kWarpTeamMaxVecs = 64;  // segments of at most this many vectors go to a warp team

// ---- element formats ------------------------------------------------------------------------------

// std::conditional without <type_traits> (NVRTC has no C++ standard library)
template <bool kFirst, typename A, typename B>
struct Select {
  using type = A;
};
template <typename A, typename B>
struct Select<false, A, B> {
  using type = B;
};

template <typename T>
struct Num;
template <>
struct Num<float> {
  static __device__ __forceinline__ float to_float(float v) { return v; }
  static __device__ __forceinline__ float from_float(float v) { return v; }
};
template <>
struct Num<__half> {
  static __device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
  static __device__ __forceinline__ __half from_float(float v) { return __float2half_rn(v); }
};

// N consecutive elements moved as one access: aligned to their size, capped at 16 bytes (the widest
// load sm_87 has; fp32 weights next to fp16 activations are 32 bytes and take two 16-byte loads).
template <typename T, int N>
struct alignas(sizeof(T) * N < 16 ? sizeof(T) * N : 16) Pack {
  T v[N];
};

template <typename T, int N>
__device__ __forceinline__ Pack<T, N> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T, N>*>(p);
}

template <typename T, int N>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, N>& v) {
  *reinterpret_cast<Pack<T, N>*>(p) = v;
}

template <typename T, int N>
__device__ __forceinline__ void load_floats(const T* p, float (&out)[N]) {
  const Pack<T, N> v = load_pack<T, N>(p);
#pragma unroll
  for (int j = 0; j < N; ++j) out[j] = Num<T>::to_float(v.v[j]);
}

// ---- division without the IEEE slow path ------------------------------------------------------------

// A divisor and its reciprocal rounded to nearest (by the host's IEEE division).
struct Divisor {
  float value;
  float inverse;
};

inline Divisor make_divisor(float value) { return Divisor{value, 1.0f / value}; }

// a / b correctly rounded, for a quotient that neither overflows nor underflows: q = a * (1/b) is
// within an ulp, the remainder a - q b is exact in an fma, and one correction step rounds correctly
// (Markstein's theorem, with 1/b rounded to nearest).
__device__ __forceinline__ float divide(float a, Divisor b) {
  const float q = a * b.inverse;
  return fmaf(fmaf(-q, b.value, a), b.inverse, q);
}

// 1 / sqrt(x) as torch's CPU rsqrt computes it, RN(1 / RN(sqrt(x))): the approximate rsqrtf and
// reciprocal, each corrected by one fma step (x = 0 gives NaN like torch's 0 * inf downstream).
__device__ __forceinline__ float inverse_sqrt(float x) {
  const float y = rsqrtf(x);
  const float s0 = x * y;
  const float s = fmaf(fmaf(-s0, s0, x), 0.5f * y, s0);  // sqrt(x)
  const float z = __fdividef(1.0f, s);
  return fmaf(z, fmaf(-s, z, 1.0f), z);  // 1 / s
}

// int8 = saturate(round_half_to_even(v / scale)). The first quotient is clamped to +-1024 so that the
// correction cannot meet inf (anything that far out saturates anyway; NaN still gives NaN). Then
// __float2int_rn rounds half to even (saturating to int32, so inf cannot wrap) and the clamp to int8;
// NaN gives 0.
__device__ __forceinline__ int8_t quantize(float v, Divisor scale) {
  const float q0 = fminf(fmaxf(v * scale.inverse, -1024.0f), 1024.0f);
  const float q = fmaf(fmaf(-q0, scale.value, v), scale.inverse, q0);
  const int i = __float2int_rn(q);
  return static_cast<int8_t>(i < -128 ? -128 : (i > 127 ? 127 : i));
}

// The output of a normalised vector: int8 (quantised with `scale`) or a float type (rounded to
// nearest even; `scale` unused).
template <typename TOut>
struct Store {
  template <int N>
  static __device__ __forceinline__ void write(TOut* p, const float (&v)[N], Divisor /*scale*/) {
    Pack<TOut, N> o;
#pragma unroll
    for (int j = 0; j < N; ++j) o.v[j] = Num<TOut>::from_float(v[j]);
    store_pack<TOut, N>(p, o);
  }
};
template <>
struct Store<int8_t> {
  template <int N>
  static __device__ __forceinline__ void write(int8_t* p, const float (&v)[N], Divisor scale) {
    Pack<int8_t, N> o;
#pragma unroll
    for (int j = 0; j < N; ++j) o.v[j] = quantize(v[j], scale);
    store_pack<int8_t, N>(p, o);
  }
};

// weight * (v * inv) in this order, as the reference multiplies the normalised value by the weight
template <typename TW, typename TOut, int N>
__device__ __forceinline__ void scale_and_store(const TW* weight, TOut* out, const float (&v)[N], float inv,
                                                Divisor out_scale) {
  float w[N];
  load_floats<TW, N>(weight, w);
  float o[N];
#pragma unroll
  for (int j = 0; j < N; ++j) o[j] = w[j] * (v[j] * inv);
  Store<TOut>::template write<N>(out, o, out_scale);
}

// ---- reductions -------------------------------------------------------------------------------------

// Butterfly: every lane ends with the same sum (each step adds the same two values in either order).
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
  return v;
}

// Sum over a block whose size is a multiple of 32: warp sums, one barrier, then every warp sums
// the per-warp partials itself (no second barrier to broadcast the total).
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float partial[32];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  v = warp_sum(v);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  const int warps = blockDim.x >> 5;
  return warp_sum(lane < warps ? partial[lane] : 0.0f);
}

// ---- the kernel ---------------------------------------------------------------------------------------

// Op: the element operation, a trivially copyable struct passed by value (pointers and scales):
//   input<V>(offset, v)   -> v = the V values at element `offset` to normalise (may write outputs)
//   reinput<V>(offset, v) -> the same values again, without side effects (segments past the cache)
//   output<V>(offset, weight_offset, v, inv) -> write weight * (v * inv)
// kVec: elements per access (1 where the tensors are not aligned for more); kWarpTeam: one warp per
// segment (else one block); n % kVec == 0.
template <class Op, int kVec, bool kWarpTeam>
__global__ void __launch_bounds__(kWarpTeam ? kWarpTeamBlock : kMaxBlock)
    segment_norm_kernel(const Op op, int segments, Divisor n, int groups, float eps) {
  // cached vectors per thread; a warp team caches its whole segment (at most kWarpTeamMaxVecs vectors)
  constexpr int kItems = kWarpTeam ? kWarpTeamMaxVecs / 32 : (kVec == 1 ? kScalarCacheItems : kCacheFloats / kVec);
  // 32-bit segment arithmetic: a 64-bit modulo is a subroutine call, which costs spills
  int seg, tid, team;
  if (kWarpTeam) {
    seg = blockIdx.x * (kWarpTeamBlock / 32) + (threadIdx.x >> 5);
    tid = threadIdx.x & 31;
    team = 32;
    if (seg >= segments) return;  // whole warps leave together: no collective is left waiting
  } else {
    seg = blockIdx.x;
    tid = threadIdx.x;
    team = blockDim.x;
  }
  const int len = static_cast<int>(n.value);  // exact: n <= 2^24 is checked by the launchers
  const int nvec = len / kVec;
  const size_t base = static_cast<size_t>(seg) * static_cast<size_t>(len);
  const size_t wbase = static_cast<size_t>(seg % groups) * static_cast<size_t>(len);

  float cache[kItems][kVec];
  float ss = 0.0f;
#pragma unroll
  for (int it = 0; it < kItems; ++it) {
    const int v = tid + it * team;
    if (v < nvec) {
      op.template input<kVec>(base + static_cast<size_t>(v) * kVec, cache[it]);
#pragma unroll
      for (int j = 0; j < kVec; ++j) ss += cache[it][j] * cache[it][j];
    }
  }
  for (int v = tid + kItems * team; !kWarpTeam && v < nvec; v += team) {  // past the cache: long segments only
    float t[kVec];
    op.template input<kVec>(base + static_cast<size_t>(v) * kVec, t);
#pragma unroll
    for (int j = 0; j < kVec; ++j) ss += t[j] * t[j];
  }

  ss = kWarpTeam ? warp_sum(ss) : block_sum(ss);
  const float inv = inverse_sqrt(divide(ss, n) + eps);

#pragma unroll
  for (int it = 0; it < kItems; ++it) {
    const int v = tid + it * team;
    if (v < nvec) {
      op.template output<kVec>(base + static_cast<size_t>(v) * kVec, wbase + static_cast<size_t>(v) * kVec, cache[it],
                               inv);
    }
  }
  for (int v = tid + kItems * team; !kWarpTeam && v < nvec; v += team) {
    float t[kVec];
    op.template reinput<kVec>(base + static_cast<size_t>(v) * kVec, t);
    op.template output<kVec>(base + static_cast<size_t>(v) * kVec, wbase + static_cast<size_t>(v) * kVec, t, inv);
  }
}

// ---- launching -------------------------------------------------------------------------------------------

// Threads of a block team for a segment of nvec vectors: about two vectors per thread (two
// independent loads in flight each), a multiple of 32, at most kMaxBlock.
inline int block_team_threads(int nvec) {
  const int want = (nvec + 1) / 2;
  const int threads = (want + 31) / 32 * 32;
  return threads < kMaxBlock ? threads : kMaxBlock;
}

template <class Op, int kVec>
cudaError_t launch_segments(const Op& op, int segments, int n, int groups, float eps, cudaStream_t stream) {
  const int nvec = n / kVec;
  const Divisor len = make_divisor(static_cast<float>(n));
  if (nvec <= kWarpTeamMaxVecs) {
    const int blocks = (segments + kWarpTeamBlock / 32 - 1) / (kWarpTeamBlock / 32);
    JM_LAUNCH(blocks, kWarpTeamBlock, 0, stream, segment_norm_kernel<Op, kVec, true>)(op, segments, len, groups, eps);
  } else {
    JM_LAUNCH(segments, block_team_threads(nvec), 0, stream, segment_norm_kernel<Op, kVec, false>)(op, segments, len,
                                                                                                  groups, eps);
  }
  return cudaGetLastError();
}

// Limits the launchers check: segments per launch (gridDim.x's limit, and 32-bit segment indices
// in the kernel), and channels per segment (exact as a float divisor).
constexpr long long kMaxSegments = 2147483647LL - 3;
constexpr int kMaxSegmentLength = 1 << 24;

inline bool aligned(const void* p, size_t bytes) {
  return p == nullptr || reinterpret_cast<size_t>(p) % bytes == 0;
}

inline bool finite_nonnegative(float v) { return v >= 0.0f && v <= 3.402823466e38f; }  // false for NaN
inline bool finite_positive(float v) { return v > 0.0f && v <= 3.402823466e38f; }

// Launch Op over `segments` segments of n channels: the vectorised kernel where n is a multiple of
// Op::kVec and every tensor is aligned to its vector access (vector_ok), else element by element.
template <class Op>
cudaError_t launch(const Op& op, bool vector_ok, int segments, int n, int groups, float eps, cudaStream_t stream) {
  if (vector_ok && n % Op::kVec == 0) return launch_segments<Op, Op::kVec>(op, segments, n, groups, eps, stream);
  return launch_segments<Op, 1>(op, segments, n, groups, eps, stream);
}

// ---- RMSNormQuant / RMSNorm ----------------------------------------------------------------------------

// r = x + residual in fp32, stored in TX (residual_out); the normalised value is the stored r.
template <typename TX, typename TW, typename TOut>
struct ResidualRmsNormOp {
  static constexpr int kVec = 16 / sizeof(TX);  // one 16-byte access of x

  const TX* x;
  const TX* residual;  // or nullptr
  const TW* weight;
  TOut* y;
  TX* residual_out;
  Divisor out_scale;  // int8 output only

  template <int V>
  __device__ __forceinline__ void input(size_t off, float (&r)[V]) const {
    Pack<TX, V> rv = load_pack<TX, V>(x + off);
    if (residual != nullptr) {
      const Pack<TX, V> res = load_pack<TX, V>(residual + off);
#pragma unroll
      for (int j = 0; j < V; ++j) {
        rv.v[j] = Num<TX>::from_float(Num<TX>::to_float(rv.v[j]) + Num<TX>::to_float(res.v[j]));
      }
    }
    store_pack<TX, V>(residual_out + off, rv);
#pragma unroll
    for (int j = 0; j < V; ++j) r[j] = Num<TX>::to_float(rv.v[j]);
  }

  template <int V>
  __device__ __forceinline__ void reinput(size_t off, float (&r)[V]) const {
    load_floats<TX, V>(residual_out + off, r);  // this thread stored it in step 1
  }

  template <int V>
  __device__ __forceinline__ void output(size_t off, size_t woff, const float (&r)[V], float inv) const {
    scale_and_store<TW, TOut, V>(weight + woff, y + off, r, inv, out_scale);
  }
};

template <typename TX, typename TW, typename TOut>
cudaError_t launch_residual_norm(const void* x, const void* residual, const void* weight, void* y, void* residual_out,
                                 int rows, int d, float eps, float out_scale, bool vec, cudaStream_t stream) {
  const ResidualRmsNormOp<TX, TW, TOut> op{static_cast<const TX*>(x),      static_cast<const TX*>(residual),
                                           static_cast<const TW*>(weight), static_cast<TOut*>(y),
                                           static_cast<TX*>(residual_out), make_divisor(out_scale)};
  return launch(op, vec, rows, d, 1, eps, stream);
}

// Argument checks and type dispatch shared by jm_rms_norm_quant (kQuant: int8 y) and jm_rms_norm
// (y in x's dtype; out_scale unused).
template <bool kQuant>
cudaError_t rms_norm_launch(const void* x, const void* residual, const void* weight, void* y, void* residual_out,
                            int rows, int d, int x_dtype, int weight_dtype, float eps, float out_scale,
                            cudaStream_t stream) {
  const bool dtypes_ok = (x_dtype == JM_NORM_FP32 || x_dtype == JM_NORM_FP16) &&
                         (weight_dtype == JM_NORM_FP32 || weight_dtype == JM_NORM_FP16);
  if (x == nullptr || weight == nullptr || y == nullptr || residual_out == nullptr || rows < 0 || d < 1 ||
      d > kMaxSegmentLength || !dtypes_ok || !finite_nonnegative(eps) || (kQuant && !finite_positive(out_scale)) ||
      rows > kMaxSegments) {
    return cudaErrorInvalidValue;
  }
  if (rows == 0) return cudaSuccess;
  // the vector path's accesses: 16 bytes of x / residual / r, kVec weights (16 bytes or more), kVec
  // outputs (16 bytes, or kVec bytes of int8)
  const size_t kvec = x_dtype == JM_NORM_FP16 ? 8 : 4;
  const bool vec = aligned(x, 16) && aligned(residual, 16) && aligned(residual_out, 16) && aligned(weight, 16) &&
                   aligned(y, kQuant ? kvec : 16);
  const bool w16 = weight_dtype == JM_NORM_FP16;
  if (x_dtype == JM_NORM_FP16) {
    using Out = typename Select<kQuant, int8_t, __half>::type;
    return w16 ? launch_residual_norm<__half, __half, Out>(x, residual, weight, y, residual_out, rows, d, eps,
                                                           out_scale, vec, stream)
               : launch_residual_norm<__half, float, Out>(x, residual, weight, y, residual_out, rows, d, eps,
                                                          out_scale, vec, stream);
  }
  using Out = typename Select<kQuant, int8_t, float>::type;
  return w16 ? launch_residual_norm<float, __half, Out>(x, residual, weight, y, residual_out, rows, d, eps, out_scale,
                                                        vec, stream)
             : launch_residual_norm<float, float, Out>(x, residual, weight, y, residual_out, rows, d, eps, out_scale,
                                                       vec, stream);
}

}  // namespace jm_norm
