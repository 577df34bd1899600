// jetmamba::W4A16Linear: int4 weights with grouped fp16 scales, fp16 activations, fp16 output.
// Plain C interface (no TensorRT types): a params struct in, a cudaError_t out. See README.md.
//
//   w[n, k] = float(scales[n, k / G]) * q[n, k]        q: int4 codes, two per byte of qweight along K,
//                                                      low nibble = even k, two's complement
//   y[m, n] = fp16(sum_k x[m, k] * w[n, k] + bias[n])  fp32 products (exact) and fp32 sums
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "common/cuda_emu.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct JmW4A16LinearParams {
  const void* x;           // fp16 [M, K], 16-byte aligned
  const uint8_t* qweight;  // [N, K/2], 16-byte aligned
  const void* scales;      // fp16 [N, K/G]
  const float* bias;       // [N], or NULL
  void* y;                 // fp16 [M, N]
  int M;                   // rows of x (b * l), >= 0; 0 launches nothing. 1..8: the decode GEMV
  int N;                   // output channels, >= 1
  int K;                   // input channels, a multiple of group_size
  int group_size;          // G: a multiple of 32 (the layout's 128, 64 or 32)
} JmW4A16LinearParams;

// cudaErrorInvalidValue (nothing launched, nothing written) for a NULL params or tensor pointer
// (bias excepted), M < 0, N < 1, a group_size that is not a positive multiple of 32 or does not
// divide K, K < 1, M above kW4MaxRows, x or qweight not 16-byte aligned, scales / y not 2-byte
// or bias not 4-byte aligned, or y overlapping an input.
cudaError_t jm_w4a16_linear(const JmW4A16LinearParams* p, cudaStream_t stream);

// sizeof(JmW4A16LinearParams), so that bindings (ctypes) can check their copy of the layout.
size_t jm_w4a16_linear_params_size(void);

#ifdef __cplusplus
}
#endif
