// Kernels that break CUDA's rules, each the way a real bug would: the emulator must fail the
// launch with a message instead of hanging or returning garbage quietly.
#include "common/cuda_emu.h"

namespace jm_test {

__global__ void faulty_kernel(int which, int* out) {
  const int tid = threadIdx.x;
  const int lane = tid & 31;
  int v = tid;
  switch (which) {
    case 0:  // deadlock: lane 0 waits in a shuffle for lanes that wait at __syncthreads
      if (tid == 0) v = __shfl_sync(0xffffffffu, v, 1);
      else __syncthreads();
      break;
    case 1:  // the calling lane is not in its mask
      v = __ballot_sync(1u << ((lane + 1) & 31), 1);
      break;
    case 2:  // lanes naming each other make different calls
      if (lane & 1) v = __any_sync(0xffffffffu, 1);
      else v = static_cast<int>(__ballot_sync(0xffffffffu, 1));
      break;
    case 3:  // width is not a power of two
      v = __shfl_sync(0xffffffffu, v, 0, 12);
      break;
    case 4:  // warp 1 waits in a shuffle for its lane 8, which waits at __syncthreads; warp 0 exits
      if (tid == 40) __syncthreads();
      else v = __shfl_sync(0xffffffffu, v, 0);
      break;
    case 5:
      if (tid == 3) __trap();
      __syncthreads();
      break;
    default:
      break;
  }
  out[blockIdx.x * blockDim.x + tid] = v;
}

}  // namespace jm_test

extern "C" cudaError_t jm_test_faulty(int which, int* out, int grid, int block, size_t smem) {
  JM_LAUNCH(grid, block, smem, nullptr, jm_test::faulty_kernel)(which, out);
  return cudaGetLastError();
}
