/* jetmamba::SSDScan (Mamba2, int8 x / B / C): the kernel's plain C launcher API. No TensorRT types.
 *
 * Tensors (time-major, contiguous, as the op spec; see README.md):
 *   x         int8 [batch, seqlen, heads * head_dim]   heads flattened: per-channel scales ride on one axis
 *   dt        dt_dtype [batch, seqlen, heads]           before dt_bias, softplus and the clamp
 *   A, D, dt_bias  fp32 [heads]
 *   B, C      int8 [batch, seqlen, groups, d_state]     head h reads group h / (heads / groups)
 *   ssm_state state_dtype [batch, heads, head_dim, d_state]
 * Outputs: y out_dtype [batch, seqlen, heads, head_dim]; ssm_state_out state_dtype [batch, heads,
 * head_dim, d_state], which may be the same buffer as ssm_state (in place) but must not otherwise
 * overlap it.
 * Scales are DEVICE arrays of fp32: x_scale has x_scale_count = 1 (per tensor) or heads * head_dim
 * (per channel, Quamba2's clustered scales) values; B_scale / C_scale 1 or groups (per SSD group).
 * Their values are not read on the host (they must be finite and > 0: the op spec's rule).
 * d_state: 16, 32, 64 or 128; head_dim: a multiple of 4 in [16, 128]; heads a multiple of groups.
 * seqlen 1 runs the decode kernel, longer sequences the chunked prefill kernel. Pointers aligned to
 * 4 elements get vector loads and stores (any alignment works).
 * Bad arguments return cudaErrorInvalidValue before anything is launched or written. */
#ifndef JETMAMBA_PLUGINS_SSD_SCAN_H
#define JETMAMBA_PLUGINS_SSD_SCAN_H

#if !defined(__CUDACC_RTC__) /* NVRTC declares cudaError_t and cudaStream_t itself */
#include <cuda_runtime_api.h>
#endif
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* dtypes of the fp tensors (dt, state, y; the fp variant's inputs) */
enum { JM_SSD_FLOAT16 = 0, JM_SSD_FLOAT32 = 1 };

typedef struct JmSsdScanParams {
  const int8_t* x;
  const void* dt;
  const float* A;
  const int8_t* B;
  const int8_t* C;
  const float* D;
  const float* dt_bias;
  const void* ssm_state;
  const float* x_scale; /* device array, x_scale_count values */
  const float* B_scale; /* device array, B_scale_count values */
  const float* C_scale; /* device array, C_scale_count values */
  void* y;
  void* ssm_state_out;
  int32_t batch;
  int32_t seqlen;
  int32_t heads;    /* H */
  int32_t head_dim; /* P */
  int32_t groups;   /* G */
  int32_t d_state;  /* N */
  int32_t x_scale_count; /* 1 or heads * head_dim */
  int32_t B_scale_count; /* 1 or groups */
  int32_t C_scale_count; /* 1 or groups */
  float dt_min;          /* >= 0 */
  float dt_max;          /* >= 0; +inf: no upper bound */
  int32_t dt_dtype;      /* JM_SSD_FLOAT16 or JM_SSD_FLOAT32 */
  int32_t state_dtype;   /* JM_SSD_FLOAT16 (default of the op) or JM_SSD_FLOAT32 */
  int32_t out_dtype;     /* y: JM_SSD_FLOAT16 or JM_SSD_FLOAT32 (the graph's float type) */
} JmSsdScanParams;

cudaError_t jm_ssd_scan(const JmSsdScanParams* p, cudaStream_t stream);

/* sizeof(JmSsdScanParams), so that bindings can check their layout */
size_t jm_ssd_scan_params_size(void);

/* 1 when the kernels support this d_state (N) / head_dim (P) */
int jm_ssd_scan_supports_d_state(int d_state);
int jm_ssd_scan_supports_head_dim(int head_dim);

#ifdef __cplusplus
}
#endif

#endif
