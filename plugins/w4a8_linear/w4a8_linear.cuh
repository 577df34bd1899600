// W4A8Linear's kernels: int4 codes times int8 activations with __dp4a (four byte products added to an
// int32 a instruction). The structure (GEMV for M <= 8, 64 x 64 tiled GEMM beyond), the weight
// layout and the argument checks are W4A16Linear's (../w4a16_linear/w4a16_linear.cuh).
//
// Codes to bytes: a qweight word holds 8 codes, k = 8i .. 8i+7, the even k in the low nibbles.
// low_codes / high_codes turn its even / odd nibbles into four signed bytes each without carries
// between bytes (three ALU operations for four codes).
// * GEMV: the activations are staged in shared memory *permuted* to match: per 8 k, a word of the
//   even-k bytes and a word of the odd-k bytes (__byte_perm), so a lane needs 2 __dp4a per 8 codes and
//   row of x and no byte shuffling in the inner loop. Each lane's 32-code slice sums to an exact int32,
//   which is scaled by its group's scale and added in fp32 (so a group of G > 32 is summed as G / 32
//   fp32-scaled integer partials: the same products, rounded per partial).
// * GEMM: weights are staged sign-extended in natural k order (__byte_perm of the two halves), x tiles
//   as they are; the int32 sums of a whole group are kept per output and scaled once at the group's
//   end, exactly the definition's order of operations (only the fp32 sum over groups may differ).
#pragma once

#include "common/cuda_emu.h"
#include "w4a16_linear/int4.cuh"
#include "w4a8_linear/w4a8_linear.h"

namespace jm_w4 {

constexpr int kSegBytes8 = 48;  // a lane's 32 int8 activations + 16 bytes of padding (bank spread)
constexpr int kTileWords = kTileK / 4 + 1;  // int32 words of a GEMM tile row: 8 + 1 of padding

// ---- W4A8 GEMV (decode) ------------------------------------------------------------------------------

template <int kM>
__global__ void __launch_bounds__(kGemvWarps * 32, kGemvMinBlocks)
    w4a8_gemv_kernel(const int8_t* __restrict__ x, const uint8_t* __restrict__ qweight,
                     const __half* __restrict__ scales, const float* __restrict__ bias, __half* __restrict__ y, int N,
                     int K, int G, float x_scale) {
  extern __shared__ uint4 xs8[];  // [kM][32 segments][3 uint4]: even / odd words per 8 k, then padding
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int row0 = (blockIdx.x * kGemvWarps + warp) * kGemvRowsPerWarp;
  const size_t row_bytes = static_cast<size_t>(K) / 2;
  const int groups = K / G;
  constexpr int kSegVecs = kSegBytes8 / 16;

  float acc[kGemvRowsPerWarp][kM];
#pragma unroll
  for (int r = 0; r < kGemvRowsPerWarp; ++r)
#pragma unroll
    for (int m = 0; m < kM; ++m) acc[r][m] = 0.0f;

  for (int k0 = 0; k0 < K; k0 += kGemvChunk) {
    const int len = K - k0 < kGemvChunk ? K - k0 : kGemvChunk;  // a multiple of 32
    const int vecs = len / 16;                                    // 16 int8 a 16-byte load
    __syncthreads();
    for (int v = threadIdx.x; v < kM * vecs; v += blockDim.x) {
      const int m = v / vecs, e = (v - m * vecs) * 16;
      const uint4 raw = *reinterpret_cast<const uint4*>(x + static_cast<size_t>(m) * K + k0 + e);
      uint4 perm;  // per 8 k: the even-k bytes, then the odd-k bytes
      perm.x = __byte_perm(raw.x, raw.y, 0x6420);
      perm.y = __byte_perm(raw.x, raw.y, 0x7531);
      perm.z = __byte_perm(raw.z, raw.w, 0x6420);
      perm.w = __byte_perm(raw.z, raw.w, 0x7531);
      xs8[(m * 32 + e / 32) * kSegVecs + (e % 32) / 16] = perm;
    }
    __syncthreads();
    const int kl = lane * 32;
    if (kl < len) {
#pragma unroll
      for (int r = 0; r < kGemvRowsPerWarp; ++r) {
        const int n = row0 + r;
        if (n < N) {
        const uint4 w = __ldg(reinterpret_cast<const uint4*>(qweight + static_cast<size_t>(n) * row_bytes + (k0 + kl) / 2));
        const float s = __half2float(scales[static_cast<size_t>(n) * groups + (k0 + kl) / G]);
        const unsigned words[4] = {w.x, w.y, w.z, w.w};
        int lo[4], hi[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          lo[i] = low_codes(words[i]);
          hi[i] = high_codes(words[i]);
        }
#pragma unroll
        for (int m = 0; m < kM; ++m) {
          const uint4* seg = xs8 + (m * 32 + lane) * kSegVecs;
          const uint4 a = seg[0], b = seg[1];
          int isum = 0;
          isum = __dp4a(lo[0], static_cast<int>(a.x), isum);
          isum = __dp4a(hi[0], static_cast<int>(a.y), isum);
          isum = __dp4a(lo[1], static_cast<int>(a.z), isum);
          isum = __dp4a(hi[1], static_cast<int>(a.w), isum);
          isum = __dp4a(lo[2], static_cast<int>(b.x), isum);
          isum = __dp4a(hi[2], static_cast<int>(b.y), isum);
          isum = __dp4a(lo[3], static_cast<int>(b.z), isum);
          isum = __dp4a(hi[3], static_cast<int>(b.w), isum);
          acc[r][m] = fmaf(s, static_cast<float>(isum), acc[r][m]);
        }
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kGemvRowsPerWarp; ++r) {
#pragma unroll
    for (int m = 0; m < kM; ++m) {
      const float v = warp_sum(acc[r][m]) * x_scale;
      const int n = row0 + r;
      if (lane == r * kM + m && n < N) {
        y[static_cast<size_t>(m) * N + n] = __float2half_rn(bias != nullptr ? v + bias[n] : v);
      }
    }
  }
}

// ---- W4A8 GEMM (prefill) -------------------------------------------------------------------------------

__global__ void __launch_bounds__(kGemmThreads)
    w4a8_gemm_kernel(const int8_t* __restrict__ x, const uint8_t* __restrict__ qweight,
                     const __half* __restrict__ scales, const float* __restrict__ bias, __half* __restrict__ y, int M,
                     int N, int K, int G, float x_scale) {
  __shared__ int As[kTile][kTileWords];  // x tile: 4 int8 a word, natural k order
  __shared__ int Bs[kTile][kTileWords];  // sign-extended codes, natural k order
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const int m0 = blockIdx.y * kTile, n0 = blockIdx.x * kTile;
  const int lr = threadIdx.x >> 2, lq = threadIdx.x & 3;
  const size_t row_bytes = static_cast<size_t>(K) / 2;
  const int groups = K / G;
  int isum[4][4];
  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      isum[i][j] = 0;
      acc[i][j] = 0.0f;
    }

  for (int k0 = 0; k0 < K; k0 += kTileK) {
    {  // x: 8 int8 a thread; rows past M are zeros
      const int m = m0 + lr;
      uint2 v = make_uint2(0u, 0u);
      if (m < M) v = *reinterpret_cast<const uint2*>(x + static_cast<size_t>(m) * K + k0 + lq * 8);
      As[lr][2 * lq] = static_cast<int>(v.x);
      As[lr][2 * lq + 1] = static_cast<int>(v.y);
    }
    {  // weights: 8 codes a thread, as two words of signed bytes in k order; rows past N are zeros
      const int n = n0 + lr;
      int even = 0, odd = 0;
      if (n < N) {
        const unsigned w =
            __ldg(reinterpret_cast<const unsigned*>(qweight + static_cast<size_t>(n) * row_bytes + (k0 + lq * 8) / 2));
        even = low_codes(w);   // k 0, 2, 4, 6
        odd = high_codes(w);   // k 1, 3, 5, 7
      }
      Bs[lr][2 * lq] = static_cast<int>(__byte_perm(even, odd, 0x5140));      // k 0, 1, 2, 3
      Bs[lr][2 * lq + 1] = static_cast<int>(__byte_perm(even, odd, 0x7362));  // k 4, 5, 6, 7
    }
    __syncthreads();
#pragma unroll
    for (int kw = 0; kw < kTileK / 4; ++kw) {
      int a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = As[ty * 4 + i][kw];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = Bs[tx * 4 + j][kw];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) isum[i][j] = __dp4a(a[i], b[j], isum[i][j]);
    }
    __syncthreads();
    if ((k0 + kTileK) % G == 0) {  // a group ends: scale its exact sums once
      const int g = k0 / G;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int n = n0 + tx * 4 + j;
        const float s = n < N ? __half2float(scales[static_cast<size_t>(n) * groups + g]) : 0.0f;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          acc[i][j] = fmaf(s, static_cast<float>(isum[i][j]), acc[i][j]);
          isum[i][j] = 0;
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int m = m0 + ty * 4 + i;
    if (m >= M) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int n = n0 + tx * 4 + j;
      if (n < N) {
        const float v = acc[i][j] * x_scale;
        y[static_cast<size_t>(m) * N + n] = __float2half_rn(bias != nullptr ? v + bias[n] : v);
      }
    }
  }
}

// ---- launching --------------------------------------------------------------------------------------------

template <int kM>
cudaError_t launch_w4a8_gemv(const JmW4A8LinearParams& p, cudaStream_t stream) {
  const int blocks = (p.N + kGemvRowsPerBlock - 1) / kGemvRowsPerBlock;
  JM_LAUNCH(blocks, kGemvWarps * 32, gemv_smem_bytes(kM, kSegBytes8), stream, w4a8_gemv_kernel<kM>)(
      p.x, p.qweight, static_cast<const __half*>(p.scales), p.bias, static_cast<__half*>(p.y), p.N, p.K,
      p.group_size, p.x_scale);
  return cudaGetLastError();
}

inline cudaError_t launch_w4a8(const JmW4A8LinearParams& p, cudaStream_t stream) {
  switch (p.M) {
    case 1: return launch_w4a8_gemv<1>(p, stream);
    case 2: return launch_w4a8_gemv<2>(p, stream);
    case 3: return launch_w4a8_gemv<3>(p, stream);
    case 4: return launch_w4a8_gemv<4>(p, stream);
    case 5: return launch_w4a8_gemv<5>(p, stream);
    case 6: return launch_w4a8_gemv<6>(p, stream);
    case 7: return launch_w4a8_gemv<7>(p, stream);
    case 8: return launch_w4a8_gemv<8>(p, stream);
    default: break;
  }
  const dim3 grid((p.N + kTile - 1) / kTile, (p.M + kTile - 1) / kTile);
  JM_LAUNCH(grid, kGemmThreads, 0, stream, w4a8_gemm_kernel)(p.x, p.qweight, static_cast<const __half*>(p.scales),
                                                             p.bias, static_cast<__half*>(p.y), p.M, p.N, p.K,
                                                             p.group_size, p.x_scale);
  return cudaGetLastError();
}

}  // namespace jm_w4
