// Atomics from every thread of every block, for the emulator's tests (run in threads mode too,
// where they really are concurrent).
#include "common/cuda_emu.h"

namespace jm_test {

struct AtomicOut {
  int counter;
  float fsum;
  int imax;
  int imin;
  unsigned long long ull_sum;
  unsigned cas_counter;
  double dsum;
};

__global__ void atomics_kernel(const int* keys, int nbins, unsigned* hist, AtomicOut* o) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  const int k = keys[t];
  atomicAdd(&o->counter, 1);
  atomicAdd(&o->fsum, 1.0f);
  atomicAdd(&o->dsum, 0.5);
  atomicAdd(&hist[k % nbins], 1u);
  atomicMax(&o->imax, k);
  atomicMin(&o->imin, k);
  atomicAdd(&o->ull_sum, static_cast<unsigned long long>(t));
  unsigned old = o->cas_counter;  // an increment by compare-and-swap
  for (;;) {
    const unsigned seen = atomicCAS(&o->cas_counter, old, old + 1);
    if (seen == old) break;
    old = seen;
  }
}

}  // namespace jm_test

extern "C" {

struct JmAtomicOut {
  int counter;
  float fsum;
  int imax;
  int imin;
  unsigned long long ull_sum;
  unsigned cas_counter;
  double dsum;
};

cudaError_t jm_test_atomics(const int* keys, int nbins, unsigned* hist, JmAtomicOut* out, int grid, int block) {
  static_assert(sizeof(JmAtomicOut) == sizeof(jm_test::AtomicOut), "layout");
  JM_LAUNCH(grid, block, 0, nullptr, jm_test::atomics_kernel)
  (keys, nbins, hist, reinterpret_cast<jm_test::AtomicOut*>(out));
  return cudaGetLastError();
}

}  // extern "C"
