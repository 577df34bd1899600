// The int4-weight GEMMs: W4A16Linear's kernels, and the pieces W4A8Linear (../w4a8_linear/) shares.
//
// Weight layout (compiler/ops/int4.py): qweight uint8 [N, K/2], two int4 codes a byte along K, the
// low nibble the even k, two's complement; scales fp16 [N, K/G], G a multiple of 32. A 16-byte load
// of a qweight row is 32 consecutive codes, always inside one group (k0 % 32 == 0, G % 32 == 0),
// so one scale applies to it.
//
// Two kernels per op, chosen by the launcher on M (rows of x):
//
// * GEMV, M <= kW4GemvMaxRows (decode: a batch of tokens). Memory-bound: the weights are read once,
//   with one 16-byte load per lane per row and chunk. A block is kGemvWarps warps; a warp owns
//   kGemvRowsPerWarp output channels (independent loads in flight) for all M rows of x. K is walked
//   in chunks of kGemvChunk = 32 lanes x 32 codes; the block stages the chunk of x (all M rows) in
//   shared memory once (converted to fp32, each lane's 32-value segment padded so that the lanes'
//   16-byte shared loads are free of bank conflicts), then each lane multiplies its 32 codes with
//   the 32 activations, scales the partial sum with its group's scale, and accumulates. A butterfly
//   of shuffles reduces the lanes' sums; lane r * M + m writes y[m, n_r].
// * GEMM, M > kW4GemvMaxRows (prefill). A 64 x 64 output tile per 256-thread block, 4 x 4 outputs
//   per thread, K in steps of 32 through shared memory. W4A16 dequantizes the weight tile into
//   shared memory as fp32 (scale * code is exact in fp32, so the tile holds the reference's very
//   weights; no fp16 rounding). Tensor-core mma (and cp.async double buffering) are future work.
//
// Numerics: every product is exact in fp32 (a 4-bit code times an fp16 activation or scale); only
// the order of the fp32 sums differs from the reference's (x @ W^T in torch), then one fp16
// rounding. The tests bound the difference by an error model (tests/plugins/w4a16_linear).
#pragma once

#include "common/cuda_emu.h"
#include "w4a16_linear/int4.cuh"
#include "w4a16_linear/w4a16_linear.h"

namespace jm_w4 {

// ---- W4A16 GEMV (decode) ------------------------------------------------------------------------------

template <int kM>
__global__ void __launch_bounds__(kGemvWarps * 32, kGemvMinBlocks)
    w4a16_gemv_kernel(const __half* __restrict__ x, const uint8_t* __restrict__ qweight,
                      const __half* __restrict__ scales, const float* __restrict__ bias, __half* __restrict__ y, int N,
                      int K, int G) {
  extern __shared__ float xs[];  // [kM][32 segments][kSegFloats]
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int row0 = (blockIdx.x * kGemvWarps + warp) * kGemvRowsPerWarp;
  const size_t row_bytes = static_cast<size_t>(K) / 2;
  const int groups = K / G;

  float acc[kGemvRowsPerWarp][kM];
#pragma unroll
  for (int r = 0; r < kGemvRowsPerWarp; ++r)
#pragma unroll
    for (int m = 0; m < kM; ++m) acc[r][m] = 0.0f;

  for (int k0 = 0; k0 < K; k0 += kGemvChunk) {
    const int len = K - k0 < kGemvChunk ? K - k0 : kGemvChunk;  // a multiple of 32
    const int vecs = len / 8;                                     // 8 fp16 a 16-byte load
    __syncthreads();                                              // the previous chunk is read
    for (int v = threadIdx.x; v < kM * vecs; v += blockDim.x) {
      const int m = v / vecs, e = (v - m * vecs) * 8;
      const uint4 raw = *reinterpret_cast<const uint4*>(x + static_cast<size_t>(m) * K + k0 + e);
      const __half2* h = reinterpret_cast<const __half2*>(&raw);
      float* dst = xs + (m * 32 + e / 32) * kSegFloats + e % 32;
      const float2 a = __half22float2(h[0]), b = __half22float2(h[1]), c = __half22float2(h[2]),
                   d = __half22float2(h[3]);
      *reinterpret_cast<float4*>(dst) = make_float4(a.x, a.y, b.x, b.y);
      *reinterpret_cast<float4*>(dst + 4) = make_float4(c.x, c.y, d.x, d.y);
    }
    __syncthreads();
    const int kl = lane * 32;  // this lane's codes in the chunk
    if (kl < len) {
#pragma unroll
      for (int r = 0; r < kGemvRowsPerWarp; ++r) {
        const int n = row0 + r;
        if (n < N) {
        const uint4 w = __ldg(reinterpret_cast<const uint4*>(qweight + static_cast<size_t>(n) * row_bytes + (k0 + kl) / 2));
        const float s = __half2float(scales[static_cast<size_t>(n) * groups + (k0 + kl) / G]);
        const unsigned words[4] = {w.x ^ 0x88888888u, w.y ^ 0x88888888u, w.z ^ 0x88888888u, w.w ^ 0x88888888u};
        float part[kM];
#pragma unroll
        for (int m = 0; m < kM; ++m) part[m] = 0.0f;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          float q[8];
#pragma unroll
          for (int j = 0; j < 8; ++j) q[j] = code_to_float(words[i], j);
#pragma unroll
          for (int m = 0; m < kM; ++m) {
            const float* seg = xs + (m * 32 + lane) * kSegFloats + 8 * i;
            const float4 a = *reinterpret_cast<const float4*>(seg);
            const float4 b = *reinterpret_cast<const float4*>(seg + 4);
            float p = part[m];
            p = fmaf(q[0], a.x, p);
            p = fmaf(q[1], a.y, p);
            p = fmaf(q[2], a.z, p);
            p = fmaf(q[3], a.w, p);
            p = fmaf(q[4], b.x, p);
            p = fmaf(q[5], b.y, p);
            p = fmaf(q[6], b.z, p);
            p = fmaf(q[7], b.w, p);
            part[m] = p;
          }
        }
#pragma unroll
        for (int m = 0; m < kM; ++m) acc[r][m] = fmaf(s, part[m], acc[r][m]);
        }
      }
    }
  }
  // every lane ends with the sums; lane r * kM + m writes y[m, row0 + r]
#pragma unroll
  for (int r = 0; r < kGemvRowsPerWarp; ++r) {
#pragma unroll
    for (int m = 0; m < kM; ++m) {
      const float v = warp_sum(acc[r][m]);
      const int n = row0 + r;
      if (lane == r * kM + m && n < N) {
        y[static_cast<size_t>(m) * N + n] = __float2half_rn(bias != nullptr ? v + bias[n] : v);
      }
    }
  }
}

// ---- W4A16 GEMM (prefill) -------------------------------------------------------------------------------

__global__ void __launch_bounds__(kGemmThreads)
    w4a16_gemm_kernel(const __half* __restrict__ x, const uint8_t* __restrict__ qweight,
                      const __half* __restrict__ scales, const float* __restrict__ bias, __half* __restrict__ y, int M,
                      int N, int K, int G) {
  __shared__ __align__(16) float As[kTileK][kTile];  // x tile, k-major: As[k][m]
  __shared__ __align__(16) float Bs[kTileK][kTile];  // dequantized weights, k-major: Bs[k][n]
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const int m0 = blockIdx.y * kTile, n0 = blockIdx.x * kTile;
  const int lr = threadIdx.x >> 2;  // the tile row this thread stages
  const int lq = threadIdx.x & 3;   // ... and its quarter of the 32 k
  const size_t row_bytes = static_cast<size_t>(K) / 2;
  const int groups = K / G;
  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

  for (int k0 = 0; k0 < K; k0 += kTileK) {
    {  // x: 8 fp16 a thread (16 bytes); rows past M are zeros
      const int m = m0 + lr;
      float v[8];
      if (m < M) {
        const uint4 raw = *reinterpret_cast<const uint4*>(x + static_cast<size_t>(m) * K + k0 + lq * 8);
        const __half2* h = reinterpret_cast<const __half2*>(&raw);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const float2 f = __half22float2(h[j]);
          v[2 * j] = f.x;
          v[2 * j + 1] = f.y;
        }
      } else {
#pragma unroll
        for (int j = 0; j < 8; ++j) v[j] = 0.0f;
      }
#pragma unroll
      for (int j = 0; j < 8; ++j) As[lq * 8 + j][lr] = v[j];
    }
    {  // weights: 8 codes a thread (4 bytes), times the group's scale (exact); rows past N are zeros
      const int n = n0 + lr;
      float v[8];
      if (n < N) {
        const unsigned w =
            __ldg(reinterpret_cast<const unsigned*>(qweight + static_cast<size_t>(n) * row_bytes + (k0 + lq * 8) / 2)) ^
            0x88888888u;
        const float s = __half2float(scales[static_cast<size_t>(n) * groups + k0 / G]);
#pragma unroll
        for (int j = 0; j < 8; ++j) v[j] = s * code_to_float(w, j);
      } else {
#pragma unroll
        for (int j = 0; j < 8; ++j) v[j] = 0.0f;
      }
#pragma unroll
      for (int j = 0; j < 8; ++j) Bs[lq * 8 + j][lr] = v[j];
    }
    __syncthreads();
#pragma unroll 8
    for (int kk = 0; kk < kTileK; ++kk) {
      const float4 a = *reinterpret_cast<const float4*>(&As[kk][ty * 4]);
      const float4 b = *reinterpret_cast<const float4*>(&Bs[kk][tx * 4]);
      const float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int m = m0 + ty * 4 + i;
    if (m >= M) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int n = n0 + tx * 4 + j;
      if (n < N) y[static_cast<size_t>(m) * N + n] = __float2half_rn(bias != nullptr ? acc[i][j] + bias[n] : acc[i][j]);
    }
  }
}

// ---- launching --------------------------------------------------------------------------------------------

template <int kM>
cudaError_t launch_w4a16_gemv(const JmW4A16LinearParams& p, cudaStream_t stream) {
  const int blocks = (p.N + kGemvRowsPerBlock - 1) / kGemvRowsPerBlock;
  JM_LAUNCH(blocks, kGemvWarps * 32, gemv_smem_bytes(kM, kSegFloats * 4), stream, w4a16_gemv_kernel<kM>)(
      static_cast<const __half*>(p.x), p.qweight, static_cast<const __half*>(p.scales), p.bias,
      static_cast<__half*>(p.y), p.N, p.K, p.group_size);
  return cudaGetLastError();
}

inline cudaError_t launch_w4a16(const JmW4A16LinearParams& p, cudaStream_t stream) {
  switch (p.M) {
    case 1: return launch_w4a16_gemv<1>(p, stream);
    case 2: return launch_w4a16_gemv<2>(p, stream);
    case 3: return launch_w4a16_gemv<3>(p, stream);
    case 4: return launch_w4a16_gemv<4>(p, stream);
    case 5: return launch_w4a16_gemv<5>(p, stream);
    case 6: return launch_w4a16_gemv<6>(p, stream);
    case 7: return launch_w4a16_gemv<7>(p, stream);
    case 8: return launch_w4a16_gemv<8>(p, stream);
    default: break;
  }
  const dim3 grid((p.N + kTile - 1) / kTile, (p.M + kTile - 1) / kTile);
  JM_LAUNCH(grid, kGemmThreads, 0, stream, w4a16_gemm_kernel)(
      static_cast<const __half*>(p.x), p.qweight, static_cast<const __half*>(p.scales), p.bias,
      static_cast<__half*>(p.y), p.M, p.N, p.K, p.group_size);
  return cudaGetLastError();
}

}  // namespace jm_w4
