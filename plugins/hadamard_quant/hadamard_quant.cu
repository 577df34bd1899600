// C launcher of jetmamba::HadamardQuant (see hadamard_quant.h, and hadamard_quant.cuh for the kernel).
#include "hadamard_quant/hadamard_quant.h"

#include "hadamard_quant/hadamard_quant.cuh"

namespace jm_hadamard {

// n = m * 2^log2p with m a base order, as calibration/hadamard.py factor(): the odd part of n
// picks m (1 -> 1, 3 -> 12, 5 -> 20, 7 -> 28), and n must hold all of m's factors of two.
struct Order {
  int m;  // 0: not a supported order
  int log2p;
};

inline Order factor(int n) {
  if (n < 1 || n > JM_HADAMARD_MAX_ORDER) return {0, 0};
  int odd = n, twos = 0;
  while ((odd & 1) == 0) odd >>= 1, ++twos;
  const int m = odd == 1 ? 1 : odd == 3 ? 12 : odd == 5 ? 20 : odd == 7 ? 28 : 0;
  if (m == 0 || n % m != 0) return {0, 0};
  int log2p = 0;
  while ((m << log2p) < n) ++log2p;
  return {m, log2p};
}

constexpr long long kMaxGrid = 2147483647;  // gridDim.x; larger row counts loop in the kernel

template <typename T, int M, int LOG2P>
cudaError_t launch(const T* x, int8_t* y, long long rows, float out_scale, cudaStream_t stream) {
  using S = Shape<M, LOG2P>;
  const long long groups = (rows + S::kRowsPerBlock - 1) / S::kRowsPerBlock;
  const unsigned grid = static_cast<unsigned>(groups < kMaxGrid ? groups : kMaxGrid);
  const int vectorized = reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(y) % 16 == 0;
  JM_LAUNCH(dim3(grid), dim3(S::kLanes * S::kWarps, S::kRowsPerBlock), 0, stream,
            hadamard_quant_kernel<T, M, LOG2P>)(x, y, rows, out_scale, vectorized);
  return cudaGetLastError();
}

// one instantiation per (input type, m, log2 p) with m 2^log2p <= JM_HADAMARD_MAX_ORDER
template <typename T, int M, int LOG2P = 0>
cudaError_t dispatch(int log2p, const T* x, int8_t* y, long long rows, float out_scale, cudaStream_t stream) {
  if constexpr ((M << LOG2P) > JM_HADAMARD_MAX_ORDER) {
    return cudaErrorInvalidValue;
  } else {
    if (log2p == LOG2P) return launch<T, M, LOG2P>(x, y, rows, out_scale, stream);
    return dispatch<T, M, LOG2P + 1>(log2p, x, y, rows, out_scale, stream);
  }
}

template <typename T>
cudaError_t dispatch(Order o, const void* x, int8_t* y, long long rows, float out_scale, cudaStream_t stream) {
  const T* xt = static_cast<const T*>(x);
  switch (o.m) {
    case 1: return dispatch<T, 1>(o.log2p, xt, y, rows, out_scale, stream);
    case 12: return dispatch<T, 12>(o.log2p, xt, y, rows, out_scale, stream);
    case 20: return dispatch<T, 20>(o.log2p, xt, y, rows, out_scale, stream);
    case 28: return dispatch<T, 28>(o.log2p, xt, y, rows, out_scale, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace jm_hadamard

extern "C" int jm_hadamard_order_supported(int n) { return jm_hadamard::factor(n).m != 0; }

extern "C" cudaError_t jm_hadamard_quant(const JmHadamardQuantParams* p, cudaStream_t stream) {
  if (p == nullptr) return cudaErrorInvalidValue;
  const jm_hadamard::Order o = jm_hadamard::factor(p->n);
  // out_scale: positive and finite (a NaN fails the comparison)
  const bool scale_ok = p->out_scale > 0.0f && p->out_scale <= 3.402823466e38f;
  const bool dtype_ok = p->dtype == JM_HADAMARD_FP32 || p->dtype == JM_HADAMARD_FP16;
  if (o.m == 0 || p->rows < 0 || !scale_ok || !dtype_ok) return cudaErrorInvalidValue;
  if (p->rows == 0) return cudaSuccess;
  if (p->x == nullptr || p->y == nullptr) return cudaErrorInvalidValue;
  if (p->dtype == JM_HADAMARD_FP16) return jm_hadamard::dispatch<__half>(o, p->x, p->y, p->rows, p->out_scale, stream);
  return jm_hadamard::dispatch<float>(o, p->x, p->y, p->rows, p->out_scale, stream);
}
