// Depthwise causal conv1d with SiLU fused and an explicit conv state: the kernels of
// jetmamba::CausalConv1d (int8 in and out, plugins/causal_conv1d) and jetmamba::CausalConv1dFp
// (fp16 / fp32, plugins/causal_conv1d_fp), and their shared host-side launch logic. Plain CUDA
// against common/cuda_emu.h, so the same source runs on a GPU and in the CPU emulator (the tests).
//
// Semantics (compiler/ops/reference.py): over the state-extended sequence xs = conv_state ++ x,
//   y[t, c] = silu(bias[c] + sum_{j < K} w[c, j] * xs[t + j, c])          t = 0 .. l-1
//   conv_state_out = the last K-1 rows of xs (exact copies of inputs)
// int8: x, w and the state are dequantized (q * scale, one scale or one per channel) and y is
// quantized with ONNX QuantizeLinear semantics, saturate(round_half_to_even(v / out_scale)).
// fp32 maths throughout.
//
// Parallelisation: one thread owns V consecutive channels (V = 4: one 4-, 8- or 16-byte vector
// access per row, when the channel count and the pointers allow; V = 1 otherwise) of one batch item
// over one chunk of the sequence. Channels are the contiguous axis, so consecutive threads of a
// warp touch consecutive bytes of a row: every load and store is coalesced. blockIdx.x picks the
// channel groups, blockIdx.y the sequence chunk, blockIdx.z the batch item. The K-tap window lives
// in registers and slides along the thread's chunk; a chunk starts by reading the K-1 rows before
// it (from x, or from conv_state for the first chunk), so chunks are independent. The decode step
// (l = 1) is the same kernel with one chunk of one step. No shared memory, no barriers.
//
// Conv state and in-place use: only the thread that owns chunk 0 of a (batch, channel group) reads
// conv_state, and the same thread writes conv_state_out, after it has read the old state. When the
// chunk reaches the end of the sequence (always in decode) its window is the new state; otherwise
// it copies the last K-1 rows of x (which nobody writes). So no thread ever reads a state element
// another thread writes, and conv_state_out == conv_state (in place) is safe. (Were the new state
// written by the thread owning the end of the sequence, another block, it could overwrite the old
// state before chunk 0 reads it.) The chunk length is at least K-1, so no later chunk reaches back
// into the state.
#pragma once

#include <stdint.h>
#include <string.h>

#include "common/cuda_emu.h"

namespace jm {
namespace causal_conv1d {

constexpr int kMaxThreads = 128;    // threads per block along the channels
constexpr int kVec = 4;             // channels per thread on the vectorised path
constexpr int kMinChunk = 32;       // automatic chunk lengths: the halo (K-1 rows) stays < 10% of the reads
constexpr int kMaxChunk = 128;
constexpr int kTargetThreads = 16384;  // enough resident warps to cover DRAM latency on Orin (16 SMs)
constexpr int kMaxGridYZ = 65535;
// The time loop is not unrolled: it is memory-bound and its latency is covered by the many resident
// threads (kTargetThreads). Unrolled by 2..8, an earlier version of these kernels made ptxas (13.0
// and 12.6) spill a few bytes in some instantiations, far below the register limit.
constexpr int kTimeUnroll = 1;

// Per-element-type facts. int8 has its own kernel (packed window, __dp4a); half and float share one.
template <class T>
struct Traits;

template <>
struct Traits<int8_t> {
  static constexpr bool kQuantized = true;
  using Bias = float;
};

template <>
struct Traits<__half> {
  static constexpr bool kQuantized = false;
  using Bias = __half;
  static __device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
  // exact for the state (the value came from a half); round to nearest even for y
  static __device__ __forceinline__ __half from_float(float v) { return __float2half_rn(v); }
};

template <>
struct Traits<float> {
  static constexpr bool kQuantized = false;
  using Bias = float;
  static __device__ __forceinline__ float to_float(float v) { return v; }
  static __device__ __forceinline__ float from_float(float v) { return v; }
};

// The kernel's arguments, by value (kernel parameter space). Row stride = channels elements.
template <class T>
struct ConvArgs {
  const T* x;                            // [batch, seqlen, channels]
  const T* weight;                       // [channels, K]
  const typename Traits<T>::Bias* bias;  // [channels] or nullptr
  const T* state;                        // [batch, K-1, channels]
  T* y;                                  // [batch, seqlen, channels]
  T* state_out;                          // [batch, K-1, channels]; may be `state` itself
  const float* x_scale;                  // int8 only: 1 or channels floats (device memory)
  const float* w_scale;
  const float* out_scale;
  int x_scale_count, w_scale_count, out_scale_count;
  int seqlen, channels, chunk;
};

// An unsigned word of N bytes: one memory access for a whole vector of channels.
template <int N>
struct Word;
template <>
struct Word<1> {
  using type = unsigned char;
};
template <>
struct Word<2> {
  using type = unsigned short;
};
template <>
struct Word<4> {
  using type = unsigned int;
};
template <>
struct Word<8> {
  using type = uint2;
};
template <>
struct Word<16> {
  using type = uint4;
};

// V elements at p, aligned to their total size. `Cached` reads through the read-only data cache:
// only for tensors nobody writes during the launch (not the state, which may be written in place).
template <class T, int V, bool Cached>
__device__ __forceinline__ void load_row(const T* p, T (&out)[V]) {
  using W = typename Word<sizeof(T) * V>::type;
  const W* wp = reinterpret_cast<const W*>(p);
  const W w = Cached ? __ldg(wp) : *wp;
  memcpy(out, &w, sizeof(W));
}

template <class T, int V>
__device__ __forceinline__ void store_row(T* p, const T (&vals)[V]) {
  using W = typename Word<sizeof(T) * V>::type;
  W w;
  memcpy(&w, vals, sizeof(W));
  *reinterpret_cast<W*>(p) = w;
}

// conv_state_out when the sequence ran past this thread's chunk: its last K-1 rows of x, copied.
template <class T, int V, int S>
__device__ __forceinline__ void copy_last_rows(const T* xb, T* so, int seqlen, int64_t row) {
#pragma unroll
  for (int j = 0; j < S; ++j) {
    T vals[V];
    load_row<T, V, true>(xb + (seqlen - S + j) * row, vals);
    store_row<T, V>(so + j * row, vals);
  }
}

__device__ __forceinline__ float silu(float v) {
  // The fast exponential and division (a few ulps): with exact expf and IEEE division, SiLU and the
  // quantization would cost ~40 instructions per output and make int8 prefill compute-bound on Orin
  // Nano (2 bytes of DRAM traffic per output); the error is far below an int8 quantum or an fp16
  // ulp. exp(-v) overflows to inf for v < -88: __fdividef then gives -0, the limit.
  return __fdividef(v, 1.0f + __expf(-v));
}

// int <-> float without the conversion unit. I2F and F2I run at a quarter of the FMA rate, on the
// unit that also serves SiLU's two MUFU operations; with all four per output the int8 kernel would be
// compute-bound on Orin Nano. 1.5 * 2^23 has 22 free mantissa bits below its unit bit, so for
// |i| < 2^22 the float with bits kMagicBits + i is exactly 1.5 * 2^23 + i.
constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
constexpr int kMagicBits = 0x4B400000;

__device__ __forceinline__ float small_int_to_float(int i) { return __int_as_float(kMagicBits + i) - kMagic; }

__device__ __forceinline__ int8_t quantize(float v, float inv_scale) {
  // ONNX QuantizeLinear, saturate(round_half_to_even(v / scale)), with the reciprocal of the scale
  // computed once per channel: it differs from the division by at most an ulp, i.e. only for values
  // within a hair of a rounding tie (the tests bound how often); exact ties do not occur in practice
  // since v comes out of an exponential. Saturating first and rounding second is the same (the
  // bounds are integers); adding 1.5 * 2^23 rounds to an integer, half to even (the addition's own
  // rounding), and leaves it in the low mantissa bits: the low byte is the two's complement code.
  const float clamped = fminf(fmaxf(v * inv_scale, -128.0f), 127.0f);
  return static_cast<int8_t>(static_cast<uint8_t>(__float_as_int(clamped + kMagic)));
}

__device__ __forceinline__ int scale_index(int count, int channel) { return count == 1 ? 0 : channel; }

// Where a thread works: its first channel, batch item and chunk [t_begin, t_end). False: no channel.
struct Tile {
  int c0, chunk_index, t_begin, t_end;
  int64_t b, row;
};

template <class T, int V>
__device__ __forceinline__ bool tile_of(const ConvArgs<T>& a, Tile& tile) {
  tile.c0 = static_cast<int>((blockIdx.x * blockDim.x + threadIdx.x) * V);
  tile.chunk_index = static_cast<int>(blockIdx.y);
  tile.b = blockIdx.z;
  tile.row = a.channels;
  tile.t_begin = tile.chunk_index * a.chunk;  // < seqlen (or 0 when seqlen is 0)
  tile.t_end = a.seqlen - tile.t_begin < a.chunk ? a.seqlen : tile.t_begin + a.chunk;
  return tile.c0 < a.channels;
}

// ---- int8 --------------------------------------------------------------------------------------
// One channel's window is one 32-bit word of int8 codes, oldest in the low byte: after the step for
// time t, byte 3 holds x[t], byte 2 x[t-1], ... The taps are packed the same way (w[K-1] in byte 3,
// zeros below byte 4-K), so the convolution is one __dp4a, exact in int32 (|sum| <= 65536), and the
// slide is one __byte_perm. x_scale and w_scale are per channel (or per tensor), so they factor out
// of the sum: v = acc * (x_scale * w_scale) + bias, one fused multiply-add.

template <int V>
__device__ __forceinline__ unsigned load_codes(const int8_t* p, bool cached) {
  using W = typename Word<V>::type;
  const W* wp = reinterpret_cast<const W*>(p);
  return static_cast<unsigned>(cached ? __ldg(wp) : *wp);
}

// Shift every channel's window by one byte and append that channel's byte of `codes`.
template <int V>
__device__ __forceinline__ void push(unsigned (&win)[V], unsigned codes) {
#pragma unroll
  for (int v = 0; v < V; ++v) win[v] = __byte_perm(win[v], codes, 0x0321u | static_cast<unsigned>(4 + v) << 12);
}

template <int K, int V>
__global__ void __launch_bounds__(kMaxThreads) causal_conv1d_int8_kernel(const ConvArgs<int8_t> a) {
  constexpr int S = K - 1;  // state rows
  Tile tile;
  if (!tile_of<int8_t, V>(a, tile)) return;  // no barriers below: early exit is safe
  const int c0 = tile.c0;
  const int64_t row = tile.row;
  const int8_t* xb = a.x + tile.b * a.seqlen * row + c0;
  const int8_t* sb = a.state + tile.b * S * row + c0;
  int8_t* yb = a.y + tile.b * a.seqlen * row + c0;

  // Per-channel constants, read once.
  int taps[V];
  float scale[V], bias[V], inv_out_scale[V];
#pragma unroll
  for (int v = 0; v < V; ++v) {
    const int8_t* wc = a.weight + static_cast<int64_t>(c0 + v) * K;
    unsigned packed = 0;
#pragma unroll
    for (int j = 0; j < K; ++j) packed |= static_cast<unsigned>(static_cast<uint8_t>(__ldg(wc + j))) << (8 * (4 - K + j));
    taps[v] = static_cast<int>(packed);
    scale[v] = __ldg(a.x_scale + scale_index(a.x_scale_count, c0 + v)) *
               __ldg(a.w_scale + scale_index(a.w_scale_count, c0 + v));
    inv_out_scale[v] = 1.0f / __ldg(a.out_scale + scale_index(a.out_scale_count, c0 + v));
    bias[v] = a.bias != nullptr ? __ldg(a.bias + c0 + v) : 0.0f;
  }

  // The K-1 rows before the chunk: from x, or (chunk 0 only, since chunk >= K-1) from the state.
  unsigned win[V] = {};
#pragma unroll
  for (int j = 0; j < S; ++j) {
    const int t = tile.t_begin - S + j;
    push<V>(win, t >= 0 ? load_codes<V>(xb + t * row, true) : load_codes<V>(sb + (S + t) * row, false));
  }

#pragma unroll kTimeUnroll
  for (int t = tile.t_begin; t < tile.t_end; ++t) {
    push<V>(win, load_codes<V>(xb + t * row, true));
    int8_t out[V];
#pragma unroll
    for (int v = 0; v < V; ++v) {
      const int acc = __dp4a(static_cast<int>(win[v]), taps[v], 0);
      // fmaf explicitly: one rounding, and the same result under nvcc (which would contract) and g++
      out[v] = quantize(silu(__fmaf_rn(small_int_to_float(acc), scale[v], bias[v])), inv_out_scale[v]);
    }
    store_row<int8_t, V>(yb + t * row, out);
  }

  if (tile.chunk_index != 0) return;
  // New state, written by the thread that read the old one (see the top comment).
  int8_t* so = a.state_out + tile.b * S * row + c0;
  if (tile.t_end == a.seqlen) {  // bytes 4-S .. 3 of the windows are the last S rows of xs
#pragma unroll
    for (int j = 0; j < S; ++j) {
      int8_t vals[V];
#pragma unroll
      for (int v = 0; v < V; ++v) vals[v] = static_cast<int8_t>(win[v] >> (8 * (4 - S + j)));
      store_row<int8_t, V>(so + j * row, vals);
    }
  } else {
    copy_last_rows<int8_t, V, S>(xb, so, a.seqlen, row);
  }
}

// ---- fp16 / fp32 -------------------------------------------------------------------------------
// The window is K-1 fp32 values per channel in registers; the taps are summed in the reference's
// order (bias, then oldest tap first) with fused multiply-adds.

template <class T, int K, int V>
__global__ void __launch_bounds__(kMaxThreads) causal_conv1d_fp_kernel(const ConvArgs<T> a) {
  using Tr = Traits<T>;
  constexpr int S = K - 1;
  Tile tile;
  if (!tile_of<T, V>(a, tile)) return;  // no barriers below: early exit is safe
  const int c0 = tile.c0;
  const int64_t row = tile.row;
  const T* xb = a.x + tile.b * a.seqlen * row + c0;
  const T* sb = a.state + tile.b * S * row + c0;
  T* yb = a.y + tile.b * a.seqlen * row + c0;

  float w[K][V], bias[V];
#pragma unroll
  for (int v = 0; v < V; ++v) {
    const T* wc = a.weight + static_cast<int64_t>(c0 + v) * K;
#pragma unroll
    for (int j = 0; j < K; ++j) w[j][v] = Tr::to_float(__ldg(wc + j));
    bias[v] = a.bias != nullptr ? Tr::to_float(__ldg(a.bias + c0 + v)) : 0.0f;
  }

  // win[j]: the input at time t_begin - S + j (from the state for chunk 0's negative times)
  float win[S][V];
#pragma unroll
  for (int j = 0; j < S; ++j) {
    const int t = tile.t_begin - S + j;
    T raw[V];
    if (t >= 0) {
      load_row<T, V, true>(xb + t * row, raw);
    } else {
      load_row<T, V, false>(sb + (S + t) * row, raw);
    }
#pragma unroll
    for (int v = 0; v < V; ++v) win[j][v] = Tr::to_float(raw[v]);
  }

#pragma unroll kTimeUnroll
  for (int t = tile.t_begin; t < tile.t_end; ++t) {
    T raw[V];
    load_row<T, V, true>(xb + t * row, raw);
    T out[V];
#pragma unroll
    for (int v = 0; v < V; ++v) {
      const float cur = Tr::to_float(raw[v]);
      float val = bias[v];
#pragma unroll
      for (int j = 0; j < S; ++j) val = __fmaf_rn(w[j][v], win[j][v], val);
      val = __fmaf_rn(w[S][v], cur, val);
      out[v] = Tr::from_float(silu(val));
#pragma unroll
      for (int j = 0; j + 1 < S; ++j) win[j][v] = win[j + 1][v];
      win[S - 1][v] = cur;
    }
    store_row<T, V>(yb + t * row, out);
  }

  if (tile.chunk_index != 0) return;
  T* so = a.state_out + tile.b * S * row + c0;
  if (tile.t_end == a.seqlen) {  // the window holds the last S rows of xs
#pragma unroll
    for (int j = 0; j < S; ++j) {
      T vals[V];
#pragma unroll
      for (int v = 0; v < V; ++v) vals[v] = Tr::from_float(win[j][v]);
      store_row<T, V>(so + j * row, vals);
    }
  } else {
    copy_last_rows<T, V, S>(xb, so, a.seqlen, row);
  }
}

// ---- host side: validation and launch (shared by both launchers) ------------------------------------

// Whether two byte ranges overlap (empty ranges overlap nothing).
inline bool ranges_overlap(const void* a, int64_t a_bytes, const void* b, int64_t b_bytes) {
  if (a == nullptr || b == nullptr || a_bytes <= 0 || b_bytes <= 0) return false;
  const uintptr_t a0 = reinterpret_cast<uintptr_t>(a), b0 = reinterpret_cast<uintptr_t>(b);
  return a0 < b0 + static_cast<uintptr_t>(b_bytes) && b0 < a0 + static_cast<uintptr_t>(a_bytes);
}

inline bool aligned_to(const void* p, uintptr_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// The shape, pointer and aliasing rules common to both ops (the launchers check their own scales or
// dtype first). True when the call is well formed.
template <class T>
inline bool valid_conv_args(const ConvArgs<T>& a, int batch, int k, int requested_chunk) {
  if (k < 2 || k > 4 || batch < 0 || a.seqlen < 0 || a.channels < 0 || requested_chunk < 0) return false;
  if (requested_chunk != 0 && requested_chunk < k - 1) return false;  // a later chunk would read the state
  if (batch > kMaxGridYZ) return false;
  const int64_t e = sizeof(T);
  const int64_t n_seq = static_cast<int64_t>(batch) * a.seqlen * a.channels * e;
  const int64_t n_state = static_cast<int64_t>(batch) * (k - 1) * a.channels * e;
  const int64_t n_weight = static_cast<int64_t>(a.channels) * k * e;
  const int64_t n_bias = static_cast<int64_t>(a.channels) * sizeof(typename Traits<T>::Bias);
  if (n_seq > 0 && (a.x == nullptr || a.y == nullptr)) return false;
  if (n_state > 0 && (a.state == nullptr || a.state_out == nullptr)) return false;
  if (n_weight > 0 && a.weight == nullptr) return false;
  // outputs: y and the new state must not overlap any input (nor each other); the new state may be
  // the old state exactly (in place), not a shifted copy of it
  const void* ins[] = {a.x, a.weight, a.bias, a.x_scale, a.w_scale, a.out_scale};
  const int64_t in_bytes[] = {n_seq, n_weight, a.bias ? n_bias : 0, a.x_scale_count * 4LL, a.w_scale_count * 4LL,
                              a.out_scale_count * 4LL};
  for (int i = 0; i < 6; ++i) {
    if (ranges_overlap(a.y, n_seq, ins[i], in_bytes[i]) || ranges_overlap(a.state_out, n_state, ins[i], in_bytes[i]))
      return false;
  }
  if (ranges_overlap(a.y, n_seq, a.state, n_state) || ranges_overlap(a.y, n_seq, a.state_out, n_state)) return false;
  if (a.state_out != a.state && ranges_overlap(a.state_out, n_state, a.state, n_state)) return false;
  return true;
}

template <class T, int K, int V>
inline cudaError_t launch_conv(const ConvArgs<T>& a, dim3 grid, int threads, cudaStream_t stream) {
  if constexpr (Traits<T>::kQuantized) {
    JM_LAUNCH(grid, threads, 0, stream, causal_conv1d_int8_kernel<K, V>)(a);
  } else {
    JM_LAUNCH(grid, threads, 0, stream, causal_conv1d_fp_kernel<T, K, V>)(a);
  }
  return cudaGetLastError();
}

template <class T, int V>
inline cudaError_t launch_k(const ConvArgs<T>& a, int k, dim3 grid, int threads, cudaStream_t stream) {
  switch (k) {
    case 2:
      return launch_conv<T, 2, V>(a, grid, threads, stream);
    case 3:
      return launch_conv<T, 3, V>(a, grid, threads, stream);
    default:
      return launch_conv<T, 4, V>(a, grid, threads, stream);
  }
}

// Picks the vector width, the chunk length and the grid, then launches. `a` is validated.
template <class T>
inline cudaError_t launch(ConvArgs<T> a, int batch, int k, int requested_chunk, cudaStream_t stream) {
  if (batch == 0 || a.channels == 0) return cudaSuccess;  // nothing to read or write
  const uintptr_t vec_bytes = sizeof(T) * kVec;
  const bool vectorised = a.channels % kVec == 0 && aligned_to(a.x, vec_bytes) && aligned_to(a.y, vec_bytes) &&
                          aligned_to(a.state, vec_bytes) && aligned_to(a.state_out, vec_bytes);
  const int v = vectorised ? kVec : 1;
  const int groups = (a.channels + v - 1) / v;
  const int threads = groups >= kMaxThreads ? kMaxThreads : (groups + 31) / 32 * 32;
  const int64_t columns = static_cast<int64_t>(batch) * groups;

  int chunk = requested_chunk;
  if (chunk == 0) {  // enough threads to fill the GPU, each with a run long enough to amortise its halo
    const int64_t wanted = (kTargetThreads + columns - 1) / columns;
    const int64_t per = (a.seqlen + wanted - 1) / wanted;
    chunk = static_cast<int>(per < kMinChunk ? kMinChunk : (per > kMaxChunk ? kMaxChunk : per));
    const int64_t fewest = (static_cast<int64_t>(a.seqlen) + kMaxGridYZ - 1) / kMaxGridYZ;
    if (chunk < fewest) chunk = static_cast<int>(fewest);
  }
  if (a.seqlen > 0 && chunk > a.seqlen) chunk = a.seqlen < k - 1 ? k - 1 : a.seqlen;
  const int64_t chunks = a.seqlen == 0 ? 1 : (static_cast<int64_t>(a.seqlen) + chunk - 1) / chunk;
  if (chunks > kMaxGridYZ) return cudaErrorInvalidValue;  // only with a requested chunk
  a.chunk = chunk;
  const dim3 grid(static_cast<unsigned>((groups + threads - 1) / threads), static_cast<unsigned>(chunks),
                  static_cast<unsigned>(batch));
  return vectorised ? launch_k<T, kVec>(a, k, grid, threads, stream) : launch_k<T, 1>(a, k, grid, threads, stream);
}

}  // namespace causal_conv1d
}  // namespace jm
