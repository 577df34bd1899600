// fp16 / bf16 / integer conversions and half arithmetic inside a kernel, for bit-exact comparison
// with torch and numpy. Outputs are raw bits (unsigned short) so that NaN payloads stay visible.
#include "common/cuda_emu.h"

namespace jm_test {

__global__ void float_convert_kernel(const float* x, int n, unsigned short* half_out, unsigned short* bf16_out,
                                     int* int_out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float v = x[i];
  half_out[4 * i + 0] = __half_as_ushort(__float2half_rn(v));
  half_out[4 * i + 1] = __half_as_ushort(__float2half_rz(v));
  half_out[4 * i + 2] = __half_as_ushort(__float2half_rd(v));
  half_out[4 * i + 3] = __half_as_ushort(__float2half_ru(v));
  bf16_out[4 * i + 0] = __bfloat16_as_ushort(__float2bfloat16(v));
  bf16_out[4 * i + 1] = __bfloat16_as_ushort(__float2bfloat16_rz(v));
  bf16_out[4 * i + 2] = __bfloat16_as_ushort(__float2bfloat16_rd(v));
  bf16_out[4 * i + 3] = __bfloat16_as_ushort(__float2bfloat16_ru(v));
  int_out[4 * i + 0] = __float2int_rn(v);
  int_out[4 * i + 1] = __float2int_rz(v);
  int_out[4 * i + 2] = __float2int_rd(v);
  int_out[4 * i + 3] = __float2int_ru(v);
}

__global__ void bits_to_float_kernel(const unsigned short* bits, int n, float* from_half, float* from_bf16) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  from_half[i] = __half2float(__ushort_as_half(bits[i]));
  from_bf16[i] = __bfloat162float(__ushort_as_bfloat16(bits[i]));
}

__global__ void double_convert_kernel(const double* x, int n, unsigned short* half_out, unsigned short* bf16_out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  half_out[i] = __half_as_ushort(__double2half(x[i]));
  bf16_out[i] = __bfloat16_as_ushort(__double2bfloat16(x[i]));
}

// out[6*i ...]: half add, mul, div, fma(a, b, c); bf16 add, fma
__global__ void half_arith_kernel(const unsigned short* a, const unsigned short* b, const unsigned short* c, int n,
                                  unsigned short* out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const __half ha = __ushort_as_half(a[i]), hb = __ushort_as_half(b[i]), hc = __ushort_as_half(c[i]);
  const __nv_bfloat16 ba = __ushort_as_bfloat16(a[i]), bb = __ushort_as_bfloat16(b[i]),
                      bc = __ushort_as_bfloat16(c[i]);
  out[6 * i + 0] = __half_as_ushort(ha + hb);
  out[6 * i + 1] = __half_as_ushort(__hmul(ha, hb));
  out[6 * i + 2] = __half_as_ushort(__hdiv(ha, hb));
  out[6 * i + 3] = __half_as_ushort(__hfma(ha, hb, hc));
  out[6 * i + 4] = __bfloat16_as_ushort(__hadd(ba, bb));
  out[6 * i + 5] = __bfloat16_as_ushort(__hfma(ba, bb, bc));
}

// Fast-math intrinsics (close to, not bit-equal with, the GPU's).
__global__ void fast_math_kernel(const float* x, int n, float* out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float v = x[i];
  out[6 * i + 0] = __expf(v);
  out[6 * i + 1] = __logf(fabsf(v) + 1.0f);
  out[6 * i + 2] = exp2f(v);
  out[6 * i + 3] = __fdividef(v, 3.0f);
  out[6 * i + 4] = rsqrtf(fabsf(v) + 1.0f);
  out[6 * i + 5] = __saturatef(v);
}

// Vectorised access: float4 loads through __ldg, pairs to half2, half2 arithmetic, half2 stores.
__global__ void half2_kernel(const float* __restrict__ x, const __half2* __restrict__ scale, __half2* out, int n4) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n4) return;
  const float4 v = __ldg(reinterpret_cast<const float4*>(x) + i);
  const __half2 s = scale[0];
  out[2 * i] = __hmul2(__floats2half2_rn(v.x, v.y), s);
  out[2 * i + 1] = __hfma2(__float22half2_rn(make_float2(v.z, v.w)), s, __half2half2(__float2half(0.5f)));
}

}  // namespace jm_test

extern "C" {

static int blocks_for(int n) { return n > 0 ? (n + 255) / 256 : 1; }

cudaError_t jm_test_float_convert(const float* x, int n, unsigned short* half_out, unsigned short* bf16_out,
                                  int* int_out) {
  JM_LAUNCH(blocks_for(n), 256, 0, nullptr, jm_test::float_convert_kernel)(x, n, half_out, bf16_out, int_out);
  return cudaGetLastError();
}

cudaError_t jm_test_bits_to_float(const unsigned short* bits, int n, float* from_half, float* from_bf16) {
  JM_LAUNCH(blocks_for(n), 256, 0, nullptr, jm_test::bits_to_float_kernel)(bits, n, from_half, from_bf16);
  return cudaGetLastError();
}

cudaError_t jm_test_double_convert(const double* x, int n, unsigned short* half_out, unsigned short* bf16_out) {
  JM_LAUNCH(blocks_for(n), 256, 0, nullptr, jm_test::double_convert_kernel)(x, n, half_out, bf16_out);
  return cudaGetLastError();
}

cudaError_t jm_test_half_arith(const unsigned short* a, const unsigned short* b, const unsigned short* c, int n,
                               unsigned short* out) {
  JM_LAUNCH(blocks_for(n), 256, 0, nullptr, jm_test::half_arith_kernel)(a, b, c, n, out);
  return cudaGetLastError();
}

cudaError_t jm_test_fast_math(const float* x, int n, float* out) {
  JM_LAUNCH(blocks_for(n), 256, 0, nullptr, jm_test::fast_math_kernel)(x, n, out);
  return cudaGetLastError();
}

cudaError_t jm_test_half2(const float* x, const unsigned short* scale, unsigned short* out, int n4) {
  JM_LAUNCH(blocks_for(n4), 256, 0, nullptr, jm_test::half2_kernel)
  (x, reinterpret_cast<const __half2*>(scale), reinterpret_cast<__half2*>(out), n4);
  return cudaGetLastError();
}

}  // extern "C"
