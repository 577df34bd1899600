// jetmamba::HadamardQuant: y = Q(x H^T / sqrt(n), out_scale) over the last axis, one thread block
// per row (several rows per block for small n). See README.md in this folder.
//
// H = H_m (x) H_2 (x) ... (x) H_2 (n = m * p, p = 2^k, m in {1, 12, 20, 28}), as
// jetmamba.calibration.hadamard defines it: element i = a * p + b (a < m, b < p). The transform
// runs in the reference's order, so that its rounding is the reference's:
//   1. the Walsh-Hadamard transform over b, stages h = 1, 2, 4, ... (butterflies (u + v, u - v)),
//      in threads, then across the lanes of a warp (shuffles), then across warps (an exchange
//      through shared memory turns warp bits into register indices, then back);
//   2. the dense m x m block across a, in registers (its +-1 signs are compile-time constants);
//   3. two correctly rounded divisions, by sqrt(n) then by out_scale, round half to even,
//      saturation to [-128, 127].
// Step 1 adds the same pairs in the same order as the reference, so for m = 1 the result is
// bit-identical to it; step 2 sums in a fixed order that may differ from torch's einsum (a +-1 on
// the rare value that sits on a rounding tie).
#pragma once

#include <stdint.h>

#include "common/cuda_emu.h"

namespace jm_hadamard {

// ---------------------------------------------------------------------------------------------
// The base blocks, constructed (Paley), evaluated by the C++ front end: an entry is a constant
// expression, so the dense block compiles to adds and subtracts, with no table anywhere.

// Legendre symbol (a / q) for an odd prime q, by Euler's criterion: a^((q - 1) / 2) mod q.
__host__ __device__ constexpr int legendre(int a, int q) {
  a %= q;
  if (a < 0) a += q;
  if (a == 0) return 0;
  int r = 1;
  for (int i = 0; i < (q - 1) / 2; ++i) r = r * a % q;
  return r == 1 ? 1 : -1;
}

// Paley I, order q + 1 for a prime q = 3 (mod 4): H = I + S, S = [[0, 1^T], [-1, Q]] with the
// Jacobsthal matrix Q[i][j] = ((j - i) / q).
__host__ __device__ constexpr int paley1(int q, int r, int c) {
  return r == c ? 1 : r == 0 ? 1 : c == 0 ? -1 : legendre(c - r, q);
}

// Paley II, order 2 (q + 1) for a prime q = 1 (mod 4): the symmetric conference matrix
// C = [[0, 1^T], [1, Q]], H = C (x) [[1, -1], [-1, -1]] + I (x) [[1, 1], [1, -1]].
__host__ __device__ constexpr int paley2(int q, int r, int c) {
  const int i = r / 2, a = r % 2, j = c / 2, b = c % 2;
  if (i == j) return a == 1 && b == 1 ? -1 : 1;  // C[i][i] = 0: only the identity's term
  const int cij = i == 0 || j == 0 ? 1 : legendre(j - i, q);
  return a == 0 && b == 0 ? cij : -cij;
}

// H_m[r][c] for the base orders (calibration/hadamard.py _base: 12 = Paley I of 11, 20 = Paley I
// of 19, 28 = Paley II of 13).
__host__ __device__ constexpr int base_sign(int m, int r, int c) {
  return m == 12 ? paley1(11, r, c) : m == 20 ? paley1(19, r, c) : m == 28 ? paley2(13, r, c) : 1;
}

// H_m H_m^T = m I, checked by the compiler for every order a kernel is instantiated with.
__host__ __device__ constexpr bool is_hadamard(int m) {
  for (int r = 0; r < m; ++r)
    for (int s = 0; s < m; ++s) {
      int dot = 0;
      for (int c = 0; c < m; ++c) dot += base_sign(m, r, c) * base_sign(m, s, c);
      if (dot != (r == s ? m : 0)) return false;
    }
  return true;
}

// Compile-time index lists (NVRTC has no <utility>): Ints<0, 1, ..., N - 1> = MakeInts<N>::type.
template <int... I>
struct Ints {};
template <int N, int... I>
struct MakeInts : MakeInts<N - 1, N - 1, I...> {};
template <int... I>
struct MakeInts<0, I...> {
  using type = Ints<I...>;
};
template <int V>
struct Const {
  static constexpr int value = V;
};

// Row r of H_m times col, summed in column order. acc starts at -0.0f: -0 + v is v for every v
// (+0 would turn -0 into +0), so the first term costs nothing.
template <int M, int R, int... C>
__device__ __forceinline__ float base_row(const float (&col)[M], Ints<C...>) {
  float acc = -0.0f;
  ((acc = Const<base_sign(M, R, C)>::value > 0 ? acc + col[C] : acc - col[C]), ...);
  return acc;
}

template <int M, int... R>
__device__ __forceinline__ void apply_base(float (&col)[M], Ints<R...>) {
  const float out[M] = {base_row<M, R>(col, typename MakeInts<M>::type{})...};
#pragma unroll
  for (int r = 0; r < M; ++r) col[r] = out[r];
}

// ---------------------------------------------------------------------------------------------
// the largest divisor of k not above cap (at least 1)
__host__ __device__ constexpr int largest_divisor(int k, int cap) {
  int best = 1;
  for (int d = 1; d <= k; ++d)
    if (k % d == 0 && d <= cap) best = d;
  return best;
}

// Elements per thread and base row (kE below). More in-thread stages are cheaper than the warp
// exchange (a shared-memory round trip per element, each way), so a row stays within one warp
// while its m kE floats fit in registers: kE up to 32 for m = 1 (8 for the small rows: 16-byte
// fp16 loads), 4 for m = 12 and 20, 2 for m = 28. A larger row needs the exchange anyway; it then takes
// the smallest kE for which at most 16 warps cover it and the warps divide the m kE slots, which
// keeps register pressure low (ptxas 12.6 spilled at 96 registers with kE = 4 for 12 x 256).
__host__ __device__ constexpr int elems_per_thread(int m, int p) {
  const int max_e = m == 1 ? 32 : m == 28 ? 2 : 4;
  if (m == 1 && p <= 256) return p < 8 ? p : 8;
  if (p <= 32 * max_e) return p < 32 ? 1 : p / 32;
  int e = 1;
  while (p / (32 * e) > 16 || (m * e) % (p / (32 * e)) != 0) e *= 2;
  return e;
}

// How a row is spread over a block. A thread holds kE consecutive elements b of each of the m
// base-block rows a (register v[a * kE + e]), so the dense m x m block never leaves the thread.
// b = (warp * kLanes + lane) * kE + e: stages h < kE are in-thread, h < 32 kE shuffles, the rest
// (kWarps > 1) go through the shared-memory exchange, which needs kWarps to divide m kE.
template <int M, int LOG2P>
struct Shape {
  static constexpr int kM = M;
  static constexpr int kP = 1 << LOG2P;
  static constexpr int kN = M * kP;
  static constexpr int kE = elems_per_thread(M, kP);
  static constexpr int kLanes = kP / kE < 32 ? kP / kE : 32;  // threads per row within a warp
  static constexpr int kWarps = kP / (kE * kLanes);             // warps per row
  static constexpr int kValues = M * kE;                        // floats per thread
  // small orders pack rows into 128-thread blocks; a row that needs warps has its own block
  static constexpr int kRowsPerBlock = kWarps == 1 ? 128 / kLanes : 1;
  static constexpr int kThreads = kLanes * kWarps * kRowsPerBlock;
  // the exchange: register slot j = c * kK + k goes to warp c (kWarps classes of kK slots); a round
  // moves kKPerRound slot indices k (32 kWarps^2 floats each), at most 16 KB unless one needs more
  static constexpr int kK = kValues / kWarps;
  static constexpr int kSlotFloats = 32 * kWarps * kWarps;
  static constexpr int kKPerRound = largest_divisor(kK, 4096 / kSlotFloats > 0 ? 4096 / kSlotFloats : 1);
  static constexpr int kSharedBytes = kWarps > 1 ? kKPerRound * kSlotFloats * 4 : 0;

  static_assert(M == 1 || M == 12 || M == 20 || M == 28, "base orders are 1, 12, 20, 28");
  static_assert(is_hadamard(M), "the Paley construction must give H H^T = m I");
  static_assert(kE * kLanes * kWarps == kP, "the threads must cover the row");
  static_assert(kWarps == 1 || kLanes == 32, "a row spans whole warps or part of one");
  static_assert(kValues % kWarps == 0, "the exchange gives each warp the same number of slots");
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "whole warps: the shuffles use the full mask");
  static_assert(kSharedBytes <= 48 * 1024, "static shared memory: no opt-in above 48 KB");
};

// (u, v) <- (u + v, u - v): the reference's butterfly, u the lower index.
__device__ __forceinline__ void butterfly(float& u, float& v) {
  const float s = u + v;
  v = u - v;
  u = s;
}

// The stages across warps: warp bits and slot classes trade places through shared memory (thread
// (w, l) slot c K + k <-> thread (c, l) slot w K + k), in rounds of KR slot indices k. The same
// call swaps back. Lanes write and read consecutive words: no bank conflicts.
template <int W, int K, int KR>
__device__ __forceinline__ void exchange_warps(float (&v)[W * K], int warp, int lane) {
  __shared__ float buffer[KR * W * W * 32];
#pragma unroll
  for (int k0 = 0; k0 < K; k0 += KR) {
#pragma unroll
    for (int kk = 0; kk < KR; ++kk)
#pragma unroll
      for (int c = 0; c < W; ++c) buffer[((kk * W + c) * W + warp) * 32 + lane] = v[c * K + k0 + kk];
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < KR; ++kk)
#pragma unroll
      for (int w = 0; w < W; ++w) v[w * K + k0 + kk] = buffer[((kk * W + warp) * W + w) * 32 + lane];
    __syncthreads();  // the buffer is written again by the next round (or row)
  }
}

// ---------------------------------------------------------------------------------------------
// Loads and stores of kE consecutive elements: 4-, 8- or 16-byte accesses when the tensors are
// 16-byte aligned (every run then is, as kE divides the row length), element by element if not.

template <int kBytes>
__device__ __forceinline__ void load_words(const void* p, unsigned (&w)[kBytes / 4]) {
  if constexpr (kBytes == 16) {
    const uint4 u = *static_cast<const uint4*>(p);
    w[0] = u.x, w[1] = u.y, w[2] = u.z, w[3] = u.w;
  } else if constexpr (kBytes == 8) {
    const uint2 u = *static_cast<const uint2*>(p);
    w[0] = u.x, w[1] = u.y;
  } else {
    static_assert(kBytes == 4, "4, 8 or 16 bytes");
    w[0] = *static_cast<const unsigned*>(p);
  }
}

template <typename T>
struct Input;
template <>
struct Input<float> {
  static __device__ __forceinline__ float value(float v) { return v; }
  static __device__ __forceinline__ float unpack(unsigned w, int) { return __uint_as_float(w); }
};
template <>
struct Input<__half> {
  static __device__ __forceinline__ float value(__half v) { return __half2float(v); }
  static __device__ __forceinline__ float unpack(unsigned w, int i) {  // i-th half of a word, little-endian
    return __half2float(__ushort_as_half(static_cast<unsigned short>(w >> (16 * i))));
  }
};

template <typename T, int E>
__device__ __forceinline__ void load_run(const T* src, float* dst, bool vectorized) {
  constexpr int kBytes = E * static_cast<int>(sizeof(T));
  if constexpr (kBytes >= 4) {
    if (vectorized) {
      constexpr int kChunk = kBytes < 16 ? kBytes : 16;
      constexpr int kPerWord = 4 / static_cast<int>(sizeof(T));
#pragma unroll
      for (int c = 0; c < kBytes / kChunk; ++c) {
        unsigned w[kChunk / 4];
        load_words<kChunk>(reinterpret_cast<const char*>(src) + c * kChunk, w);
#pragma unroll
        for (int i = 0; i < kChunk / 4; ++i)
#pragma unroll
          for (int h = 0; h < kPerWord; ++h) dst[(c * (kChunk / 4) + i) * kPerWord + h] = Input<T>::unpack(w[i], h);
      }
      return;
    }
  }
#pragma unroll
  for (int e = 0; e < E; ++e) dst[e] = Input<T>::value(src[e]);
}

// The low bytes of words (the Quantizer's codes), q[0] at the lowest address, little-endian.
__device__ __forceinline__ unsigned pack2(const unsigned* q) { return __byte_perm(q[0], q[1], 0x0040); }
__device__ __forceinline__ unsigned pack4(const unsigned* q) { return __byte_perm(pack2(q), pack2(q + 2), 0x5410); }

template <int E>
__device__ __forceinline__ void store_run(int8_t* dst, const unsigned* q, bool vectorized) {
  if constexpr (E >= 2) {
    if (vectorized) {
      constexpr int kChunk = E < 16 ? E : 16;
#pragma unroll
      for (int c = 0; c < E / kChunk; ++c) {
        void* p = dst + c * kChunk;
        const unsigned* s = q + c * kChunk;
        if constexpr (kChunk == 16) {
          *static_cast<uint4*>(p) = make_uint4(pack4(s), pack4(s + 4), pack4(s + 8), pack4(s + 12));
        } else if constexpr (kChunk == 8) {
          *static_cast<uint2*>(p) = make_uint2(pack4(s), pack4(s + 4));
        } else if constexpr (kChunk == 4) {
          *static_cast<unsigned*>(p) = pack4(s);
        } else {
          *static_cast<unsigned short*>(p) = static_cast<unsigned short>(pack2(s));
        }
      }
      return;
    }
  }
#pragma unroll
  for (int e = 0; e < E; ++e) dst[e] = static_cast<int8_t>(static_cast<signed char>(q[e] & 0xffu));
}

// v / d rounded to nearest, from r = RN(1 / d): q = RN(v r) is within an ulp of v / d, and one
// correction with the exact residual v - d q (an FMA) gives RN(v / d) (Markstein's theorem), as
// div.rn's own fast path does, in 3 instructions instead of a dozen and a branch. Exact unless v
// is below 2^-102 (the residual underflows); such a v gives a nonzero code only for
// out_scale < 2^-100. Checked against division for every fp32 mantissa and the divisors sqrt(n).
__device__ __forceinline__ float divide(float v, float d, float r) {
  const float q = __fmul_rn(v, r);
  return __fmaf_rn(__fmaf_rn(-d, q, v), r, q);
}

// The reference's two roundings: (x H^T) / sqrt(n), then QuantizeLinear's / out_scale, round half
// to even, saturate. Values beyond the bound (256 codes) saturate either way; clamping them first
// keeps the quotients finite (an overflowed or infinite v saturates instead of becoming NaN).
// The result is the code as the low byte of a word: with t saturated to [-128, 127] first, the
// sum t + 1.5 * 2^23 is rounded to an integer, half to even, as __float2int_rn rounds, and that
// integer sits in the low bits of the sum (0x4B400000 + code): one FP32 add instead of a
// conversion (a quarter of the FP32 rate) and integer clamps.
struct Quantizer {
  float norm, norm_rcp, scale, scale_rcp, bound;

  // a factory, not a constructor: nvcc's host pass keeps a __device__ constructor's initialisers
  static __device__ __forceinline__ Quantizer make(int n, float out_scale) {
    Quantizer q;
    q.norm = __fsqrt_rn(static_cast<float>(n));  // = float(math.sqrt(n)): sqrt rounds once either way
    q.norm_rcp = __frcp_rn(q.norm);
    q.scale = out_scale;
    q.scale_rcp = __frcp_rn(out_scale);
    q.bound = fminf(__fmul_rn(__fmul_rn(256.0f, q.norm), out_scale), 3.402823466e38f);
    return q;
  }

  __device__ __forceinline__ unsigned operator()(float v) const {
    v = fminf(fmaxf(v, -bound), bound);
    const float t = divide(divide(v, norm, norm_rcp), scale, scale_rcp);
    return __float_as_uint(__fadd_rn(fminf(fmaxf(t, -128.0f), 127.0f), 12582912.0f));
  }
};

// ---------------------------------------------------------------------------------------------
// The kernel: block (kLanes * kWarps, kRowsPerBlock); grid-stride over groups of kRowsPerBlock
// rows. x: [rows, n] fp16 or fp32; y: [rows, n] int8.
template <typename T, int M, int LOG2P>
__global__ void __launch_bounds__(Shape<M, LOG2P>::kThreads)
    hadamard_quant_kernel(const T* __restrict__ x, int8_t* __restrict__ y, long long rows, float out_scale,
                          int vectorized) {
  using S = Shape<M, LOG2P>;
  constexpr int E = S::kE, L = S::kLanes, W = S::kWarps, P = S::kP, N = S::kN, V = S::kValues;
  const int t = threadIdx.x;  // thread of the row: lane t % 32 of warp t / 32 (or t < L of a shared warp)
  const bool vec = vectorized != 0;
  const Quantizer quantize = Quantizer::make(N, out_scale);
  const long long groups = (rows + S::kRowsPerBlock - 1) / S::kRowsPerBlock;

  for (long long g = blockIdx.x; g < groups; g += gridDim.x) {  // uniform over the block: barriers are safe
    const long long row = g * S::kRowsPerBlock + threadIdx.y;
    const bool live = row < rows;  // padding rows of the last group still take part in the shuffles
    const long long first = row * N + static_cast<long long>(t) * E;  // element (a = 0, e = 0)

    float v[V];
#pragma unroll
    for (int a = 0; a < M; ++a) {
      if (live) {
        load_run<T, E>(x + first + a * P, v + a * E, vec);
      } else {
#pragma unroll
        for (int e = 0; e < E; ++e) v[a * E + e] = 0.0f;
      }
    }

    // 1. Walsh-Hadamard over b, h = 1, 2, 4, ...: in-thread stages
#pragma unroll
    for (int h = 1; h < E; h <<= 1)
#pragma unroll
      for (int a = 0; a < M; ++a)
#pragma unroll
        for (int e = 0; e < E; ++e)
          if ((e & h) == 0) butterfly(v[a * E + e], v[a * E + e + h]);

    // ... across lanes: the partner differs in lane bit d; the lower lane keeps own + partner, the
    // upper one partner - own: one FMA with a +-1 factor (exact product, one rounding, as u +- v)
#pragma unroll
    for (int d = 1; d < L; d <<= 1) {
      const float sign = (t & d) != 0 ? -1.0f : 1.0f;
#pragma unroll
      for (int j = 0; j < V; ++j) v[j] = __fmaf_rn(sign, v[j], __shfl_xor_sync(0xffffffffu, v[j], d));
    }

    // ... across warps: exchange, stages over the slot-class bits (= warp bits), exchange back
    if constexpr (W > 1) {
      constexpr int K = S::kK;
      exchange_warps<W, K, S::kKPerRound>(v, t >> 5, t & 31);
#pragma unroll
      for (int bit = 1; bit < W; bit <<= 1)
#pragma unroll
        for (int w = 0; w < W; ++w)
          if ((w & bit) == 0)
#pragma unroll
            for (int k = 0; k < K; ++k) butterfly(v[w * K + k], v[(w | bit) * K + k]);
      exchange_warps<W, K, S::kKPerRound>(v, t >> 5, t & 31);
    }

    // 2. the base block across a, per element e
    if constexpr (M > 1) {
#pragma unroll
      for (int e = 0; e < E; ++e) {
        float col[M];
#pragma unroll
        for (int a = 0; a < M; ++a) col[a] = v[a * E + e];
        apply_base<M>(col, typename MakeInts<M>::type{});
#pragma unroll
        for (int a = 0; a < M; ++a) v[a * E + e] = col[a];
      }
    }

    // 3. normalise, quantise, store
    if (live) {
#pragma unroll
      for (int a = 0; a < M; ++a) {
        unsigned q[E];
#pragma unroll
        for (int e = 0; e < E; ++e) q[e] = quantize(v[a * E + e]);
        store_run<E>(y + first + a * P, q, vec);
      }
    }
  }
}

}  // namespace jm_hadamard
