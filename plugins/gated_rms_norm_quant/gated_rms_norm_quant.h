// jetmamba::GatedRMSNormQuant (Mamba2): the gate, RMSNorm per group and int8 quantisation fused.
// Plain C interface (no TensorRT types): a params struct in, a cudaError_t out. See README.md.
//
//   h   = y * silu(z * z_scale)                                  fp32
//   n   = h / sqrt(mean(h^2 over each group of group_size channels) + eps) * weight
//   out = Q(hadamard ? n H^T / sqrt(d) : n, out_scale)           int8, round half to even, saturated
#pragma once

#include <stdint.h>

#include "common/cuda_emu.h"
#include "rms_norm_quant/rms_norm_quant.h"  // JmNormDtype

#ifdef __cplusplus
extern "C" {
#endif

typedef struct JmGatedRmsNormQuantParams {
  const void* y;       // [rows, d], y_dtype (the SSD output)
  const int8_t* z;     // [rows, d], the gate, int8 with z_scale
  const void* weight;  // [d], weight_dtype
  int8_t* out;         // [rows, d]
  int rows;            // b * l; 0 launches nothing
  int d;               // >= 1
  int group_size;      // 1 ... 2^24, divides d (d / n_groups in Mamba2)
  int y_dtype;         // JmNormDtype
  int weight_dtype;    // JmNormDtype
  float z_scale;       // > 0, finite
  float eps;           // >= 0, finite
  float out_scale;     // > 0, finite
  int hadamard;        // 0, or 1: Hadamard transform of the d row before quantising (d a supported order)
  float* workspace;    // hadamard = 1: rows * d floats of scratch (the normalised rows); else unused
} JmGatedRmsNormQuantParams;

// cudaErrorInvalidValue (nothing launched, nothing written) for a NULL params or tensor pointer,
// rows < 0, d < 1, group_size < 1 or not dividing d, an unknown dtype, a bad scale or eps, hadamard
// not 0/1, or a grid too large, and for hadamard = 1 a NULL workspace or a d that is no Hadamard order
// of HadamardQuant. With hadamard = 1 the normalised rows go to the workspace in fp32 and
// HadamardQuant (plugins/hadamard_quant, linked into the same library) transforms and quantises
// them: the reference's fp32 values, two kernels. The output must not overlap the inputs.
cudaError_t jm_gated_rms_norm_quant(const JmGatedRmsNormQuantParams* p, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
