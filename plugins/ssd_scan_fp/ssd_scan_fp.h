/* jetmamba::SSDScanFp (Mamba2, fp16 / fp32 inputs): the kernel's plain C launcher API. No TensorRT
 * types. The kernels are SSDScan's (../ssd_scan/ssd_scan.cuh) without the scales.
 *
 * Tensors (time-major, contiguous, as the op spec; see README.md):
 *   x         dtype [batch, seqlen, heads * head_dim]   heads flattened, as SSDScan
 *   dt        dtype [batch, seqlen, heads]              before dt_bias, softplus and the clamp
 *   A, D, dt_bias  fp32 [heads]
 *   B, C      dtype [batch, seqlen, groups, d_state]    head h reads group h / (heads / groups)
 *   ssm_state state_dtype [batch, heads, head_dim, d_state]
 * Outputs: y dtype [batch, seqlen, heads, head_dim] (x's dtype, as the reference); ssm_state_out
 * state_dtype [batch, heads, head_dim, d_state], which may be the same buffer as ssm_state (in
 * place) but must not otherwise overlap it.
 * d_state: 16, 32, 64 or 128; head_dim: a multiple of 4 in [16, 128]; heads a multiple of groups.
 * seqlen 1 runs the decode kernel, longer sequences the chunked prefill kernel. Pointers aligned to
 * 4 elements get vector loads and stores (any alignment works).
 * Bad arguments return cudaErrorInvalidValue before anything is launched or written. */
#ifndef JETMAMBA_PLUGINS_SSD_SCAN_FP_H
#define JETMAMBA_PLUGINS_SSD_SCAN_FP_H

#include "../ssd_scan/ssd_scan.h" /* JM_SSD_FLOAT16 / JM_SSD_FLOAT32 */

#ifdef __cplusplus
extern "C" {
#endif

typedef struct JmSsdScanFpParams {
  const void* x;
  const void* dt;
  const float* A;
  const void* B;
  const void* C;
  const float* D;
  const float* dt_bias;
  const void* ssm_state;
  void* y;
  void* ssm_state_out;
  int32_t batch;
  int32_t seqlen;
  int32_t heads;       /* H */
  int32_t head_dim;    /* P */
  int32_t groups;      /* G */
  int32_t d_state;     /* N */
  float dt_min;        /* >= 0 */
  float dt_max;        /* >= 0; +inf: no upper bound */
  int32_t dtype;       /* x, dt, B, C and y: JM_SSD_FLOAT16 or JM_SSD_FLOAT32 */
  int32_t state_dtype; /* JM_SSD_FLOAT16 or JM_SSD_FLOAT32 */
} JmSsdScanFpParams;

cudaError_t jm_ssd_scan_fp(const JmSsdScanFpParams* p, cudaStream_t stream);

/* sizeof(JmSsdScanFpParams), so that bindings can check their layout */
size_t jm_ssd_scan_fp_params_size(void);

#ifdef __cplusplus
}
#endif

#endif
