// jetmamba::GatedRMSNorm (Mamba2): the gate and RMSNorm per group fused, fp in and out
// (GatedRMSNormQuant's fp variant, for the unquantized baseline). Plain C interface. See README.md.
//
//   h   = y * silu(z)                                                           fp32
//   out = h / sqrt(mean(h^2 over each group of group_size channels) + eps) * weight, in y's dtype
#pragma once

#include "rms_norm_quant/rms_norm_quant.h"  // JmNormDtype

#ifdef __cplusplus
extern "C" {
#endif

typedef struct JmGatedRmsNormParams {
  const void* y;       // [rows, d], y_dtype
  const void* z;       // [rows, d], y_dtype (the gate)
  const void* weight;  // [d], weight_dtype
  void* out;           // [rows, d], y_dtype
  int rows;            // b * l; 0 launches nothing
  int d;               // >= 1
  int group_size;      // 1 ... 2^24, divides d
  int y_dtype;         // JmNormDtype, also z's and out's
  int weight_dtype;    // JmNormDtype
  float eps;           // >= 0, finite
} JmGatedRmsNormParams;

// cudaErrorInvalidValue (nothing launched, nothing written) for a NULL params or tensor pointer,
// rows < 0, d < 1, group_size < 1 or not dividing d, an unknown dtype, a bad eps, or a grid too
// large. The output must not overlap the inputs.
cudaError_t jm_gated_rms_norm(const JmGatedRmsNormParams* p, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
