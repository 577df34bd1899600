// A program for the ThreadSanitizer test: runs the shared-memory reduction with or without its
// barrier (argv[1] "good" / "bad") and the shuffle reduction, in the emulator's threads mode.
#include <cstdio>
#include <cstring>
#include <vector>

extern "C" {
struct JmReduceParams {
  const float* x;
  float* out;
  int n;
  int grid;
  int block;
};
int jm_test_block_sum_smem(const JmReduceParams* p, int with_barrier, void* stream);
int jm_test_block_sum_shfl(const JmReduceParams* p, void* stream);
int jm_emu_set_mode(const char* mode);
}

int main(int argc, char** argv) {
  const bool good = argc > 1 && std::strcmp(argv[1], "good") == 0;
  if (jm_emu_set_mode("threads") != 0) return 2;
  const int grid = 2, block = 64, n = grid * block;
  std::vector<float> x(n), out(2 * grid);
  for (int i = 0; i < n; ++i) x[i] = static_cast<float>(i % 5);
  JmReduceParams p{x.data(), out.data(), n, grid, block};
  if (jm_test_block_sum_smem(&p, good ? 1 : 0, nullptr) != 0) return 3;
  std::printf("smem %g %g\n", out[0], out[1]);
  if (jm_test_block_sum_shfl(&p, nullptr) != 0) return 4;
  std::printf("shfl %g %g\n", out[0], out[2]);
  return 0;
}
