// jetmamba::CausalConv1dFp: depthwise causal conv1d, fp16 or fp32 in and out, SiLU fused, conv state
// in and out (CausalConv1d's fp variant). Plain C interface (no TensorRT types). See README.md.
//
//   y[t, c] = silu(bias[c] + sum_j w[c, j] * xs[t + j, c])   xs = conv_state ++ x; fp32 maths,
//                                                            y rounded once to the dtype
//   conv_state_out = the last k-1 rows of xs                  (exact copies)
#pragma once

#include <stdint.h>

#include "common/cuda_emu.h"

#ifdef __cplusplus
extern "C" {
#endif

// The one floating-point format of all the op's tensors. The values are TensorRT's DataType
// values (kFLOAT = 0, kHALF = 1) so that plugin glue can pass its format through unchanged.
typedef enum JmCausalConv1dFpDtype { JM_CAUSAL_CONV1D_FP32 = 0, JM_CAUSAL_CONV1D_FP16 = 1 } JmCausalConv1dFpDtype;

typedef struct JmCausalConv1dFpParams {
  const void* x;           // [batch, seqlen, channels]
  const void* weight;      // [channels, k]
  const void* bias;        // [channels], or NULL
  const void* conv_state;  // [batch, k-1, channels]: the previous k-1 inputs, oldest first
  void* y;                 // [batch, seqlen, channels]
  void* conv_state_out;    // [batch, k-1, channels]; may be conv_state itself (in place)
  int dtype;               // JmCausalConv1dFpDtype, of every tensor above
  int batch;               // >= 0 (at most 65535); 0 launches nothing
  int seqlen;              // >= 0; 1 is the decode step; 0 copies the state
  int channels;            // >= 0, any value
  int k;                   // kernel width, 2..4
  int seq_chunk;           // timesteps per thread: 0 lets the launcher choose; else >= k-1
} JmCausalConv1dFpParams;

// cudaErrorInvalidValue (nothing launched, nothing written) for a NULL params, a NULL tensor that
// has elements (bias may be NULL), an unknown dtype, k outside 2..4, negative sizes, a seq_chunk
// below k-1 or giving more than 65535 chunks, more than 65535 batch items, or outputs overlapping
// inputs (conv_state_out == conv_state excepted). Pointers need only their element's alignment;
// channels a multiple of 4 with x, y and states aligned to 4 elements take the vectorised path.
cudaError_t jm_causal_conv1d_fp(const JmCausalConv1dFpParams* p, cudaStream_t stream);

// sizeof(JmCausalConv1dFpParams), so that bindings (ctypes) can check their copy of the layout.
size_t jm_causal_conv1d_fp_params_size(void);

#ifdef __cplusplus
}
#endif
