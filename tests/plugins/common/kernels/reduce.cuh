// Block reductions written as real CUDA kernels: one through shared memory and __syncthreads, one
// through warp shuffles. Used by the emulator's tests (and compiled by nvcc for sm_87).
#pragma once

#include "common/cuda_emu.h"

namespace jm_test {

// Tree reduction in dynamic shared memory (blockDim.x floats); any block size. With kBarrier false
// the barrier between filling shared memory and reading it is missing: a deliberate race.
template <bool kBarrier>
__global__ void block_sum_smem(const float* __restrict__ x, float* __restrict__ out, int n) {
  extern __shared__ float sdata[];
  const int tid = threadIdx.x;
  float acc = 0.0f;
  for (int i = blockIdx.x * blockDim.x + tid; i < n; i += gridDim.x * blockDim.x) acc += x[i];
  sdata[tid] = acc;
  if (kBarrier) __syncthreads();
  int span = 1;
  while (span < static_cast<int>(blockDim.x)) span <<= 1;
  for (int s = span / 2; s > 0; s >>= 1) {
    if (tid < s && tid + s < static_cast<int>(blockDim.x)) sdata[tid] += sdata[tid + s];
    __syncthreads();
  }
  if (tid == 0) out[blockIdx.x] = sdata[0];
}

// Sum over the lanes of a warp that exist (`lanes` of them, from lane 0): __shfl_down_sync tree.
__device__ __forceinline__ float warp_sum_down(float v, unsigned mask, int lanes) {
  const int lane = threadIdx.x & 31;
  for (int off = 16; off > 0; off >>= 1) {
    const float o = __shfl_down_sync(mask, v, off);
    if (lane + off < lanes) v += o;
  }
  return v;  // complete in lane 0
}

// Butterfly: every lane of a full warp ends with the sum.
__device__ __forceinline__ float warp_sum_xor(float v) {
  for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
  return v;
}

// Warp shuffles within warps, static shared memory between them. Any block size up to 1024;
// a partial last warp uses the mask of its existing lanes. out[2*block] from the xor butterfly
// path (full warps only, else the down tree), out[2*block+1] from the down tree.
__global__ void block_sum_shfl(const float* __restrict__ x, float* __restrict__ out, int n) {
  __shared__ float warp_down[32];
  __shared__ float warp_xor[32];
  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int nthreads = blockDim.x;
  const int lanes = min(32, nthreads - warp * 32);
  const unsigned mask = __ballot_sync(0xffffffffu, 1);  // the lanes of this warp that exist
  float acc = 0.0f;
  for (int i = blockIdx.x * nthreads + tid; i < n; i += gridDim.x * nthreads) acc += x[i];
  const float down = warp_sum_down(acc, mask, lanes);
  const float butterfly = lanes == 32 ? warp_sum_xor(acc) : down;
  if (lane == 0) {
    warp_down[warp] = down;
    warp_xor[warp] = butterfly;
  }
  __syncthreads();
  const int nwarps = (nthreads + 31) / 32;
  if (warp == 0) {
    const float a = lane < nwarps ? warp_down[lane] : 0.0f;
    const float b = lane < nwarps ? warp_xor[lane] : 0.0f;
    const float sa = warp_sum_down(a, mask, lanes);
    const float sb = warp_sum_down(b, mask, lanes);
    if (lane == 0) {
      out[2 * blockIdx.x] = sb;
      out[2 * blockIdx.x + 1] = sa;
    }
  }
}

}  // namespace jm_test
