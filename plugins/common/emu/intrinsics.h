// Device intrinsics for the CUDA emulator (host builds only): fast math, conversions, bit tricks,
// cache-hinted loads and stores, atomics, fences, min/max.
//
// The fast-math intrinsics follow the GPU's formulas where that is cheap (__expf is exp2 of
// x*log2(e), __fdividef returns 0 for huge divisors) but run at host float precision, so results
// can differ from the GPU's in the last bits. Atomics are GCC __atomic builtins (relaxed, like
// CUDA's), so they are really atomic in threads mode and ThreadSanitizer understands them.
#pragma once

#include <math.h>

#include <chrono>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "fp16.h"

// ---- fast math ---------------------------------------------------------------------------------
inline float __expf(float x) { return exp2f(x * 1.4426950408889634f); }
inline float __exp10f(float x) { return exp2f(x * 3.3219280948873622f); }
inline float __logf(float x) { return log2f(x) * 0.69314718055994531f; }
inline float __log2f(float x) { return log2f(x); }
inline float __log10f(float x) { return log2f(x) * 0.30102999566398120f; }
inline float __powf(float x, float y) { return exp2f(y * log2f(x)); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline void __sincosf(float x, float* s, float* c) {
  *s = sinf(x);
  *c = cosf(x);
}
inline float __fdividef(float x, float y) {
  const float ay = fabsf(y);
  if (ay > 8.507059173023462e+37f && ay < INFINITY) return std::isinf(x) ? NAN : x * 0.0f;  // 2^126 < |y| < 2^128
  return x / y;
}
inline float fdividef(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __frsqrt_rn(float x) { return 1.0f / sqrtf(x); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float rcbrtf(float x) { return 1.0f / cbrtf(x); }
inline float __saturatef(float x) { return ::jm::emu::fp::saturate(x); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
inline float exp10f(float x) { return powf(10.0f, x); }

// ---- conversions -------------------------------------------------------------------------------
#define JM_EMU_CVT(NAME, T, R) \
  inline T NAME(float x) { return ::jm::emu::fp::to_int<T>(x, ::jm::emu::fp::R); }
JM_EMU_CVT(__float2int_rn, int, kRN)
JM_EMU_CVT(__float2int_rz, int, kRZ)
JM_EMU_CVT(__float2int_rd, int, kRD)
JM_EMU_CVT(__float2int_ru, int, kRU)
JM_EMU_CVT(__float2uint_rn, unsigned, kRN)
JM_EMU_CVT(__float2uint_rz, unsigned, kRZ)
JM_EMU_CVT(__float2uint_rd, unsigned, kRD)
JM_EMU_CVT(__float2uint_ru, unsigned, kRU)
JM_EMU_CVT(__float2ll_rn, long long, kRN)
JM_EMU_CVT(__float2ll_rz, long long, kRZ)
JM_EMU_CVT(__float2ull_rn, unsigned long long, kRN)
JM_EMU_CVT(__float2ull_rz, unsigned long long, kRZ)
#undef JM_EMU_CVT
inline int __double2int_rn(double x) {
  if (x != x) return 0;
  const double r = nearbyint(x);
  return r >= 2147483647.0 ? INT_MAX : r <= -2147483648.0 ? INT_MIN : static_cast<int>(r);
}
inline float __int2float_rn(int i) { return static_cast<float>(i); }
inline float __uint2float_rn(unsigned i) { return static_cast<float>(i); }
inline float __ll2float_rn(long long i) { return static_cast<float>(i); }
inline double __int2double_rn(int i) { return i; }
inline int __float_as_int(float x) {
  int i;
  std::memcpy(&i, &x, 4);
  return i;
}
inline unsigned __float_as_uint(float x) {
  unsigned i;
  std::memcpy(&i, &x, 4);
  return i;
}
inline float __int_as_float(int i) {
  float x;
  std::memcpy(&x, &i, 4);
  return x;
}
inline float __uint_as_float(unsigned i) {
  float x;
  std::memcpy(&x, &i, 4);
  return x;
}
inline long long __double_as_longlong(double x) {
  long long i;
  std::memcpy(&i, &x, 8);
  return i;
}
inline double __longlong_as_double(long long i) {
  double x;
  std::memcpy(&x, &i, 8);
  return x;
}

// ---- integer and bit intrinsics ----------------------------------------------------------------
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
  return __builtin_bswap32(x);
}
inline unsigned long long __brevll(unsigned long long x) {
  return (static_cast<unsigned long long>(__brev(static_cast<unsigned>(x))) << 32) | __brev(static_cast<unsigned>(x >> 32));
}
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
  const unsigned long long v = (static_cast<unsigned long long>(y) << 32) | x;
  unsigned r = 0;
  for (int i = 0; i < 4; ++i) r |= static_cast<unsigned>((v >> (8 * ((s >> (4 * i)) & 7))) & 0xff) << (8 * i);
  return r;
}
inline unsigned __funnelshift_l(unsigned lo, unsigned hi, unsigned shift) {
  const unsigned long long v = (static_cast<unsigned long long>(hi) << 32) | lo;
  return static_cast<unsigned>((v << (shift & 31)) >> 32);
}
inline unsigned __funnelshift_lc(unsigned lo, unsigned hi, unsigned shift) {
  const unsigned long long v = (static_cast<unsigned long long>(hi) << 32) | lo;
  return static_cast<unsigned>((v << (shift > 32 ? 32 : shift)) >> 32);
}
inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned shift) {
  const unsigned long long v = (static_cast<unsigned long long>(hi) << 32) | lo;
  return static_cast<unsigned>(v >> (shift & 31));
}
inline unsigned __funnelshift_rc(unsigned lo, unsigned hi, unsigned shift) {
  const unsigned long long v = (static_cast<unsigned long long>(hi) << 32) | lo;
  return static_cast<unsigned>(v >> (shift > 32 ? 32 : shift));
}
inline int __mulhi(int a, int b) { return static_cast<int>((static_cast<long long>(a) * b) >> 32); }
inline unsigned __umulhi(unsigned a, unsigned b) {
  return static_cast<unsigned>((static_cast<unsigned long long>(a) * b) >> 32);
}
inline long long __mul64hi(long long a, long long b) { return static_cast<long long>((static_cast<__int128>(a) * b) >> 64); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return static_cast<unsigned long long>((static_cast<unsigned __int128>(a) * b) >> 64);
}
inline int __mul24(int a, int b) {
  return static_cast<int>(static_cast<unsigned>((a << 8) >> 8) * static_cast<unsigned>((b << 8) >> 8));
}
inline unsigned __umul24(unsigned a, unsigned b) { return (a & 0xffffffu) * (b & 0xffffffu); }
inline unsigned __sad(int x, int y, unsigned z) { return z + static_cast<unsigned>(x > y ? x - y : y - x); }
inline unsigned __usad(unsigned x, unsigned y, unsigned z) { return z + (x > y ? x - y : y - x); }
inline int __rhadd(int a, int b) { return static_cast<int>((static_cast<long long>(a) + b + 1) >> 1); }
// int8 dot products (sm_61+): the four byte products of a and b summed into c.
inline int __dp4a(int a, int b, int c) {
  for (int i = 0; i < 4; ++i)
    c += static_cast<int>(static_cast<int8_t>(a >> (8 * i))) * static_cast<int>(static_cast<int8_t>(b >> (8 * i)));
  return c;
}
inline unsigned __dp4a(unsigned a, unsigned b, unsigned c) {
  for (int i = 0; i < 4; ++i) c += ((a >> (8 * i)) & 0xff) * ((b >> (8 * i)) & 0xff);
  return c;
}
inline int __dp4a(char4 a, char4 b, int c) {
  return c + a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
}
inline int __dp2a_lo(int a, int b, int c) {
  return c + static_cast<int16_t>(a) * static_cast<int>(static_cast<int8_t>(b)) +
         static_cast<int16_t>(a >> 16) * static_cast<int>(static_cast<int8_t>(b >> 8));
}
inline int __dp2a_hi(int a, int b, int c) {
  return c + static_cast<int16_t>(a) * static_cast<int>(static_cast<int8_t>(b >> 16)) +
         static_cast<int16_t>(a >> 16) * static_cast<int>(static_cast<int8_t>(b >> 24));
}

// ---- min / max (CUDA's overloads, found without std::) ---------------------------------------------
#define JM_EMU_MINMAX(T)                                   \
  inline T min(T a, T b) { return b < a ? b : a; }         \
  inline T max(T a, T b) { return a < b ? b : a; }
JM_EMU_MINMAX(int)
JM_EMU_MINMAX(unsigned int)
JM_EMU_MINMAX(long)
JM_EMU_MINMAX(unsigned long)
JM_EMU_MINMAX(long long)
JM_EMU_MINMAX(unsigned long long)
#undef JM_EMU_MINMAX
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
template <class A, class B,
          class = typename std::enable_if<std::is_arithmetic<A>::value && std::is_arithmetic<B>::value &&
                                          !std::is_same<A, B>::value>::type>
inline typename std::common_type<A, B>::type min(A a, B b) {
  using C = typename std::common_type<A, B>::type;
  return min(static_cast<C>(a), static_cast<C>(b));
}
template <class A, class B,
          class = typename std::enable_if<std::is_arithmetic<A>::value && std::is_arithmetic<B>::value &&
                                          !std::is_same<A, B>::value>::type>
inline typename std::common_type<A, B>::type max(A a, B b) {
  using C = typename std::common_type<A, B>::type;
  return max(static_cast<C>(a), static_cast<C>(b));
}
inline unsigned umin(unsigned a, unsigned b) { return b < a ? b : a; }
inline unsigned umax(unsigned a, unsigned b) { return a < b ? b : a; }

// ---- loads and stores with cache hints: plain memory accesses here ------------------------------
template <class T>
inline T __ldg(const T* p) {
  return *p;
}
template <class T>
inline T __ldcg(const T* p) {
  return *p;
}
template <class T>
inline T __ldca(const T* p) {
  return *p;
}
template <class T>
inline T __ldcs(const T* p) {
  return *p;
}
template <class T>
inline T __ldlu(const T* p) {
  return *p;
}
template <class T>
inline T __ldcv(const T* p) {
  return *p;
}
template <class T>
inline void __stwb(T* p, T v) {
  *p = v;
}
template <class T>
inline void __stcg(T* p, T v) {
  *p = v;
}
template <class T>
inline void __stcs(T* p, T v) {
  *p = v;
}
template <class T>
inline void __stwt(T* p, T v) {
  *p = v;
}

// ---- atomics (relaxed, as CUDA's) ----------------------------------------------------------------
#define JM_EMU_ATOMIC_INT(T)                                                                        \
  inline T atomicAdd(T* a, T v) { return __atomic_fetch_add(a, v, __ATOMIC_RELAXED); }             \
  inline T atomicSub(T* a, T v) { return __atomic_fetch_sub(a, v, __ATOMIC_RELAXED); }             \
  inline T atomicExch(T* a, T v) { return __atomic_exchange_n(a, v, __ATOMIC_RELAXED); }           \
  inline T atomicAnd(T* a, T v) { return __atomic_fetch_and(a, v, __ATOMIC_RELAXED); }             \
  inline T atomicOr(T* a, T v) { return __atomic_fetch_or(a, v, __ATOMIC_RELAXED); }               \
  inline T atomicXor(T* a, T v) { return __atomic_fetch_xor(a, v, __ATOMIC_RELAXED); }             \
  inline T atomicCAS(T* a, T expected, T desired) {                                                \
    __atomic_compare_exchange_n(a, &expected, desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED); \
    return expected;                                                                               \
  }                                                                                                \
  inline T atomicMin(T* a, T v) {                                                                  \
    T old = __atomic_load_n(a, __ATOMIC_RELAXED);                                                  \
    while (v < old && !__atomic_compare_exchange_n(a, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) { \
    }                                                                                              \
    return old;                                                                                    \
  }                                                                                                \
  inline T atomicMax(T* a, T v) {                                                                  \
    T old = __atomic_load_n(a, __ATOMIC_RELAXED);                                                  \
    while (v > old && !__atomic_compare_exchange_n(a, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) { \
    }                                                                                              \
    return old;                                                                                    \
  }
JM_EMU_ATOMIC_INT(int)
JM_EMU_ATOMIC_INT(unsigned int)
JM_EMU_ATOMIC_INT(unsigned long long)
JM_EMU_ATOMIC_INT(long long)
#undef JM_EMU_ATOMIC_INT

inline unsigned short atomicCAS(unsigned short* a, unsigned short expected, unsigned short desired) {
  __atomic_compare_exchange_n(a, &expected, desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return expected;
}
inline unsigned atomicInc(unsigned* a, unsigned limit) {
  unsigned old = __atomic_load_n(a, __ATOMIC_RELAXED);
  while (!__atomic_compare_exchange_n(a, &old, old >= limit ? 0u : old + 1, true, __ATOMIC_RELAXED,
                                      __ATOMIC_RELAXED)) {
  }
  return old;
}
inline unsigned atomicDec(unsigned* a, unsigned limit) {
  unsigned old = __atomic_load_n(a, __ATOMIC_RELAXED);
  while (!__atomic_compare_exchange_n(a, &old, (old == 0 || old > limit) ? limit : old - 1, true, __ATOMIC_RELAXED,
                                      __ATOMIC_RELAXED)) {
  }
  return old;
}

namespace jm {
namespace emu {
namespace detail {
// Floating-point read-modify-write through a compare-and-swap loop on the bits.
template <class F, class U, class Op>
inline F atomic_float_rmw(F* a, Op op) {
  static_assert(sizeof(F) == sizeof(U), "size");
  U* p = reinterpret_cast<U*>(a);
  U old = __atomic_load_n(p, __ATOMIC_RELAXED);
  for (;;) {
    F f;
    std::memcpy(&f, &old, sizeof f);
    const F n = op(f);
    U nb;
    std::memcpy(&nb, &n, sizeof nb);
    if (__atomic_compare_exchange_n(p, &old, nb, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) return f;
  }
}
}  // namespace detail
}  // namespace emu
}  // namespace jm

inline float atomicAdd(float* a, float v) {
  return ::jm::emu::detail::atomic_float_rmw<float, uint32_t>(a, [v](float x) { return x + v; });
}
inline double atomicAdd(double* a, double v) {
  return ::jm::emu::detail::atomic_float_rmw<double, uint64_t>(a, [v](double x) { return x + v; });
}
inline float atomicExch(float* a, float v) {
  return ::jm::emu::detail::atomic_float_rmw<float, uint32_t>(a, [v](float) { return v; });
}
inline __half2 atomicAdd(__half2* a, __half2 v) {
  return ::jm::emu::detail::atomic_float_rmw<__half2, uint32_t>(a, [v](__half2 x) { return __hadd2(x, v); });
}
inline __half atomicAdd(__half* a, __half v) {
  return ::jm::emu::detail::atomic_float_rmw<__half, uint16_t>(a, [v](__half x) { return __hadd(x, v); });
}
inline __nv_bfloat16 atomicAdd(__nv_bfloat16* a, __nv_bfloat16 v) {
  return ::jm::emu::detail::atomic_float_rmw<__nv_bfloat16, uint16_t>(a, [v](__nv_bfloat16 x) { return __hadd(x, v); });
}
// the _block and _system scopes are the same here
template <class T, class V>
inline T atomicAdd_block(T* a, V v) {
  return atomicAdd(a, static_cast<T>(v));
}
template <class T, class V>
inline T atomicAdd_system(T* a, V v) {
  return atomicAdd(a, static_cast<T>(v));
}
template <class T, class V>
inline T atomicMax_block(T* a, V v) {
  return atomicMax(a, static_cast<T>(v));
}
template <class T, class V>
inline T atomicMin_block(T* a, V v) {
  return atomicMin(a, static_cast<T>(v));
}

// ---- fences and the rest --------------------------------------------------------------------------
#if defined(JM_EMU_TSAN)
// ThreadSanitizer does not model stand-alone fences; blocks run one after another here, so the
// fences that order inter-block communication have nothing to order.
inline void __threadfence() {}
inline void __threadfence_block() {}
inline void __threadfence_system() {}
#else
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_system() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
#endif
inline void __nanosleep(unsigned) {}
inline long long clock64() {
  return static_cast<long long>(std::chrono::steady_clock::now().time_since_epoch().count());
}
