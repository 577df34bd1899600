// C launchers of the reduction kernels: a params struct in, a cudaError_t out.
#include "reduce.cuh"

extern "C" {

struct JmReduceParams {
  const float* x;
  float* out;  // one value per block (smem), two per block (shfl)
  int n;
  int grid;
  int block;
};

cudaError_t jm_test_block_sum_smem(const JmReduceParams* p, int with_barrier, cudaStream_t stream) {
  const size_t smem = static_cast<size_t>(p->block) * sizeof(float);
  if (with_barrier) {
    JM_LAUNCH(p->grid, p->block, smem, stream, jm_test::block_sum_smem<true>)(p->x, p->out, p->n);
  } else {
    JM_LAUNCH(p->grid, p->block, smem, stream, jm_test::block_sum_smem<false>)(p->x, p->out, p->n);
  }
  return cudaGetLastError();
}

cudaError_t jm_test_block_sum_shfl(const JmReduceParams* p, cudaStream_t stream) {
  JM_LAUNCH(p->grid, p->block, 0, stream, jm_test::block_sum_shfl)(p->x, p->out, p->n);
  return cudaGetLastError();
}

}  // extern "C"
