// jetmamba::CausalConv1d: depthwise causal conv1d, int8 in and out, SiLU fused, conv state in and out.
// Plain C interface (no TensorRT types): a params struct in, a cudaError_t out. See README.md.
//
//   xs = DQ(conv_state ++ x, x_scale)                        int8 codes times the (per-channel) scale
//   y[t, c] = Q(silu(bias[c] + sum_j DQ(w[c, j], w_scale) * xs[t + j, c]), out_scale)
//   conv_state_out = the last k-1 rows of conv_state ++ x   (int8 codes, exact)
// Q is ONNX QuantizeLinear: saturate(round_half_to_even(v / out_scale)) into [-128, 127].
#pragma once

#include <stdint.h>

#include "common/cuda_emu.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct JmCausalConv1dParams {
  const int8_t* x;             // [batch, seqlen, channels]
  const int8_t* weight;        // [channels, k]
  const float* bias;           // [channels], or NULL
  const int8_t* conv_state;    // [batch, k-1, channels]: the previous k-1 inputs, oldest first
  int8_t* y;                   // [batch, seqlen, channels]
  int8_t* conv_state_out;      // [batch, k-1, channels]; may be conv_state itself (in place)
  const float* x_scale;        // device array of x_scale_count floats: 1 (per tensor) or channels
  const float* w_scale;        // likewise, for the weights (one per channel = per output channel)
  const float* out_scale;      // likewise, for y
  int x_scale_count;
  int w_scale_count;
  int out_scale_count;
  int batch;                   // >= 0 (at most 65535); 0 launches nothing
  int seqlen;                  // >= 0; 1 is the decode step; 0 copies the state
  int channels;                // >= 0, any value
  int k;                       // kernel width, 2..4
  int seq_chunk;               // timesteps per thread: 0 lets the launcher choose; else >= k-1
} JmCausalConv1dParams;

// cudaErrorInvalidValue (nothing launched, nothing written) for a NULL params, a NULL tensor that
// has elements (bias may be NULL), k outside 2..4, negative sizes, a scale pointer that is NULL or
// whose count is neither 1 nor channels, a seq_chunk below k-1 or giving more than 65535 chunks,
// more than 65535 batch items, or outputs overlapping inputs (conv_state_out == conv_state excepted).
// Pointers need only their element's alignment; channels a multiple of 4 with 4-byte aligned
// x, y and states take the vectorised path. The scale values are read on the device (they are
// device arrays) and must be positive normal floats, as the op's attributes are.
cudaError_t jm_causal_conv1d(const JmCausalConv1dParams* p, cudaStream_t stream);

// sizeof(JmCausalConv1dParams), so that bindings (ctypes) can check their copy of the layout.
size_t jm_causal_conv1d_params_size(void);

#ifdef __cplusplus
}
#endif
