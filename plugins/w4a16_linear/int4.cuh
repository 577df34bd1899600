// The pieces both int4-weight GEMMs share (W4A16Linear here, W4A8Linear in ../w4a8_linear/): the
// tiling constants, code unpacking and the launchers' argument checks. See w4a16_linear.cuh for
// the kernels' design.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "common/cuda_emu.h"

namespace jm_w4 {


constexpr int kGemvMaxRows = 8;      // M up to this takes the GEMV (templated on M: 1..8)
constexpr int kGemvWarps = 8;        // warps of a GEMV block
constexpr int kGemvRowsPerWarp = 2;  // output channels of a warp
// Two GEMV blocks an SM at least: caps registers at 128. Without a minimum, ptxas 13.0 chose 48-64
// registers for some M and spilled (sm_87 M = 5, sm_110 M = 4..7); with it none spills.
constexpr int kGemvMinBlocks = 2;
constexpr int kGemvRowsPerBlock = kGemvWarps * kGemvRowsPerWarp;
constexpr int kGemvChunk = 32 * 32;  // k per chunk: 32 lanes x one 16-byte load (32 codes)
constexpr int kSegFloats = 36;       // a lane's 32 fp32 activations + 4 floats of padding (bank spread)
constexpr int kTile = 64;            // GEMM output tile (M and N)
constexpr int kTileK = 32;           // GEMM k step: one group slice
constexpr int kGemmThreads = 256;
constexpr long long kMaxRows = 65535LL * kTile;  // gridDim.y limit of the GEMM

// ---- shared helpers ---------------------------------------------------------------------------------

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
  return v;
}

// Code j (0..7) of a qweight word XORed with 0x88888888, as fp32: the nibble u = q + 8 becomes
// the low bits of the float 2^23 + u, and subtracting 2^23 + 8 leaves q exactly (one lop3 and one
// add instead of a conversion instruction).
__device__ __forceinline__ float code_to_float(unsigned biased_word, int j) {
  return __uint_as_float(0x4B000000u | ((biased_word >> (4 * j)) & 0xFu)) - 8388616.0f;
}

// The four codes of the even (low) or odd (high) nibbles of a word as four signed bytes: each
// byte u = (nibble ^ 8) = q + 8 in 0..15, plus 0x78 = q + 128 (no carry between bytes), XOR 0x80 =
// q in two's complement.
__device__ __forceinline__ int low_codes(unsigned word) {
  return static_cast<int>((((word & 0x0F0F0F0Fu) ^ 0x08080808u) + 0x78787878u) ^ 0x80808080u);
}
__device__ __forceinline__ int high_codes(unsigned word) { return low_codes(word >> 4); }

// Argument checks shared by both launchers (nothing launched on a failure).
inline bool aligned_to(const void* p, size_t bytes) { return reinterpret_cast<size_t>(p) % bytes == 0; }

inline bool overlaps(const void* a, size_t a_bytes, const void* b, size_t b_bytes) {
  if (a == nullptr || b == nullptr) return false;
  const size_t x = reinterpret_cast<size_t>(a), y = reinterpret_cast<size_t>(b);
  return x < y + b_bytes && y < x + a_bytes;
}

inline bool check_common(const void* x, size_t x_elem, const void* qweight, const void* scales, const float* bias,
                         const void* y, int M, int N, int K, int G) {
  if (x == nullptr || qweight == nullptr || scales == nullptr || y == nullptr) return false;
  if (M < 0 || N < 1 || K < 1 || G < 32 || G % 32 != 0 || K % G != 0 || M > kMaxRows) return false;
  if (!aligned_to(x, 16) || !aligned_to(qweight, 16) || !aligned_to(scales, 2) || !aligned_to(y, 2) ||
      (bias != nullptr && !aligned_to(bias, 4)))
    return false;
  const size_t y_bytes = static_cast<size_t>(M) * N * 2;
  return !overlaps(y, y_bytes, x, static_cast<size_t>(M) * K * x_elem) &&
         !overlaps(y, y_bytes, qweight, static_cast<size_t>(N) * (K / 2)) &&
         !overlaps(y, y_bytes, scales, static_cast<size_t>(N) * (K / G) * 2) &&
         !overlaps(y, y_bytes, bias, static_cast<size_t>(N) * 4);
}

inline size_t gemv_smem_bytes(int rows, int seg_bytes) { return static_cast<size_t>(rows) * 32 * seg_bytes; }

}  // namespace jm_w4
