/* jetmamba::SelectiveScanFp (Mamba1, fp16 / fp32 inputs): the kernel's plain C launcher API. No TensorRT
 * types. The kernels are SelectiveScan's (../selective_scan/selective_scan.cuh) without the scales and
 * with the SiLU gate.
 *
 * Tensors (time-major, contiguous, as the op spec; see README.md):
 *   u, dt, z  dtype [batch, seqlen, d]   dt is taken before dt_bias and softplus
 *   B, C      dtype [batch, seqlen, n]
 *   A         fp32 [d, n];  D, dt_bias fp32 [d]
 *   ssm_state state_dtype [batch, d, n]
 * Outputs: y dtype [batch, seqlen, d] (u's dtype, as the reference); ssm_state_out state_dtype
 * [batch, d, n], which may be the same buffer as ssm_state (in place) but must not otherwise overlap it.
 * n: 16, 32, 64 or 128. seqlen 1 runs the decode kernel, longer sequences the prefill kernel.
 * Bad arguments return cudaErrorInvalidValue before anything is launched or written. */
#ifndef JETMAMBA_PLUGINS_SELECTIVE_SCAN_FP_H
#define JETMAMBA_PLUGINS_SELECTIVE_SCAN_FP_H

#include "../selective_scan/selective_scan.h" /* JM_SCAN_FLOAT16 / JM_SCAN_FLOAT32 */

#ifdef __cplusplus
extern "C" {
#endif

typedef struct JmSelectiveScanFpParams {
  const void* u;
  const void* dt;
  const float* A;
  const void* B;
  const void* C;
  const float* D;
  const void* z;
  const float* dt_bias;
  const void* ssm_state;
  void* y;
  void* ssm_state_out;
  int32_t batch;
  int32_t seqlen;
  int32_t d;
  int32_t n;
  int32_t dtype;       /* u, dt, B, C, z and y: JM_SCAN_FLOAT16 or JM_SCAN_FLOAT32 */
  int32_t state_dtype; /* JM_SCAN_FLOAT16 or JM_SCAN_FLOAT32 */
} JmSelectiveScanFpParams;

cudaError_t jm_selective_scan_fp(const JmSelectiveScanFpParams* p, cudaStream_t stream);

/* sizeof(JmSelectiveScanFpParams), so that bindings can check their layout */
size_t jm_selective_scan_fp_params_size(void);

#ifdef __cplusplus
}
#endif

#endif
