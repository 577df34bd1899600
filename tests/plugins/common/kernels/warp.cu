// Warp-level kernels for the emulator's tests: votes with partial masks, the four shuffles with
// widths, a __shfl_up_sync block scan, match / reduce, and the built-in index variables.
#include "common/cuda_emu.h"

namespace jm_test {

constexpr unsigned kFull = 0xffffffffu;

// Lanes in `mask` vote on pred[t]; the others write sentinels. The same mask in every warp.
__global__ void vote_kernel(const int* pred, unsigned mask, unsigned* ballot, int* any, int* all) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  const int lane = threadIdx.x & 31;
  if ((mask >> lane) & 1u) {
    ballot[t] = __ballot_sync(mask, pred[t]);
    any[t] = __any_sync(mask, pred[t]);
    all[t] = __all_sync(mask, pred[t]);
  } else {
    ballot[t] = 0xdeadbeefu;
    any[t] = -1;
    all[t] = -1;
  }
}

// op 0: __shfl_sync(src = param), 1: up(delta = param), 2: down(delta = param), 3: xor(laneMask = param)
__global__ void shfl_kernel(const int* val, const int* param, int op, int width, unsigned mask, int* out) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  const int lane = threadIdx.x & 31;
  if (!((mask >> lane) & 1u)) {
    out[t] = -2;
    return;
  }
  const int v = val[t];
  const int p = param[t];
  int r = 0;
  switch (op) {
    case 0: r = __shfl_sync(mask, v, p, width); break;
    case 1: r = __shfl_up_sync(mask, v, static_cast<unsigned>(p), width); break;
    case 2: r = __shfl_down_sync(mask, v, static_cast<unsigned>(p), width); break;
    default: r = __shfl_xor_sync(mask, v, p, width); break;
  }
  out[t] = r;
}

// 64-bit and 16-bit payloads go through the same exchange.
__global__ void shfl_types_kernel(const double* d, const __half* h, double* dout, __half* hout) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  dout[t] = __shfl_xor_sync(kFull, d[t], 5);
  hout[t] = __shfl_sync(kFull, h[t], 31 - (threadIdx.x & 31));
}

// Inclusive scan of each block's values: __shfl_up_sync within warps, warp totals through static
// shared memory. Any block size up to 1024 (a partial last warp included).
__global__ void block_scan_kernel(const int* x, int* out) {
  __shared__ int warp_total[32];
  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int g = blockIdx.x * blockDim.x + tid;
  int v = x[g];
  for (int o = 1; o < 32; o <<= 1) {
    const int y = __shfl_up_sync(kFull, v, o);
    if (lane >= o) v += y;
  }
  const int nwarps = (blockDim.x + 31) / 32;
  if (lane == 31 || tid == static_cast<int>(blockDim.x) - 1) warp_total[warp] = v;
  __syncthreads();
  if (warp == 0) {
    int w = lane < nwarps ? warp_total[lane] : 0;
    for (int o = 1; o < 32; o <<= 1) {
      const int y = __shfl_up_sync(kFull, w, o);
      if (lane >= o) w += y;
    }
    if (lane < nwarps) warp_total[lane] = w;
  }
  __syncthreads();
  if (warp > 0) v += warp_total[warp - 1];
  out[g] = v;
}

__global__ void match_reduce_kernel(const int* x, unsigned* match_any, int* match_all, int* red_add, int* red_min,
                                    unsigned* red_max_u, unsigned* red_or, int* count) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  const int v = x[t];
  match_any[t] = __match_any_sync(kFull, v);
  int pred = 0;
  const unsigned m = __match_all_sync(kFull, v & 1, &pred);
  match_all[t] = pred ? static_cast<int>(m == kFull) : -1;
  red_add[t] = __reduce_add_sync(kFull, v);
  red_min[t] = __reduce_min_sync(kFull, v);
  red_max_u[t] = __reduce_max_sync(kFull, static_cast<unsigned>(v));
  red_or[t] = __reduce_or_sync(kFull, static_cast<unsigned>(v));
  count[t] = __syncthreads_count(v > 0) * 10 + __syncthreads_and(v > -1000) * 2 + __syncthreads_or(v > 1000000);
}

// Every thread writes its coordinates (12 ints) at its global linear index.
__global__ void index_kernel(int* out) {
  const int tl = threadIdx.x + threadIdx.y * blockDim.x + threadIdx.z * blockDim.x * blockDim.y;
  const int bl = blockIdx.x + blockIdx.y * gridDim.x + blockIdx.z * gridDim.x * gridDim.y;
  int* o = out + 12 * (bl * blockDim.x * blockDim.y * blockDim.z + tl);
  o[0] = threadIdx.x;
  o[1] = threadIdx.y;
  o[2] = threadIdx.z;
  o[3] = blockIdx.x;
  o[4] = blockIdx.y;
  o[5] = blockIdx.z;
  o[6] = blockDim.x;
  o[7] = blockDim.y;
  o[8] = blockDim.z;
  o[9] = gridDim.x;
  o[10] = gridDim.y;
  o[11] = gridDim.z;
}

// Threads past `active` return at once; the others still meet at __syncthreads (exited threads
// count as arrived) and exchange values through shared memory.
__global__ void early_exit_kernel(int active, int* out) {
  __shared__ int s[1024];
  const int tid = threadIdx.x;
  if (tid >= active) return;
  s[tid] = tid * 3;
  __syncthreads();
  out[blockIdx.x * blockDim.x + tid] = s[active - 1 - tid];
}

// A template-id with a comma goes through JM_LAUNCH as it is; parameters convert as in a real launch
// and each thread owns its by-value copies.
template <typename T, int kScale>
__global__ void scale_kernel(const T* x, T* y, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (threadIdx.x == 0) n = 0;  // changes thread 0's copy only
  if (i < n) y[i] = x[i] * static_cast<T>(kScale);
}

}  // namespace jm_test

extern "C" {

cudaError_t jm_test_scale(const int* x, int* y, long n) {
  JM_LAUNCH((n + 63) / 64, 64, 0, nullptr, jm_test::scale_kernel<int, 3>)(x, y, n);  // long -> int
  return cudaGetLastError();
}

cudaError_t jm_test_vote(const int* pred, unsigned mask, unsigned* ballot, int* any, int* all, int grid, int block) {
  JM_LAUNCH(grid, block, 0, nullptr, jm_test::vote_kernel)(pred, mask, ballot, any, all);
  return cudaGetLastError();
}

cudaError_t jm_test_shfl(const int* val, const int* param, int op, int width, unsigned mask, int* out, int grid,
                         int block) {
  JM_LAUNCH(grid, block, 0, nullptr, jm_test::shfl_kernel)(val, param, op, width, mask, out);
  return cudaGetLastError();
}

cudaError_t jm_test_shfl_types(const double* d, const unsigned short* h, double* dout, unsigned short* hout, int grid,
                               int block) {
  JM_LAUNCH(grid, block, 0, nullptr, jm_test::shfl_types_kernel)
  (d, reinterpret_cast<const __half*>(h), dout, reinterpret_cast<__half*>(hout));
  return cudaGetLastError();
}

cudaError_t jm_test_block_scan(const int* x, int* out, int grid, int block) {
  JM_LAUNCH(grid, block, 0, nullptr, jm_test::block_scan_kernel)(x, out);
  return cudaGetLastError();
}

cudaError_t jm_test_match_reduce(const int* x, unsigned* match_any, int* match_all, int* red_add, int* red_min,
                                 unsigned* red_max_u, unsigned* red_or, int* count, int grid, int block) {
  JM_LAUNCH(grid, block, 0, nullptr, jm_test::match_reduce_kernel)
  (x, match_any, match_all, red_add, red_min, red_max_u, red_or, count);
  return cudaGetLastError();
}

cudaError_t jm_test_index(int* out, const unsigned* grid, const unsigned* block) {
  JM_LAUNCH(dim3(grid[0], grid[1], grid[2]), dim3(block[0], block[1], block[2]), 0, nullptr, jm_test::index_kernel)
  (out);
  return cudaGetLastError();
}

cudaError_t jm_test_early_exit(int active, int* out, int grid, int block) {
  JM_LAUNCH(grid, block, 0, nullptr, jm_test::early_exit_kernel)(active, out);
  return cudaGetLastError();
}

}  // extern "C"
