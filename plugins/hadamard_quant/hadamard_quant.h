// jetmamba::HadamardQuant: fast Hadamard transform of the last axis, normalised, int8 output. Plain
// C interface (no TensorRT types): a params struct in, a cudaError_t out. See README.md here.
//
//   y = Q(x H^T / sqrt(n), out_scale)   per row of n elements; int8, round half to even, saturated
//                                       to [-128, 127] (ONNX QuantizeLinear)
// H is jetmamba.calibration.hadamard's: H_m (x) H_2 (x) ... (x) H_2 with m in {1, 12, 20, 28}
// (Paley constructions), so n = 2^k or 12, 20, 28, 40 times 2^k, and n <= 16384.
#pragma once

#include <stdint.h>

#include "common/cuda_emu.h"

#ifdef __cplusplus
extern "C" {
#endif

// Input formats. The values are TensorRT's DataType values (kFLOAT = 0, kHALF = 1), as the norm
// kernels' JmNormDtype, so that plugin glue can pass its format through unchanged.
typedef enum JmHadamardDtype { JM_HADAMARD_FP32 = 0, JM_HADAMARD_FP16 = 1 } JmHadamardDtype;

// The largest order one thread block transforms (compiler/ops/spec.py MAX_HADAMARD_ORDER).
#define JM_HADAMARD_MAX_ORDER 16384

typedef struct JmHadamardQuantParams {
  const void* x;    // [rows, n], dtype
  int8_t* y;        // [rows, n]
  int64_t rows;     // product of the leading dims; 0 launches nothing
  int n;            // the transformed (last) axis: a supported Hadamard order
  int dtype;        // JmHadamardDtype of x
  float out_scale;  // > 0, finite
} JmHadamardQuantParams;

// 1 if n is a supported order (2^k or 12/20/28/40 * 2^k, 1 <= n <= 16384), else 0.
int jm_hadamard_order_supported(int n);

// cudaErrorInvalidValue (nothing launched, nothing written) for a NULL params pointer, an
// unsupported n, rows < 0, an unknown dtype, a bad out_scale, or (with rows > 0) a NULL x or y.
// rows == 0 returns cudaSuccess and touches nothing. y must not overlap x. Pointers need only their
// element type's alignment; 16-byte aligned x and y take the vectorised loads and stores.
cudaError_t jm_hadamard_quant(const JmHadamardQuantParams* p, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
