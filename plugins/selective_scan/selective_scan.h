/* jetmamba::SelectiveScan (Mamba1, int8 inputs) and jetmamba::SelectiveScanInt8State (the same with an
 * int8 state): the kernels' plain C launcher API. No TensorRT types.
 *
 * Tensors (time-major, contiguous, as the op spec; see README.md):
 *   u, dt, z  int8 [batch, seqlen, d]   dt is taken before dt_bias and softplus
 *   B, C      int8 [batch, seqlen, n]
 *   A         fp32 [d, n];  D, dt_bias fp32 [d];  gate_smooth fp32 [d] or NULL (SiLU gate)
 *   ssm_state state_dtype [batch, d, n]
 *   ssm_state_scale fp32 [batch, d]: int8 state only (NULL otherwise), a scale per channel, >= 0
 * Outputs: y out_dtype [batch, seqlen, d]; ssm_state_out state_dtype [batch, d, n], which may be the
 * same buffer as ssm_state (in place) but must not otherwise overlap it; int8 state only:
 * ssm_state_scale_out fp32 [batch, d] (same aliasing rule with ssm_state_scale), scale = max |h| /
 * 127 over the channel's n states, codes = rn(h / scale) in [-127, 127]; 0 and zero codes for an
 * all-zero channel.
 * Scales: per tensor, finite and > 0. n: 16, 32, 64 or 128. seqlen 1 runs the decode kernel, longer
 * sequences the prefill kernel. Pointers 16-byte aligned get vector loads (any alignment works).
 * Bad arguments return cudaErrorInvalidValue before anything is launched or written. */
#ifndef JETMAMBA_PLUGINS_SELECTIVE_SCAN_H
#define JETMAMBA_PLUGINS_SELECTIVE_SCAN_H

#if !defined(__CUDACC_RTC__) /* NVRTC declares cudaError_t and cudaStream_t itself */
#include <cuda_runtime_api.h>
#endif
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* dtypes of the state, y and the fp variant's inputs (JM_SCAN_INT8: the state only) */
enum { JM_SCAN_FLOAT16 = 0, JM_SCAN_FLOAT32 = 1, JM_SCAN_INT8 = 2 };

typedef struct JmSelectiveScanParams {
  const int8_t* u;
  const int8_t* dt;
  const float* A;
  const int8_t* B;
  const int8_t* C;
  const float* D;
  const int8_t* z;
  const float* dt_bias;
  const void* ssm_state;
  const float* gate_smooth; /* NULL: silu(z); else z * sigmoid(gate_smooth * z) (MambaQuant's S-SiLU) */
  void* y;
  void* ssm_state_out;
  int32_t batch;
  int32_t seqlen;
  int32_t d;
  int32_t n;
  float u_scale;
  float dt_scale;
  float B_scale;
  float C_scale;
  float z_scale;
  int32_t state_dtype; /* JM_SCAN_FLOAT16 (default of the op), JM_SCAN_FLOAT32 or JM_SCAN_INT8 */
  int32_t out_dtype;   /* y: JM_SCAN_FLOAT16 or JM_SCAN_FLOAT32 (the graph's float type) */
  /* JM_SCAN_INT8 state: per-channel scales [batch, d], required; NULL for an fp state */
  const float* ssm_state_scale;
  float* ssm_state_scale_out;
} JmSelectiveScanParams;

cudaError_t jm_selective_scan(const JmSelectiveScanParams* p, cudaStream_t stream);

/* sizeof(JmSelectiveScanParams), so that bindings can check their layout */
size_t jm_selective_scan_params_size(void);

/* 1 when the kernels support this d_state */
int jm_selective_scan_supports_n(int n);

#ifdef __cplusplus
}
#endif

#endif
