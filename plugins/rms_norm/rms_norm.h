// jetmamba::RMSNorm: the residual add fused with RMSNorm, fp output (RMSNormQuant's fp variant, for
// the unquantized baseline). Plain C interface (no TensorRT types). See README.md in this folder.
//
//   r = x + residual          fp32 add, stored in x's dtype (residual_out)
//   y = rmsnorm(r) * weight   fp32, rounded to x's dtype
#pragma once

#include "rms_norm_quant/rms_norm_quant.h"  // JmNormDtype

#ifdef __cplusplus
extern "C" {
#endif

typedef struct JmRmsNormParams {
  const void* x;         // [rows, d], x_dtype
  const void* residual;  // [rows, d], x_dtype, or NULL (then r = x)
  const void* weight;    // [d], weight_dtype
  void* y;               // [rows, d], x_dtype
  void* residual_out;    // [rows, d], x_dtype
  int rows;              // b * l; 0 launches nothing
  int d;                 // 1 ... 2^24, any value
  int x_dtype;           // JmNormDtype, also residual's, y's and residual_out's
  int weight_dtype;      // JmNormDtype
  float eps;             // >= 0, finite
} JmRmsNormParams;

// cudaErrorInvalidValue (nothing launched, nothing written) for a NULL params or tensor pointer
// (residual excepted), rows < 0, d < 1, an unknown dtype or a bad eps. The outputs must not overlap
// the inputs.
cudaError_t jm_rms_norm(const JmRmsNormParams* p, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
