// jetmamba::RMSNormQuant: the residual add fused with RMSNorm, int8 output. Plain C interface (no
// TensorRT types): a params struct in, a cudaError_t out. See README.md in this folder.
//
//   r = x + residual          fp32 add, stored in x's dtype (residual_out)
//   y = Q(rmsnorm(r) * weight, out_scale)   int8, round half to even, saturated to [-128, 127]
// rmsnorm reads the stored (rounded) r, so a following layer that adds to residual_out sees the
// very value that was normalised.
#pragma once

#include <stdint.h>

#include "common/cuda_emu.h"

#ifdef __cplusplus
extern "C" {
#endif

// Floating-point formats of the norm kernels' tensors. The values are TensorRT's DataType values
// (kFLOAT = 0, kHALF = 1) so that plugin glue can pass its format through unchanged.
typedef enum JmNormDtype { JM_NORM_FP32 = 0, JM_NORM_FP16 = 1 } JmNormDtype;

typedef struct JmRmsNormQuantParams {
  const void* x;         // [rows, d], x_dtype
  const void* residual;  // [rows, d], x_dtype, or NULL (then r = x)
  const void* weight;    // [d], weight_dtype
  int8_t* y;             // [rows, d]
  void* residual_out;    // [rows, d], x_dtype; r (= x when residual is NULL)
  int rows;              // b * l; 0 launches nothing
  int d;                 // 1 ... 2^24, any value
  int x_dtype;           // JmNormDtype, also residual's and residual_out's
  int weight_dtype;      // JmNormDtype
  float eps;             // >= 0, finite
  float out_scale;       // > 0, finite
} JmRmsNormQuantParams;

// cudaErrorInvalidValue (nothing launched, nothing written) for a NULL params or tensor pointer
// (residual excepted), rows < 0 or > 2^31 - 4, d < 1 or > 2^24, an unknown dtype, or a bad eps or
// scale.
// The outputs must not overlap the inputs. Pointers need only their element type's alignment;
// 16-byte aligned tensors with d a multiple of 16 / sizeof(x element) take the vectorised path.
cudaError_t jm_rms_norm_quant(const JmRmsNormQuantParams* p, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
