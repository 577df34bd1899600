// jetmamba::W4A8Linear: int4 weights with grouped fp16 scales, int8 activations with a static
// per-tensor scale, fp16 output. Plain C interface (no TensorRT types). See README.md.
//
//   y[m, n] = fp16(x_scale * sum_g scales[n, g] * (sum_{k in g} q[n, k] * x[m, k]) + bias[n])
// the inner sums in int32 (__dp4a), the sum over groups in fp32. Weight layout as W4A16Linear.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "common/cuda_emu.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct JmW4A8LinearParams {
  const int8_t* x;         // [M, K], 16-byte aligned
  const uint8_t* qweight;  // [N, K/2], 16-byte aligned
  const void* scales;      // fp16 [N, K/G]
  const float* bias;       // [N], or NULL
  void* y;                 // fp16 [M, N]
  int M;                   // rows of x (b * l), >= 0; 0 launches nothing. 1..8: the decode GEMV
  int N;                   // output channels, >= 1
  int K;                   // input channels, a multiple of group_size
  int group_size;          // G: a multiple of 32 (the layout's 128, 64 or 32)
  float x_scale;           // > 0, finite
} JmW4A8LinearParams;

// cudaErrorInvalidValue (nothing launched, nothing written) as jm_w4a16_linear, and for an x_scale
// that is not positive and finite.
cudaError_t jm_w4a8_linear(const JmW4A8LinearParams* p, cudaStream_t stream);

size_t jm_w4a8_linear_params_size(void);

#ifdef __cplusplus
}
#endif
