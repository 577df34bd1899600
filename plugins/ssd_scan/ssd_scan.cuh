// Mamba2 SSD scan kernels: jetmamba::SSDScan (int8 x, B, C with per-channel / per-group scales) and
// jetmamba::SSDScanFp (fp16 / fp32 inputs) share these templates.
//
//   dt' = clamp(softplus(dt + dt_bias), dt_min, dt_max)     per (t, head); torch's softplus
//   h_t = exp(dt'_t A) h_{t-1} + (dt'_t x_t) B_t^T          per head: a [P, N] state, one decay
//   y_t = h_t C_t + D x_t                                   head h reads group h / (H / G)
//
// fp32 maths; the state is read in its dtype (fp16 / fp32), carried in fp32 for the whole call and
// rounded to its dtype once, at the end. Layouts (time-major, as the op spec): x [b, l, H*P];
// dt [b, l, H]; B, C [b, l, G, N]; A, D, dt_bias [H]; state [b, H, P, N]; y [b, l, H, P].
//
// Two kernels, chosen by the launcher from seqlen:
//
// - prefill (l > 1): Mamba2's chunked SSD, one block per (batch row, head) walking the sequence in
//   chunks of T = N / 4 steps (32 for N = 128); the head's [P, N] state stays on chip (in shared
//   memory between chunks, in registers during its update: each thread owns 4 rows p x 8 states n),
//   so states pass from chunk to chunk with no global traffic. Per chunk, with
//   seg(t, s) = sum_{s<k<=t} dt'_k A (the log-decay from step s to step t):
//     S[t][s]  = (C_t . B_s) exp(seg(t, s)) dt'_s               s <= t   (intra-chunk "attention")
//     y_t      = exp(seg(t, -1)) C_t h_0  +  sum_{s<=t} S[t][s] x_s  +  D x_t
//     h_T      = exp(seg(T-1, -1)) h_0    +  sum_s exp(seg(T-1, s)) dt'_s x_s B_s^T
//   i.e. three small matmuls (C B^T masked by the decays, C h_0^T, B^T times the weighted x) per
//   chunk. Every segment sum is added directly over its own steps (never as a difference of prefix
//   sums: those cancel catastrophically once a chunk's cumulative log-decay is large and would cost
//   the decays their fp32 accuracy). The chunk's inputs (x, B, C dequantized to fp32; dt') and a
//   copy of h_0 (for C h_0^T) are staged in shared memory; phases are separated by barriers.
//   See README.md for why T = N / 4 and how this compares with a per-row recurrent scan.
// - decode (l == 1): memory-bound by design. Each thread owns 8 consecutive states of one row
//   (b, h, p): 16 contiguous bytes of an fp16 state, so a warp reads and writes one contiguous span;
//   every byte of the state and of the inputs is read once and the state written once. y is
//   reduced over a row's N / 8 lanes with shuffles.
//
// Templates over In (int8_t with scales, __half, float: x, B, C), State (__half, float) and Out
// (__half, float: y). dt's dtype (fp16 / fp32) is a runtime flag: it is read once per (t, head), so
// a template parameter would double the instantiations for nothing. N (16, 32, 64, 128) and P (a
// multiple of 4 in [16, 128]) are runtime values; the per-thread tiles are fixed.
//
// In-place state (state_out == state_in) is safe in both kernels: each thread reads its own state
// elements (prefill: its tile, at the start; decode: its 8 states) before it writes them, and no
// other thread touches them. The state is read with plain loads, not the read-only path.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "common/cuda_emu.h"

namespace jm_ssd {

// prefill thread tile: 4 head rows p x 8 states n (two runs of 4 states, N / 2 apart, so that the
// lanes of a warp read consecutive 16-byte pieces of a shared B row), and 2 chunk steps of y
constexpr int kTileP = 4;
constexpr int kTileN = 8;
constexpr int kTileT = 2;
constexpr int kMaxP = 128;
constexpr int kMaxN = 128;
constexpr int kPrefillMaxThreads = (kMaxP / kTileP) * (kMaxN / kTileN);  // 512
constexpr int kPad = 4;  // floats of padding per shared row: consecutive rows start 4 banks apart
constexpr int kDecodeThreads = 128;
constexpr int kDecodeStates = 8;  // 16 bytes of an fp16 state per thread: one vector load and store
constexpr int kDefaultSmem = 48 * 1024;  // dynamic shared memory a launch gets without opting in

// ---- element codecs -------------------------------------------------------------------------------
template <class T>
struct Elem;

template <>
struct Elem<int8_t> {
  static constexpr bool kQuantized = true;
  static __device__ __forceinline__ float to_float(int8_t v) { return static_cast<float>(v); }
};

template <>
struct Elem<__half> {
  static constexpr bool kQuantized = false;
  static __device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
  static __device__ __forceinline__ uint32_t bits(float v) { return __half_as_ushort(__float2half_rn(v)); }
  static __device__ __forceinline__ __half from_float(float v) { return __float2half_rn(v); }
};

template <>
struct Elem<float> {
  static constexpr bool kQuantized = false;
  static __device__ __forceinline__ float to_float(float v) { return v; }
  static __device__ __forceinline__ float from_float(float v) { return v; }
};

__host__ __device__ __forceinline__ bool aligned_to(const void* p, unsigned bytes) {
  return (reinterpret_cast<uintptr_t>(p) & (bytes - 1)) == 0;
}

template <bool kReadOnly, class T>
__device__ __forceinline__ T load(const T* p) {
  if constexpr (kReadOnly) {
    return __ldg(p);
  } else {
    return *p;
  }
}

// element k of a little-endian 32-bit word, as the GPU lays vectors out
__device__ __forceinline__ float half_at(uint32_t w, int k) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(w >> (16 * k))));
}
__device__ __forceinline__ float byte_at(uint32_t w, int k) {
  return static_cast<float>(static_cast<int8_t>(w >> (8 * k)));
}

// Four consecutive elements as floats: one 4-, 8- or 16-byte load when `vector` (the caller checked
// that src is aligned to 4 elements), else four. kReadOnly takes the read-only data path (__ldg);
// the state does not, since it may be written in place by the same kernel.
template <bool kReadOnly, class T>
__device__ __forceinline__ float4 load4(const T* src, bool vector) {
  if (vector) {
    if constexpr (sizeof(T) == 1) {
      const uint32_t w = load<kReadOnly>(reinterpret_cast<const unsigned int*>(src));
      return make_float4(byte_at(w, 0), byte_at(w, 1), byte_at(w, 2), byte_at(w, 3));
    } else if constexpr (sizeof(T) == 2) {
      const uint2 w = load<kReadOnly>(reinterpret_cast<const uint2*>(src));
      return make_float4(half_at(w.x, 0), half_at(w.x, 1), half_at(w.y, 0), half_at(w.y, 1));
    } else {
      return load<kReadOnly>(reinterpret_cast<const float4*>(src));
    }
  }
  return make_float4(Elem<T>::to_float(load<kReadOnly>(src)), Elem<T>::to_float(load<kReadOnly>(src + 1)),
                     Elem<T>::to_float(load<kReadOnly>(src + 2)), Elem<T>::to_float(load<kReadOnly>(src + 3)));
}

// Four floats rounded to T (fp16 / fp32) into consecutive memory: one 8- or 16-byte store when
// `vector` (dst aligned to 4 elements), else four.
template <class T>
__device__ __forceinline__ void store4(T* dst, float4 v, bool vector) {
  if (vector) {
    if constexpr (sizeof(T) == 2) {
      *reinterpret_cast<uint2*>(dst) = make_uint2(Elem<T>::bits(v.x) | (Elem<T>::bits(v.y) << 16),
                                                  Elem<T>::bits(v.z) | (Elem<T>::bits(v.w) << 16));
    } else {
      *reinterpret_cast<float4*>(dst) = v;
    }
    return;
  }
  dst[0] = Elem<T>::from_float(v.x);
  dst[1] = Elem<T>::from_float(v.y);
  dst[2] = Elem<T>::from_float(v.z);
  dst[3] = Elem<T>::from_float(v.w);
}

__device__ __forceinline__ float4 scaled(float4 v, float sx, float sy, float sz, float sw) {
  // exactly the reference's q * scale: no contraction with what follows
  return make_float4(__fmul_rn(v.x, sx), __fmul_rn(v.y, sy), __fmul_rn(v.z, sz), __fmul_rn(v.w, sw));
}

__device__ __forceinline__ float4 zero4() { return make_float4(0.0f, 0.0f, 0.0f, 0.0f); }

// acc + a . b added left to right, so that it contracts to 4 FMAs (a . b first would cost a FMUL and
// a FADD more per 4 products)
__device__ __forceinline__ float dot4_acc(float acc, float4 a, float4 b) {
  return acc + a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
}

// ---- the per-(t, head) maths ----------------------------------------------------------------------

// torch.nn.functional.softplus (beta 1, threshold 20), which the reference uses: x above 20 is
// returned as is. Accurate expf / log1pf: once per (t, head).
__device__ __forceinline__ float softplus(float v) { return v > 20.0f ? v : log1pf(expf(v)); }

// dt' = clamp(softplus(dt + dt_bias), dt_min, dt_max), as torch.clamp (max wins when min > max; an
// infinite dt_max is no bound). The sum is kept un-contracted, as the reference's fp32 add.
__device__ __forceinline__ float discretised_dt(float raw, float bias, float lo, float hi) {
  return fminf(fmaxf(softplus(__fadd_rn(raw, bias)), lo), hi);
}

__device__ __forceinline__ float load_dt(const void* dt, bool half, size_t i) {
  return half ? __half2float(__ldg(static_cast<const __half*>(dt) + i)) : __ldg(static_cast<const float*>(dt) + i);
}

// ---- arguments ------------------------------------------------------------------------------------

template <class In, class State, class Out>
struct SsdArgs {
  const In* x;     // [b, l, H*P]
  const void* dt;  // [b, l, H], fp16 when dt_half, else fp32
  const float* A;  // [H]
  const In* B;     // [b, l, G, N]
  const In* C;     // [b, l, G, N]
  const float* D;  // [H]
  const float* dt_bias;
  const State* state_in;  // [b, H, P, N]
  State* state_out;       // may equal state_in
  Out* y;                 // [b, l, H, P]
  // int8 inputs only: device arrays, scale of channel c = x_scale[c * x_scale_step] (step 0: one
  // scale for the tensor, 1: one per channel H*P); B / C likewise per group
  const float* x_scale;
  const float* B_scale;
  const float* C_scale;
  int x_scale_step, B_scale_step, C_scale_step;
  int batch, seqlen, heads, head_dim, groups, d_state;
  float dt_min, dt_max;
  bool dt_half;
};

// ---- prefill ------------------------------------------------------------------------------------------

// chunk length: every thread of the output phases owns kTileT steps of each chunk
__host__ __device__ __forceinline__ int chunk_length(int n) { return kTileT * (n / kTileN); }

__host__ __device__ __forceinline__ int prefill_threads(int p, int n) { return (p / kTileP) * (n / kTileN); }

// Shared memory of a prefill block, in floats (every array a whole number of float4):
// B, C [T][N + pad] (fp32, rows permuted, see bc_row); h_0 [P][N + pad] (rows permuted, h_row);
// x [T][P]; S [T][T + pad]; dt', dt' A, w (decay to the chunk end times dt'), e (decay from the
// chunk start) [T] each.
__host__ __device__ __forceinline__ size_t prefill_smem_floats(int p, int n) {
  const size_t t = chunk_length(n);
  return 2 * t * (n + kPad) + static_cast<size_t>(p) * (n + kPad) + t * p + t * (t + kPad) + 4 * t;
}

// Row of step t in the staged B / C: even steps first, then odd ones, so that the S tiles of
// consecutive lanes (steps 2j, 2j + 1) read consecutive rows (no bank conflicts).
__device__ __forceinline__ int bc_row(int t, int half_t) { return (t & 1) * half_t + (t >> 1); }

// A thread's state tile to / from the staged h_0 [P][N + pad], whose rows are permuted so that the
// lanes (consecutive pg) of one access touch consecutive rows: row of p0 + j = j * (P / 4) + pg.
__device__ __forceinline__ void store_tile(float* sH, const float (&h)[kTileP][kTileN], int row_groups, int pg,
                                           int stride, int n_a, int half_n) {
#pragma unroll
  for (int j = 0; j < kTileP; ++j) {
    float* row = sH + (j * row_groups + pg) * stride;
    *reinterpret_cast<float4*>(row + n_a) = make_float4(h[j][0], h[j][1], h[j][2], h[j][3]);
    *reinterpret_cast<float4*>(row + half_n + n_a) = make_float4(h[j][4], h[j][5], h[j][6], h[j][7]);
  }
}

__device__ __forceinline__ void load_tile(float (&h)[kTileP][kTileN], const float* sH, int row_groups, int pg,
                                          int stride, int n_a, int half_n) {
#pragma unroll
  for (int j = 0; j < kTileP; ++j) {
    const float* row = sH + (j * row_groups + pg) * stride;
    const float4 u = *reinterpret_cast<const float4*>(row + n_a);
    const float4 v = *reinterpret_cast<const float4*>(row + half_n + n_a);
    h[j][0] = u.x, h[j][1] = u.y, h[j][2] = u.z, h[j][3] = u.w;
    h[j][4] = v.x, h[j][5] = v.y, h[j][6] = v.z, h[j][7] = v.w;
  }
}

template <class In, class State, class Out>
__global__ void __launch_bounds__(kPrefillMaxThreads) ssd_prefill_kernel(const SsdArgs<In, State, Out> p) {
  extern __shared__ float4 ssd_smem[];
  constexpr bool kQuantized = Elem<In>::kQuantized;
  const int P = p.head_dim, N = p.d_state, H = p.heads, L = p.seqlen, G = p.groups;
  const int T = chunk_length(N), half_t = T / 2, half_n = N / 2;
  const int head = blockIdx.x, b = blockIdx.y;
  const int group = head / (H / G);
  const int tid = threadIdx.x, nthreads = blockDim.x;
  const int row_groups = P / kTileP, n_groups = N / kTileN;
  // A warp spans 8 row groups x 4 n groups where P allows (else all of P's row groups). In C h_0^T
  // each lane loads 4 rows of h_0 and 2 of C per 4 states (32 FMAs); with this shape a warp's load
  // touches 8 distinct h_0 or 4 distinct C float4s, at most 128 bytes, one shared-memory wavefront
  // (as SIMT SGEMMs arrange theirs): 0.75 bytes per FMA, under the SM's 1 byte per FMA. Lanes along
  // p alone (16 x 2) would need 1.25.
  const int lanes_p = row_groups % 8 == 0 ? 8 : row_groups;
  const int ng = (tid / lanes_p) % n_groups;
  const int pg = tid % lanes_p + lanes_p * (tid / (lanes_p * n_groups));
  const int p0 = kTileP * pg;        // head rows p0 .. p0 + 3
  const int n_a = (kTileN / 2) * ng;  // states n_a .. n_a + 3 and half_n + n_a .. + 3
  const int t_a = kTileT * ng;        // chunk steps t_a, t_a + 1 of y
  const int bc_stride = N + kPad, s_stride = T + kPad;

  float* sB = reinterpret_cast<float*>(ssd_smem);
  float* sC = sB + T * bc_stride;
  float* sH = sC + T * bc_stride;
  float* sX = sH + P * bc_stride;
  float* sS = sX + T * P;
  float* sDt = sS + T * s_stride;
  float* sDtA = sDt + T;
  float* sW = sDtA + T;
  float* sE = sW + T;

  const float a = __ldg(p.A + head), skip = __ldg(p.D + head), bias = __ldg(p.dt_bias + head);
  float b_scale = 1.0f, c_scale = 1.0f;
  if constexpr (kQuantized) {
    b_scale = __ldg(p.B_scale + group * p.B_scale_step);
    c_scale = __ldg(p.C_scale + group * p.C_scale_step);
  }
  // every row offset below is a multiple of 4 elements, so the base pointers decide the vector paths
  const bool vec_x = aligned_to(p.x, 4 * sizeof(In));
  const bool vec_b = aligned_to(p.B, 4 * sizeof(In)), vec_c = aligned_to(p.C, 4 * sizeof(In));
  const bool vec_y = aligned_to(p.y, 4 * sizeof(Out));
  const size_t channels = static_cast<size_t>(H) * P;

  // The thread's state tile, fp32 for the whole call. Between chunks it lives in shared memory (all
  // of h_0 is needed there for C h_0^T anyway), so that its 32 registers are free outside the update.
  float h[kTileP][kTileN];
  const size_t state_head = (static_cast<size_t>(b) * H + head) * P * N;
  {
    const bool vec = aligned_to(p.state_in, 4 * sizeof(State));
#pragma unroll
    for (int j = 0; j < kTileP; ++j) {
      const State* row = p.state_in + state_head + static_cast<size_t>(p0 + j) * N;
      const float4 u = load4<false>(row + n_a, vec), v = load4<false>(row + half_n + n_a, vec);
      h[j][0] = u.x, h[j][1] = u.y, h[j][2] = u.z, h[j][3] = u.w;
      h[j][4] = v.x, h[j][5] = v.y, h[j][6] = v.z, h[j][7] = v.w;
    }
    store_tile(sH, h, row_groups, pg, bc_stride, n_a, half_n);  // read after phase 1's barrier
  }

  for (int t0 = 0; t0 < L; t0 += T) {
    const int valid = min(T, L - t0);  // steps of this chunk inside the sequence; the rest is padding
    const size_t row0 = static_cast<size_t>(b) * L + t0;
    if (t0 > 0) __syncthreads();  // every thread is done with the previous chunk's shared memory

    // ---- phase 1: stage the chunk. Padding steps get x = B = C = 0 and dt' = 0 (no decay), which
    // leaves y of the real steps and the state at the chunk's end exactly as without them.
#pragma unroll 1
    for (int i = tid; i < T * (P / 4); i += nthreads) {
      const int t = i / (P / 4), q = 4 * (i % (P / 4));
      float4 v = zero4();
      if (t < valid) {
        const size_t ch = static_cast<size_t>(head) * P + q;
        v = load4<true>(p.x + (row0 + t) * channels + ch, vec_x);
        if constexpr (kQuantized) {
          const float* s = p.x_scale + ch * p.x_scale_step;
          const int step = p.x_scale_step;
          v = scaled(v, __ldg(s), __ldg(s + step), __ldg(s + 2 * step), __ldg(s + 3 * step));
        }
      }
      *reinterpret_cast<float4*>(sX + t * P + q) = v;
    }
#pragma unroll 1
    for (int i = tid; i < T * (N / 4); i += nthreads) {
      const int t = i / (N / 4), q = 4 * (i % (N / 4));
      float4 bv = zero4(), cv = zero4();
      if (t < valid) {
        const size_t off = ((row0 + t) * G + group) * N + q;
        bv = load4<true>(p.B + off, vec_b);
        cv = load4<true>(p.C + off, vec_c);
        if constexpr (kQuantized) {
          bv = scaled(bv, b_scale, b_scale, b_scale, b_scale);
          cv = scaled(cv, c_scale, c_scale, c_scale, c_scale);
        }
      }
      const int r = bc_row(t, half_t) * bc_stride + q;
      *reinterpret_cast<float4*>(sB + r) = bv;
      *reinterpret_cast<float4*>(sC + r) = cv;
    }
    for (int t = tid; t < T; t += nthreads) {
      float d = 0.0f;
      if (t < valid) d = discretised_dt(load_dt(p.dt, p.dt_half, (row0 + t) * H + head), bias, p.dt_min, p.dt_max);
      sDt[t] = d;
      sDtA[t] = d * a;  // the reference's dt * A, before its exp
    }
    __syncthreads();

    // ---- phase 2: the chunk's decays, S, and C h_0^T
    if (tid < T) {  // w_s = exp(seg(T-1, s)) dt'_s: weight of step s in the chunk's final state
      float sum = 0.0f;
      for (int k = tid + 1; k < T; ++k) sum += sDtA[k];
      sW[tid] = expf(sum) * sDt[tid];
    } else if (tid < 2 * T) {  // e_t = exp(seg(t, -1)): decay of h_0 up to step t
      const int t = tid - T;
      float sum = 0.0f;
      for (int k = 0; k <= t; ++k) sum += sDtA[k];
      sE[t] = expf(sum);
    }

    // S in 2 x 2 tiles (steps 2i, 2i + 1) x (2j, 2j + 1), j <= i: the lower triangle only
    const int tiles = half_t * (half_t + 1) / 2;
#pragma unroll 1
    for (int e = tid; e < tiles; e += nthreads) {
      int i = static_cast<int>((sqrtf(8.0f * e + 1.0f) - 1.0f) * 0.5f);
      while (i * (i + 1) / 2 > e) --i;
      while ((i + 1) * (i + 2) / 2 <= e) ++i;
      const int j = e - i * (i + 1) / 2;
      const float4* c0 = reinterpret_cast<const float4*>(sC + i * bc_stride);
      const float4* c1 = reinterpret_cast<const float4*>(sC + (half_t + i) * bc_stride);
      const float4* b0 = reinterpret_cast<const float4*>(sB + j * bc_stride);
      const float4* b1 = reinterpret_cast<const float4*>(sB + (half_t + j) * bc_stride);
      float d00 = 0.0f, d01 = 0.0f, d10 = 0.0f, d11 = 0.0f;
#pragma unroll 1
      for (int q = 0; q < N / 4; ++q) {
        const float4 cv0 = c0[q], cv1 = c1[q], bv0 = b0[q], bv1 = b1[q];
        d00 = dot4_acc(d00, cv0, bv0);
        d01 = dot4_acc(d01, cv0, bv1);
        d10 = dot4_acc(d10, cv1, bv0);
        d11 = dot4_acc(d11, cv1, bv1);
      }
      const int t = 2 * i, s = 2 * j;
      float* row0s = sS + t * s_stride;
      float* row1s = row0s + s_stride;
      if (i == j) {  // the diagonal tile: (t, t + 1) is above the diagonal, left to the zero fill
        row0s[s] = d00 * sDt[s];
        row1s[s] = d10 * expf(sDtA[t + 1]) * sDt[s];
        row1s[s + 1] = d11 * sDt[s + 1];
      } else {
        float base = 0.0f;  // seg(2i, 2j + 1): the steps 2j + 2 .. 2i, added in order
        for (int k = s + 2; k <= t; ++k) base += sDtA[k];
        row0s[s] = d00 * expf(base + sDtA[s + 1]) * sDt[s];
        row0s[s + 1] = d01 * expf(base) * sDt[s + 1];
        row1s[s] = d10 * expf(base + sDtA[s + 1] + sDtA[t + 1]) * sDt[s];
        row1s[s + 1] = d11 * expf(base + sDtA[t + 1]) * sDt[s + 1];
      }
    }
    // phase 3 reads S rows t_a, t_a + 1 in float4 up to the next multiple of 4 past t_a + 1: the
    // entries of that stretch above the diagonal must be zeros (one thread per pair of rows)
    if (pg == 0) {
      const int end = (t_a + kTileT + 3) & ~3;
      for (int tt = 0; tt < kTileT; ++tt) {
        for (int s = t_a + tt + 1; s < end; ++s) sS[(t_a + tt) * s_stride + s] = 0.0f;
      }
    }

    // C_t h_0^T for the thread's steps t_a, t_a + 1 and rows p0 .. p0 + 3 (decayed in phase 3)
    float acc[kTileT][kTileP];
#pragma unroll
    for (int tt = 0; tt < kTileT; ++tt) {
#pragma unroll
      for (int j = 0; j < kTileP; ++j) acc[tt][j] = 0.0f;
    }
    {
      const float4* c0 = reinterpret_cast<const float4*>(sC + bc_row(t_a, half_t) * bc_stride);
      const float4* c1 = reinterpret_cast<const float4*>(sC + bc_row(t_a + 1, half_t) * bc_stride);
#pragma unroll 1
      for (int q = 0; q < N / 4; ++q) {
        const float4 cv0 = c0[q], cv1 = c1[q];
#pragma unroll
        for (int j = 0; j < kTileP; ++j) {
          const float4 hv = reinterpret_cast<const float4*>(sH + (j * row_groups + pg) * bc_stride)[q];
          acc[0][j] = dot4_acc(acc[0][j], cv0, hv);
          acc[1][j] = dot4_acc(acc[1][j], cv1, hv);
        }
      }
    }
    __syncthreads();

    // ---- phase 3: y of the thread's steps, then the state at the chunk's end
#pragma unroll
    for (int tt = 0; tt < kTileT; ++tt) {
      const float decay = sE[t_a + tt];
#pragma unroll
      for (int j = 0; j < kTileP; ++j) acc[tt][j] *= decay;
    }
    {
      const float* s0 = sS + t_a * s_stride;
      const float* s1 = s0 + s_stride;
#pragma unroll 1
      for (int s = 0; s < t_a + kTileT; s += 4) {
        const float4 w0 = *reinterpret_cast<const float4*>(s0 + s);
        const float4 w1 = *reinterpret_cast<const float4*>(s1 + s);
        const float w0k[4] = {w0.x, w0.y, w0.z, w0.w}, w1k[4] = {w1.x, w1.y, w1.z, w1.w};
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const float4 xv = *reinterpret_cast<const float4*>(sX + (s + k) * P + p0);
          const float xs[kTileP] = {xv.x, xv.y, xv.z, xv.w};
#pragma unroll
          for (int j = 0; j < kTileP; ++j) {
            acc[0][j] += w0k[k] * xs[j];
            acc[1][j] += w1k[k] * xs[j];
          }
        }
      }
    }
#pragma unroll
    for (int tt = 0; tt < kTileT; ++tt) {
      const int t = t_a + tt;
      if (t < valid) {
        const float4 xv = *reinterpret_cast<const float4*>(sX + t * P + p0);
        const float4 yv = make_float4(acc[tt][0] + skip * xv.x, acc[tt][1] + skip * xv.y, acc[tt][2] + skip * xv.z,
                                      acc[tt][3] + skip * xv.w);
        store4(p.y + ((row0 + t) * H + head) * P + p0, yv, vec_y);
      }
    }

    load_tile(h, sH, row_groups, pg, bc_stride, n_a, half_n);
    const float chunk_decay = sE[T - 1];  // padding steps decay by exp(0) = 1
#pragma unroll
    for (int j = 0; j < kTileP; ++j) {
#pragma unroll
      for (int k = 0; k < kTileN; ++k) h[j][k] *= chunk_decay;
    }
#pragma unroll 1
    for (int s = 0; s < valid; ++s) {
      const float w = sW[s];
      const float4 xv = *reinterpret_cast<const float4*>(sX + s * P + p0);
      const float xw[kTileP] = {w * xv.x, w * xv.y, w * xv.z, w * xv.w};
      const float* brow = sB + bc_row(s, half_t) * bc_stride;
      const float4 u = *reinterpret_cast<const float4*>(brow + n_a);
      const float4 v = *reinterpret_cast<const float4*>(brow + half_n + n_a);
      const float bk[kTileN] = {u.x, u.y, u.z, u.w, v.x, v.y, v.z, v.w};
#pragma unroll
      for (int j = 0; j < kTileP; ++j) {
#pragma unroll
        for (int k = 0; k < kTileN; ++k) h[j][k] += xw[j] * bk[k];
      }
    }
    // h_0 of the next chunk; only this thread touches its tile until the next barrier
    if (t0 + T < L) store_tile(sH, h, row_groups, pg, bc_stride, n_a, half_n);
  }

  {
    const bool vec = aligned_to(p.state_out, 4 * sizeof(State));
#pragma unroll
    for (int j = 0; j < kTileP; ++j) {
      State* row = p.state_out + state_head + static_cast<size_t>(p0 + j) * N;
      store4(row + n_a, make_float4(h[j][0], h[j][1], h[j][2], h[j][3]), vec);
      store4(row + half_n + n_a, make_float4(h[j][4], h[j][5], h[j][6], h[j][7]), vec);
    }
  }
}

// ---- decode ------------------------------------------------------------------------------------------

template <class In, class State, class Out>
__global__ void __launch_bounds__(kDecodeThreads) ssd_decode_kernel(const SsdArgs<In, State, Out> p) {
  constexpr bool kQuantized = Elem<In>::kQuantized;
  const int P = p.head_dim, N = p.d_state, H = p.heads, G = p.groups;
  const int lanes = N / kDecodeStates;  // a power of two, 2..16: a row's lanes stay in one warp
  const long long g = static_cast<long long>(blockIdx.x) * kDecodeThreads + threadIdx.x;
  const long long rows = static_cast<long long>(H) * P;
  const int part = static_cast<int>(g % lanes);
  const long long row = g / lanes;  // channel h * P + p
  const int b = blockIdx.y;
  const bool active = row < rows;
  const unsigned active_mask = __ballot_sync(0xffffffffu, active);
  if (!active) return;
  const int head = static_cast<int>(row / P);
  const int group = head / (H / G);

  // every load first, so that they are all in flight together
  const size_t state_off = (static_cast<size_t>(b) * rows + row) * N + part * kDecodeStates;
  const size_t proj_off = (static_cast<size_t>(b) * G + group) * N + part * kDecodeStates;
  const bool vec_state = aligned_to(p.state_in, 4 * sizeof(State));
  const bool vec_b = aligned_to(p.B, 4 * sizeof(In)), vec_c = aligned_to(p.C, 4 * sizeof(In));
  const float4 h_lo = load4<false>(p.state_in + state_off, vec_state);
  const float4 h_hi = load4<false>(p.state_in + state_off + 4, vec_state);
  float4 b_lo = load4<true>(p.B + proj_off, vec_b), b_hi = load4<true>(p.B + proj_off + 4, vec_b);
  float4 c_lo = load4<true>(p.C + proj_off, vec_c), c_hi = load4<true>(p.C + proj_off + 4, vec_c);
  const In x_raw = __ldg(p.x + static_cast<size_t>(b) * rows + row);
  const float dt_raw = load_dt(p.dt, p.dt_half, static_cast<size_t>(b) * H + head);
  const float a = __ldg(p.A + head), skip = __ldg(p.D + head), bias = __ldg(p.dt_bias + head);

  float x = Elem<In>::to_float(x_raw);
  if constexpr (kQuantized) {
    x = __fmul_rn(x, __ldg(p.x_scale + row * p.x_scale_step));
    const float bs = __ldg(p.B_scale + group * p.B_scale_step), cs = __ldg(p.C_scale + group * p.C_scale_step);
    b_lo = scaled(b_lo, bs, bs, bs, bs);
    b_hi = scaled(b_hi, bs, bs, bs, bs);
    c_lo = scaled(c_lo, cs, cs, cs, cs);
    c_hi = scaled(c_hi, cs, cs, cs, cs);
  }
  const float dt = discretised_dt(dt_raw, bias, p.dt_min, p.dt_max);
  const float decay = expf(dt * a);
  const float dtx = dt * x;
  float hk[kDecodeStates] = {h_lo.x, h_lo.y, h_lo.z, h_lo.w, h_hi.x, h_hi.y, h_hi.z, h_hi.w};
  const float bk[kDecodeStates] = {b_lo.x, b_lo.y, b_lo.z, b_lo.w, b_hi.x, b_hi.y, b_hi.z, b_hi.w};
  const float ck[kDecodeStates] = {c_lo.x, c_lo.y, c_lo.z, c_lo.w, c_hi.x, c_hi.y, c_hi.z, c_hi.w};
  float yq[2] = {0.0f, 0.0f};  // two partial sums: shorter dependency chains
#pragma unroll
  for (int k = 0; k < kDecodeStates; ++k) {
    hk[k] = decay * hk[k] + dtx * bk[k];
    yq[k & 1] += hk[k] * ck[k];
  }
  const bool vec_out = aligned_to(p.state_out, 4 * sizeof(State));
  store4(p.state_out + state_off, make_float4(hk[0], hk[1], hk[2], hk[3]), vec_out);
  store4(p.state_out + state_off + 4, make_float4(hk[4], hk[5], hk[6], hk[7]), vec_out);
  float y = yq[0] + yq[1];
  for (int offset = 1; offset < lanes; offset <<= 1) y += __shfl_xor_sync(active_mask, y, offset);
  if (part == 0) p.y[static_cast<size_t>(b) * rows + row] = Elem<Out>::from_float(y + skip * x);
}

// ---- host side ----------------------------------------------------------------------------------------

inline bool supported_n(int n) { return n == 16 || n == 32 || n == 64 || n == 128; }
inline bool supported_p(int p) { return p >= 16 && p <= kMaxP && p % kTileP == 0; }

// [a, a + bytes) and [b, b + bytes) overlap without being the same buffer (unsupported aliasing).
inline bool partial_overlap(const void* a, const void* b, size_t bytes) {
  const uintptr_t x = reinterpret_cast<uintptr_t>(a), y = reinterpret_cast<uintptr_t>(b);
  return x != y && x < y + bytes && y < x + bytes;
}

// The shape checks both ops share; batch rides on gridDim.y (at most 65535).
inline bool valid_shape(int batch, int seqlen, int heads, int head_dim, int groups, int d_state) {
  return batch >= 1 && batch <= 65535 && seqlen >= 1 && heads >= 1 && groups >= 1 && heads % groups == 0 &&
         supported_p(head_dim) && supported_n(d_state);
}

// dt_min >= 0, dt_max >= 0 (inf allowed); false for NaN
inline bool valid_dt_limits(float lo, float hi) { return lo >= 0.0f && lo <= 3.402823466e38f && hi >= 0.0f; }

inline size_t prefill_smem_bytes(int p, int n) { return prefill_smem_floats(p, n) * sizeof(float); }

template <class In, class State, class Out>
cudaError_t launch(const SsdArgs<In, State, Out>& args, cudaStream_t stream) {
  if (args.seqlen == 1) {
    const long long threads = static_cast<long long>(args.heads) * args.head_dim * (args.d_state / kDecodeStates);
    const dim3 grid(static_cast<unsigned>((threads + kDecodeThreads - 1) / kDecodeThreads), args.batch);
    JM_LAUNCH(grid, kDecodeThreads, 0, stream, ssd_decode_kernel<In, State, Out>)(args);
  } else {
    const size_t smem = prefill_smem_bytes(args.head_dim, args.d_state);
    if (smem > static_cast<size_t>(kDefaultSmem)) {  // P = 64, N = 128: 79 KB, 2 blocks per Orin SM
      const cudaError_t err = cudaFuncSetAttribute(ssd_prefill_kernel<In, State, Out>,
                                                   cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
      if (err != cudaSuccess) return err;
    }
    const dim3 grid(static_cast<unsigned>(args.heads), args.batch);
    JM_LAUNCH(grid, prefill_threads(args.head_dim, args.d_state), smem, stream,
              ssd_prefill_kernel<In, State, Out>)(args);
  }
  return cudaGetLastError();
}

}  // namespace jm_ssd
