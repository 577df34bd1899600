// Mamba1 selective scan kernels: jetmamba::SelectiveScan (int8 u, dt, B, C, z with per-tensor scales)
// and jetmamba::SelectiveScanFp (fp16 / fp32 inputs) share these templates.
//
//   dt' = softplus(DQ(dt) + dt_bias)                        (torch's softplus: x above 20 as is)
//   h   = exp(dt' A) * h + dt' DQ(u) DQ(B)                  per channel c and state s
//   y   = (sum_s h DQ(C) + D DQ(u)) * DQ(z) * sigmoid(g DQ(z))   g = gate_smooth[c], or 1 (SiLU)
//
// fp32 maths; the state is read in its dtype (fp16 / fp32 / int8), carried in fp32 registers for
// the whole call and rounded to its dtype once, at the end. An int8 state has a dynamic scale per
// (batch row, channel), state_scale [b, d] fp32: dequantized on load (code * scale), and at the end
// scale = max_s |h| / 127 over the channel's n states, codes = rn(h / scale) clamped to +-127; a
// channel whose states are all zero (or whose scale underflows to 0) stores scale 0 and codes 0,
// which dequantize to the zero state (so a fresh sequence's all-zero state and scale just work). Layouts (time-major, as the op spec):
// u, dt, z, y [b, l, d]; B, C [b, l, n]; A [d, n]; D, dt_bias, gate_smooth [d]; state [b, d, n].
//
// Two kernels, chosen by the launcher from seqlen:
// - prefill (l > 1): a block of kPrefillThreads threads owns a run of channels of one batch row;
//   each channel's n states are split over n / 16 consecutive lanes holding 16 states each in
//   registers, and the time loop runs sequentially in registers. The sequence is walked in chunks:
//   the block stages a chunk of u, dt, z (its channels, raw dtype) and of B, C (dequantized to
//   fp32, shared by every channel of the row) in shared memory with 16-byte loads where the
//   addresses allow, then every thread scans the chunk from shared memory. y is written per step
//   (a warp writes consecutive channels: coalesced).
// - decode (l == 1): memory-bound by design. Each thread owns 8 consecutive states of a channel:
//   16 contiguous bytes of an fp16 state (32 of an fp32 one, and of A; 8 of an int8 one, plus the
//   channel's scale, one word all its lanes read), so a warp reads and writes one contiguous span;
//   every byte of state, A and the inputs is read once and the state written once. y (and an int8
//   state's max |h|) is reduced over a channel's lanes with shuffles.
//
// Templates over In (int8_t with scales, __half, float: u, dt, B, C, z), State (__half, float,
// int8_t with per-channel scales) and Out (__half, float: y). Supported n: 16, 32, 64, 128, a
// runtime value (lanes per channel = n / 16 in prefill, n / 8 in decode), so the instantiations do
// not depend on n. The gate factor is a
// per-channel runtime value (1 for SiLU): S-SiLU with g = 1 is bit-identical to SiLU, so a template
// parameter would only double the instantiations for one multiply per (t, c).
//
// In-place state (state_out == state_in) is safe in both kernels: each thread reads its own state
// elements before it writes them and no other thread touches them (the state is read with plain
// loads, not the read-only path, for that reason). An int8 state's scale is read by every lane of
// the channel and written by its first lane, after the max shuffle that every lane enters with its
// dequantized (hence already loaded) states: in place too.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "common/cuda_emu.h"

namespace jm_scan {

constexpr int kPrefillThreads = 64;  // small blocks: Mamba-130m's d = 1536 makes 24, 3 per Orin SM
constexpr int kPrefillStates = 16;   // states per thread in prefill (Mamba1's n: one lane per channel)
constexpr int kDecodeThreads = 128;
constexpr int kDecodeStates = 8;      // 16 bytes of an fp16 state per thread: one vector load and store
constexpr int kMaxChunk = 64;         // time steps staged per chunk, at most
constexpr int kPrefillSmemBudget = 20 * 1024;  // bytes per block: 8 blocks (16 warps) per Orin SM
// Shared memory already limits an Orin SM to 8 prefill blocks, so ptxas may spend the registers of
// that occupancy (65536 / (8 * 64) = 128 per thread) on keeping a step's shared-memory reads and
// exponentials in flight; without the bound it picks its own, lower target for an occupancy the
// shared memory does not allow (an earlier version of the loop spilled on sm_110 that way).
constexpr int kPrefillMinBlocks = 8;
constexpr float kLog2e = 1.4426950408889634f;

// ---- element codecs -------------------------------------------------------------------------------
// One 32-bit word holds kPerWord elements; word_elem decodes element k of a word (little-endian,
// as the GPU lays vectors out), so 16-byte vector loads need no type punning through memory.
template <class T>
struct Elem;

template <>
struct Elem<int8_t> {
  static constexpr bool kQuantized = true;
  static constexpr int kPerWord = 4;
  static __device__ __forceinline__ float to_float(int8_t v) { return static_cast<float>(v); }
  static __device__ __forceinline__ float word_elem(uint32_t w, int k) {
    return static_cast<float>(static_cast<int8_t>(w >> (8 * k)));
  }
};

template <>
struct Elem<__half> {
  static constexpr bool kQuantized = false;
  static constexpr int kPerWord = 2;
  static __device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
  static __device__ __forceinline__ float word_elem(uint32_t w, int k) {
    return __half2float(__ushort_as_half(static_cast<unsigned short>(w >> (16 * k))));
  }
  static __device__ __forceinline__ __half from_float(float v) { return __float2half_rn(v); }
  static __device__ __forceinline__ uint32_t bits(float v) { return __half_as_ushort(__float2half_rn(v)); }
};

template <>
struct Elem<float> {
  static constexpr bool kQuantized = false;
  static constexpr int kPerWord = 1;
  static __device__ __forceinline__ float to_float(float v) { return v; }
  static __device__ __forceinline__ float word_elem(uint32_t w, int) { return __uint_as_float(w); }
  static __device__ __forceinline__ float from_float(float v) { return v; }
  static __device__ __forceinline__ uint32_t bits(float v) { return __float_as_uint(v); }
};

__device__ __forceinline__ bool aligned_to(const void* p, unsigned bytes) {
  return (reinterpret_cast<uintptr_t>(p) & (bytes - 1)) == 0;
}

// Decodes the 32-bit words of a vector into out[base ...].
template <class T, int kCount>
__device__ __forceinline__ void unpack_word(uint32_t w, float (&out)[kCount], int base) {
#pragma unroll
  for (int k = 0; k < Elem<T>::kPerWord; ++k) out[base + k] = Elem<T>::word_elem(w, k);
}

// kCount consecutive elements of global memory as floats: 16-byte (or 8-byte) vector loads where
// the address is aligned, which it is for every row of a 16-byte aligned tensor; else one by one.
// kReadOnly takes the read-only data path (__ldg); the state does not, since it may be written in
// place by the same kernel.
template <bool kReadOnly, class T, int kCount>
__device__ __forceinline__ void load_floats(const T* src, float (&out)[kCount]) {
  constexpr int kBytes = kCount * static_cast<int>(sizeof(T));
  constexpr int kPerWord = Elem<T>::kPerWord;
  if constexpr (kBytes % 16 == 0) {
    if (aligned_to(src, 16)) {
      const uint4* v = reinterpret_cast<const uint4*>(src);
#pragma unroll
      for (int i = 0; i < kBytes / 16; ++i) {
        const uint4 w = kReadOnly ? __ldg(v + i) : v[i];
        unpack_word<T>(w.x, out, (4 * i + 0) * kPerWord);
        unpack_word<T>(w.y, out, (4 * i + 1) * kPerWord);
        unpack_word<T>(w.z, out, (4 * i + 2) * kPerWord);
        unpack_word<T>(w.w, out, (4 * i + 3) * kPerWord);
      }
      return;
    }
  } else if constexpr (kBytes % 8 == 0) {
    if (aligned_to(src, 8)) {
      const uint2* v = reinterpret_cast<const uint2*>(src);
#pragma unroll
      for (int i = 0; i < kBytes / 8; ++i) {
        const uint2 w = kReadOnly ? __ldg(v + i) : v[i];
        unpack_word<T>(w.x, out, (2 * i + 0) * kPerWord);
        unpack_word<T>(w.y, out, (2 * i + 1) * kPerWord);
      }
      return;
    }
  }
#pragma unroll
  for (int i = 0; i < kCount; ++i) out[i] = Elem<T>::to_float(kReadOnly ? __ldg(src + i) : src[i]);
}

// Two floats as one 32-bit word of T (fp16: two halves; only called for 16-bit T).
template <class T>
__device__ __forceinline__ uint32_t pack_pair(float lo, float hi) {
  return Elem<T>::bits(lo) | (Elem<T>::bits(hi) << 16);
}

// kCount floats rounded to T (fp16 / fp32) into consecutive global memory, 16 bytes at a time
// where aligned.
template <class T, int kCount>
__device__ __forceinline__ void store_floats(T* dst, const float (&v)[kCount]) {
  constexpr int kBytes = kCount * static_cast<int>(sizeof(T));
  static_assert(kBytes % 16 == 0, "whole 16-byte vectors");
  if (aligned_to(dst, 16)) {
    uint4* out = reinterpret_cast<uint4*>(dst);
#pragma unroll
    for (int i = 0; i < kBytes / 16; ++i) {
      uint4 w;
      if constexpr (sizeof(T) == 2) {
        w = make_uint4(pack_pair<T>(v[8 * i + 0], v[8 * i + 1]), pack_pair<T>(v[8 * i + 2], v[8 * i + 3]),
                       pack_pair<T>(v[8 * i + 4], v[8 * i + 5]), pack_pair<T>(v[8 * i + 6], v[8 * i + 7]));
      } else {
        w = make_uint4(Elem<T>::bits(v[4 * i + 0]), Elem<T>::bits(v[4 * i + 1]), Elem<T>::bits(v[4 * i + 2]),
                       Elem<T>::bits(v[4 * i + 3]));
      }
      out[i] = w;
    }
    return;
  }
#pragma unroll
  for (int i = 0; i < kCount; ++i) dst[i] = Elem<T>::from_float(v[i]);
}

// ---- the maths, shared by both kernels ---------------------------------------------------------------

// torch.nn.functional.softplus (beta 1, threshold 20), which the reference uses: x above 20 is
// returned as is. Accurate expf / log1pf: once per (t, c), not per state.
__device__ __forceinline__ float softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

// z * sigmoid(g * z): MambaQuant's S-SiLU, SiLU for g = 1. For g z very negative the exponential
// overflows to inf and the quotient is a signed zero, as the reference's sigmoid gives 0.
__device__ __forceinline__ float gate(float z, float g) { return z / (1.0f + __expf(-g * z)); }

// 2^x on the special-function unit with subnormal results flushed to zero. exp2f alone wraps the
// MUFU.EX2 in a range test and two multiplies to produce subnormals: three more instructions per
// state and step, in the loop bound by exactly that unit. A decay below 2^-126 times any state the
// model carries is far below the state's fp32 rounding, so flushing it changes nothing. The
// emulator has no inline PTX; it computes exp2f at host precision.
__device__ __forceinline__ float exp2_ftz(float x) {
#if JM_EMULATED
  return exp2f(x);
#else
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#endif
}

// One recurrence step of one state: h <- exp(dt A) h + (dt u) B, returns h C. a2 is A log2(e), so
// that the exponential is a single exp2.
__device__ __forceinline__ float advance(float& h, float a2, float dt, float dtu, float b, float c) {
  h = exp2_ftz(dt * a2) * h + dtu * b;
  return h * c;
}

template <class In>
__device__ __forceinline__ float dequant(In v, float scale) {
  if constexpr (Elem<In>::kQuantized) {
    return __fmul_rn(Elem<In>::to_float(v), scale);  // exactly the reference's q * scale
  } else {
    return Elem<In>::to_float(v);
  }
}

// The per-(t, c) part: dt' = softplus(DQ(dt) + dt_bias). Kept un-contracted (no FMA) so that the
// GPU computes the same dt' as the reference, which the exponentials of every state amplify.
template <class In>
__device__ __forceinline__ float discretised_dt(In dt_raw, float dt_scale, float dt_bias) {
  return softplus(__fadd_rn(dequant(dt_raw, dt_scale), dt_bias));
}

// ---- the int8 state ------------------------------------------------------------------------------

// kCount states of a channel as fp32: the codes times the channel's scale (exactly the reference's
// code * scale); a fp16 / fp32 state widened. Plain loads: the state may be updated in place.
template <class State, int kCount>
__device__ __forceinline__ void load_state(const State* src, const float* scales, size_t channel, float (&h)[kCount]) {
  load_floats<false>(src, h);
  if constexpr (Elem<State>::kQuantized) {
    const float s = scales[channel];
#pragma unroll
    for (int k = 0; k < kCount; ++k) h[k] = __fmul_rn(h[k], s);
  }
}

// The code of h for a scale > 0: rn(h / scale) (IEEE division, as the reference divides), half to
// even, saturated to +-127 (symmetric: max |h| maps to 127, never -128).
__device__ __forceinline__ uint32_t state_code(float h, float scale) {
  const float q = fminf(fmaxf(rintf(__fdiv_rn(h, scale)), -127.0f), 127.0f);
  return static_cast<uint32_t>(static_cast<uint8_t>(static_cast<int8_t>(q)));
}

// Four codes as one little-endian word (code k in byte k).
__device__ __forceinline__ uint32_t pack_codes(const float* h, float scale) {
  return state_code(h[0], scale) | (state_code(h[1], scale) << 8) | (state_code(h[2], scale) << 16) |
         (state_code(h[3], scale) << 24);
}

// kCount (8 or 16) codes into dst: one 16- or 8-byte store where aligned, else byte by byte.
// scale 0 (an all-zero channel) writes zero codes without dividing.
template <int kCount>
__device__ __forceinline__ void store_codes(int8_t* dst, const float (&h)[kCount], float scale) {
  static_assert(kCount % 8 == 0, "whole 8-byte vectors");
  uint32_t w[kCount / 4];
#pragma unroll
  for (int i = 0; i < kCount / 4; ++i) w[i] = scale > 0.0f ? pack_codes(h + 4 * i, scale) : 0u;
  if (kCount % 16 == 0 && aligned_to(dst, 16)) {
#pragma unroll
    for (int i = 0; i < kCount / 16; ++i) {
      reinterpret_cast<uint4*>(dst)[i] = make_uint4(w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]);
    }
  } else if (aligned_to(dst, 8)) {
#pragma unroll
    for (int i = 0; i < kCount / 8; ++i) reinterpret_cast<uint2*>(dst)[i] = make_uint2(w[2 * i], w[2 * i + 1]);
  } else {
#pragma unroll
    for (int k = 0; k < kCount; ++k) dst[k] = static_cast<int8_t>(w[k / 4] >> (8 * (k % 4)));
  }
}

// The final state of a channel whose n states are spread over `lanes` consecutive lanes (kCount
// each). fp16 / fp32: rounded and stored. int8: the channel's max |h| reduced over its lanes with
// xor shuffles (the lanes of a channel are in one warp, all active together), scale = max / 127
// (IEEE division, as the reference), codes stored by every lane, the scale by the first.
template <class State, int kCount>
__device__ __forceinline__ void store_state(State* dst, float* scales, size_t channel, const float (&h)[kCount],
                                            int lanes, int part, unsigned active_mask) {
  if constexpr (Elem<State>::kQuantized) {
    float amax = 0.0f;
#pragma unroll
    for (int k = 0; k < kCount; ++k) amax = fmaxf(amax, fabsf(h[k]));
    for (int offset = 1; offset < lanes; offset <<= 1) amax = fmaxf(amax, __shfl_xor_sync(active_mask, amax, offset));
    const float scale = __fdiv_rn(amax, 127.0f);
    store_codes(dst, h, scale);
    if (part == 0) scales[channel] = scale;
  } else {
    store_floats(dst, h);
  }
}

// ---- arguments ------------------------------------------------------------------------------------

template <class In, class State, class Out>
struct ScanArgs {
  const In* u;
  const In* dt;
  const In* B;
  const In* C;
  const In* z;
  const float* A;
  const float* D;
  const float* dt_bias;
  const float* gate_smooth;  // nullptr: SiLU
  const State* state_in;
  State* state_out;  // may equal state_in
  const float* state_scale_in;  // int8 state: [b, d] per-channel scales; else unused
  float* state_scale_out;       // int8 state: may equal state_scale_in
  Out* y;
  int batch, seqlen, d, n;
  int chunk;  // prefill: time steps per staged chunk (set by the launcher)
  float u_scale, dt_scale, B_scale, C_scale, z_scale;  // int8 inputs only
};

// ---- prefill -----------------------------------------------------------------------------------------

// Copies rows x width elements (source rows src_stride elements apart) into shared memory (rows
// dst_stride apart), 16 bytes per load when every row start is 16-byte aligned, else per element.
template <class T>
__device__ __forceinline__ void stage_rows(T* dst, int dst_stride, const T* src, size_t src_stride, int rows,
                                           int width) {
  const bool vector = (width * sizeof(T)) % 16 == 0 && (dst_stride * sizeof(T)) % 16 == 0 &&
                      (src_stride * sizeof(T)) % 16 == 0 && aligned_to(src, 16) && aligned_to(dst, 16);
  if (vector) {
    const int per_row = static_cast<int>(width * sizeof(T) / 16);
    for (int i = threadIdx.x; i < rows * per_row; i += blockDim.x) {
      const int r = i / per_row, k = i - r * per_row;
      const uint4 v = __ldg(reinterpret_cast<const uint4*>(src + r * src_stride) + k);
      reinterpret_cast<uint4*>(dst + r * dst_stride)[k] = v;
    }
  } else {
    for (int i = threadIdx.x; i < rows * width; i += blockDim.x) {
      const int r = i / width, k = i - r * width;
      dst[r * dst_stride + k] = __ldg(src + r * src_stride + k);
    }
  }
}

// Position of state s inside a staged B / C row. Lane p of a channel reads its states
// [16p, 16p + 16) as four float4 (q = 0..3); storing float4 q of lane p at index q * lanes + p
// makes the lanes of one read consecutive float4s, free of bank conflicts.
__device__ __forceinline__ int staged_index(int s, int lanes) {
  const int p = s >> 4, q = (s >> 2) & 3, j = s & 3;
  return ((q * lanes + p) << 2) + j;
}

// count consecutive elements of B (or C) at src, dequantized to fp32, into the staged rows of n.
template <class In>
__device__ __forceinline__ void stage_projection(float* dst, const In* src, int count, int n, int lanes, float scale) {
  constexpr int kPerVec = 16 / static_cast<int>(sizeof(In));
  if (aligned_to(src, 16)) {  // count is a multiple of n, itself a multiple of 16 elements
    for (int i = threadIdx.x; i < count / kPerVec; i += blockDim.x) {
      const uint4 w = __ldg(reinterpret_cast<const uint4*>(src) + i);
      float v[kPerVec];
      constexpr int kPerWord = Elem<In>::kPerWord;
      unpack_word<In>(w.x, v, 0 * kPerWord);
      unpack_word<In>(w.y, v, 1 * kPerWord);
      unpack_word<In>(w.z, v, 2 * kPerWord);
      unpack_word<In>(w.w, v, 3 * kPerWord);
#pragma unroll
      for (int k = 0; k < kPerVec; ++k) {
        const int e = i * kPerVec + k;
        dst[(e & ~(n - 1)) + staged_index(e & (n - 1), lanes)] = Elem<In>::kQuantized ? __fmul_rn(v[k], scale) : v[k];
      }
    }
  } else {
    for (int e = threadIdx.x; e < count; e += blockDim.x) {
      dst[(e & ~(n - 1)) + staged_index(e & (n - 1), lanes)] = dequant(__ldg(src + e), scale);
    }
  }
}

template <class In, class State, class Out>
__global__ void __launch_bounds__(kPrefillThreads, kPrefillMinBlocks)
    selective_scan_prefill_kernel(const ScanArgs<In, State, Out> p) {
  extern __shared__ float4 scan_smem[];
  const int n = p.n, d = p.d, seqlen = p.seqlen, chunk = p.chunk;
  const int lanes = n / kPrefillStates;  // lanes per channel: a power of two, 1..8
  const int channels = kPrefillThreads / lanes;
  const int c0 = blockIdx.x * channels;
  const int b = blockIdx.y;
  const int local = threadIdx.x / lanes, part = threadIdx.x % lanes;
  const int c = c0 + local;
  const int width = min(channels, d - c0);  // channels of this block that exist
  const bool active = local < width;
  // the lanes of a channel are consecutive and share `active`: the shuffles name the active ones
  const unsigned active_mask = __ballot_sync(0xffffffffu, active);

  // shared memory: B and C as fp32 [chunk][n] (16-byte aligned float4 rows), then u, dt, z raw
  float* sB = reinterpret_cast<float*>(scan_smem);
  float* sC = sB + chunk * n;
  In* sU = reinterpret_cast<In*>(sC + chunk * n);
  In* sDt = sU + chunk * channels;
  In* sZ = sDt + chunk * channels;
  const float4* sB4 = reinterpret_cast<const float4*>(sB);
  const float4* sC4 = reinterpret_cast<const float4*>(sC);

  float h[kPrefillStates], a2[kPrefillStates];
  float skip = 0.0f, bias = 0.0f, smooth = 1.0f;
  const size_t state_row = (static_cast<size_t>(b) * d + c) * n + part * kPrefillStates;
  if (active) {
    load_state(p.state_in + state_row, p.state_scale_in, static_cast<size_t>(b) * d + c, h);
    load_floats<true>(p.A + static_cast<size_t>(c) * n + part * kPrefillStates, a2);
#pragma unroll
    for (int k = 0; k < kPrefillStates; ++k) a2[k] *= kLog2e;
    skip = __ldg(p.D + c);
    bias = __ldg(p.dt_bias + c);
    if (p.gate_smooth != nullptr) smooth = __ldg(p.gate_smooth + c);
  }

  for (int t0 = 0; t0 < seqlen; t0 += chunk) {
    const int rows = min(chunk, seqlen - t0);
    if (t0 > 0) __syncthreads();  // every thread is done reading the previous chunk
    const size_t row0 = static_cast<size_t>(b) * seqlen + t0;
    stage_rows(sU, channels, p.u + row0 * d + c0, d, rows, width);
    stage_rows(sDt, channels, p.dt + row0 * d + c0, d, rows, width);
    stage_rows(sZ, channels, p.z + row0 * d + c0, d, rows, width);
    stage_projection(sB, p.B + row0 * n, rows * n, n, lanes, p.B_scale);
    stage_projection(sC, p.C + row0 * n, rows * n, n, lanes, p.C_scale);
    __syncthreads();
    if (!active) continue;
    for (int t = 0; t < rows; ++t) {
      const float u = dequant(sU[t * channels + local], p.u_scale);
      const float dt = discretised_dt(sDt[t * channels + local], p.dt_scale, bias);
      const float z = dequant(sZ[t * channels + local], p.z_scale);
      const float dtu = dt * u;
      const int row4 = t * (n >> 2);
      float yq[4];  // four partial sums: short dependency chains
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const float4 bv = sB4[row4 + q * lanes + part];
        const float4 cv = sC4[row4 + q * lanes + part];
        yq[q] = advance(h[4 * q + 0], a2[4 * q + 0], dt, dtu, bv.x, cv.x);
        yq[q] += advance(h[4 * q + 1], a2[4 * q + 1], dt, dtu, bv.y, cv.y);
        yq[q] += advance(h[4 * q + 2], a2[4 * q + 2], dt, dtu, bv.z, cv.z);
        yq[q] += advance(h[4 * q + 3], a2[4 * q + 3], dt, dtu, bv.w, cv.w);
      }
      float y = (yq[0] + yq[1]) + (yq[2] + yq[3]);
      for (int offset = 1; offset < lanes; offset <<= 1) y += __shfl_xor_sync(active_mask, y, offset);
      y = (y + skip * u) * gate(z, smooth);
      if (part == 0) p.y[(row0 + t) * d + c] = Elem<Out>::from_float(y);
    }
  }
  if (active) {
    store_state(p.state_out + state_row, p.state_scale_out, static_cast<size_t>(b) * d + c, h, lanes, part, active_mask);
  }
}

// ---- decode ------------------------------------------------------------------------------------------

template <class In, class State, class Out>
__global__ void __launch_bounds__(kDecodeThreads)
    selective_scan_decode_kernel(const ScanArgs<In, State, Out> p) {
  const int n = p.n, d = p.d;
  const int lanes = n / kDecodeStates;  // a power of two, 2..16: a channel's lanes stay in one warp
  const int g = blockIdx.x * kDecodeThreads + threadIdx.x;
  const int c = g / lanes, part = g % lanes;
  const int b = blockIdx.y;
  const bool active = c < d;
  const unsigned active_mask = __ballot_sync(0xffffffffu, active);
  if (!active) return;

  // every load first, so that they are all in flight together
  const size_t state_row = (static_cast<size_t>(b) * d + c) * n + part * kDecodeStates;
  const size_t proj_row = static_cast<size_t>(b) * n + part * kDecodeStates;
  const size_t io = static_cast<size_t>(b) * d + c;
  float h[kDecodeStates], a2[kDecodeStates], bv[kDecodeStates], cv[kDecodeStates];
  load_state(p.state_in + state_row, p.state_scale_in, io, h);
  load_floats<true>(p.A + static_cast<size_t>(c) * n + part * kDecodeStates, a2);
  load_floats<true>(p.B + proj_row, bv);
  load_floats<true>(p.C + proj_row, cv);
  const In u_raw = __ldg(p.u + io), dt_raw = __ldg(p.dt + io), z_raw = __ldg(p.z + io);
  const float skip = __ldg(p.D + c), bias = __ldg(p.dt_bias + c);
  const float smooth = p.gate_smooth != nullptr ? __ldg(p.gate_smooth + c) : 1.0f;

  const float u = dequant(u_raw, p.u_scale);
  const float dt = discretised_dt(dt_raw, p.dt_scale, bias);
  const float dtu = dt * u;
  float yq[2] = {0.0f, 0.0f};
#pragma unroll
  for (int k = 0; k < kDecodeStates; ++k) {
    if constexpr (Elem<In>::kQuantized) {  // the reference's dequantized B and C, exactly
      bv[k] = __fmul_rn(bv[k], p.B_scale);
      cv[k] = __fmul_rn(cv[k], p.C_scale);
    }
    yq[k & 1] += advance(h[k], a2[k] * kLog2e, dt, dtu, bv[k], cv[k]);
  }
  store_state(p.state_out + state_row, p.state_scale_out, io, h, lanes, part, active_mask);
  float y = yq[0] + yq[1];
  for (int offset = 1; offset < lanes; offset <<= 1) y += __shfl_xor_sync(active_mask, y, offset);
  if (part == 0) p.y[io] = Elem<Out>::from_float((y + skip * u) * gate(dequant(z_raw, p.z_scale), smooth));
}

// ---- host side ----------------------------------------------------------------------------------------

inline bool supported_n(int n) { return n == 16 || n == 32 || n == 64 || n == 128; }

struct PrefillLayout {
  int channels;  // per block
  int chunk;     // time steps per staged chunk
  size_t smem_bytes;
};

template <class In>
inline PrefillLayout prefill_layout(int n) {
  const int channels = kPrefillThreads / (n / kPrefillStates);
  const size_t per_step = 2 * static_cast<size_t>(n) * sizeof(float) + 3 * static_cast<size_t>(channels) * sizeof(In);
  size_t chunk = kPrefillSmemBudget / per_step;
  chunk = chunk < 1 ? 1 : chunk > static_cast<size_t>(kMaxChunk) ? kMaxChunk : chunk;
  return PrefillLayout{channels, static_cast<int>(chunk), chunk * per_step};
}

// [a, a + bytes) and [b, b + bytes) overlap without being the same buffer (unsupported aliasing).
inline bool partial_overlap(const void* a, const void* b, size_t bytes) {
  const uintptr_t x = reinterpret_cast<uintptr_t>(a), y = reinterpret_cast<uintptr_t>(b);
  return x != y && x < y + bytes && y < x + bytes;
}

// The shape checks both ops share; batch rides on gridDim.y (at most 65535).
inline bool valid_shape(int batch, int seqlen, int d, int n) {
  return batch >= 1 && batch <= 65535 && seqlen >= 1 && d >= 1 && supported_n(n);
}

template <class In, class State, class Out>
cudaError_t launch(ScanArgs<In, State, Out> args, cudaStream_t stream) {
  if (args.seqlen == 1) {
    const long long threads = static_cast<long long>(args.d) * (args.n / kDecodeStates);
    const dim3 grid(static_cast<unsigned>((threads + kDecodeThreads - 1) / kDecodeThreads), args.batch);
    JM_LAUNCH(grid, kDecodeThreads, 0, stream, selective_scan_decode_kernel<In, State, Out>)(args);
  } else {
    const PrefillLayout layout = prefill_layout<In>(args.n);
    args.chunk = layout.chunk;
    const dim3 grid(static_cast<unsigned>((args.d + layout.channels - 1) / layout.channels), args.batch);
    JM_LAUNCH(grid, kPrefillThreads, layout.smem_bytes, stream, selective_scan_prefill_kernel<In, State, Out>)(args);
  }
  return cudaGetLastError();
}

}  // namespace jm_scan
