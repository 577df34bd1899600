// __half and __nv_bfloat16 for the CUDA emulator (host builds only): our own bit-exact implementation,
// so that emulated kernels need no CUDA toolkit.
//
// Conversions round exactly as CUDA does: to nearest even for _rn and the unsuffixed forms, toward
// zero / down / up for _rz / _rd / _ru, with subnormals kept, overflow to infinity (or to the largest
// finite value where the rounding direction says so) and every NaN converted to the canonical NaN
// 0x7fff. Arithmetic is done in float (fma in double) and rounded once: for these formats that is
// the correctly rounded result, i.e. what the GPU's half and bfloat16 instructions give (float has
// at least 2p+2 bits for both, so the double rounding is innocuous). The half math functions
// (hexp, hlog, ...) are float math rounded to half, close to but not always equal to the GPU's.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "types.h"

namespace jm {
namespace emu {
namespace fp {

enum Round { kRN, kRZ, kRD, kRU };

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Encode the finite, non-zero value (-1)^neg * m * 2^e in a binary format with EB exponent bits and
// MB stored mantissa bits, rounding as r says. Returns the bits without the sign.
template <int EB, int MB>
inline uint16_t encode(bool neg, uint64_t m, int e, Round r) {
  constexpr int bias = (1 << (EB - 1)) - 1;
  constexpr int emin = 1 - bias;
  constexpr int emax = bias;
  constexpr uint32_t inf = ((1u << EB) - 1) << MB;
  constexpr uint32_t max_finite = inf - 1;
  const bool up_allowed = r == kRN || (r == kRU && !neg) || (r == kRD && neg);
  int p = 63 - __builtin_clzll(m);  // m in [2^p, 2^(p+1))
  const int E = p + e;              // value in [2^E, 2^(E+1))
  if (E > emax) return static_cast<uint16_t>(up_allowed ? inf : max_finite);
  const bool normal = E >= emin;
  const int q = (normal ? E : emin) - MB;  // exponent of the last kept bit
  const int s = q - e;                     // bits of m that are dropped
  uint64_t kept;
  bool inc = false;
  if (s <= 0) {
    kept = m << (-s);
  } else {
    uint64_t rem;
    bool above_half, at_half;
    if (s >= 64) {  // everything is dropped and below half a unit (m < 2^63 always here)
      kept = 0;
      rem = m;
      above_half = false;
      at_half = false;
      if (s == 64) {
        above_half = m > (1ull << 63);
        at_half = m == (1ull << 63);
      }
    } else {
      kept = m >> s;
      rem = m & ((1ull << s) - 1);
      const uint64_t half = 1ull << (s - 1);
      above_half = rem > half;
      at_half = rem == half;
    }
    switch (r) {
      case kRN:
        inc = above_half || (at_half && (kept & 1));
        break;
      case kRZ:
        break;
      case kRD:
        inc = neg && rem != 0;
        break;
      case kRU:
        inc = !neg && rem != 0;
        break;
    }
  }
  kept += inc;
  uint32_t bits;
  if (normal) {
    bits = (static_cast<uint32_t>(E + bias) << MB) + static_cast<uint32_t>(kept - (1ull << MB));
  } else {
    bits = static_cast<uint32_t>(kept);  // a carry into 2^MB is the smallest normal: still right
  }
  if (bits >= inf) return static_cast<uint16_t>(up_allowed ? inf : max_finite);
  return static_cast<uint16_t>(bits);
}

template <int EB, int MB>
inline uint16_t from_float(float f, Round r) {
  const uint32_t u = float_bits(f);
  const bool neg = (u >> 31) != 0;
  const uint16_t sign = static_cast<uint16_t>(neg ? 1u << (EB + MB) : 0u);
  const uint32_t ex = (u >> 23) & 0xff;
  const uint32_t man = u & 0x7fffff;
  if (ex == 0xff) return man != 0 ? 0x7fff : static_cast<uint16_t>(sign | (((1u << EB) - 1) << MB));
  if (ex == 0 && man == 0) return sign;
  const uint64_t m = ex == 0 ? man : (man | 0x800000u);
  const int e = ex == 0 ? -149 : static_cast<int>(ex) - 150;
  return static_cast<uint16_t>(sign | encode<EB, MB>(neg, m, e, r));
}

template <int EB, int MB>
inline uint16_t from_double(double d, Round r) {
  uint64_t u;
  std::memcpy(&u, &d, 8);
  const bool neg = (u >> 63) != 0;
  const uint16_t sign = static_cast<uint16_t>(neg ? 1u << (EB + MB) : 0u);
  const uint32_t ex = static_cast<uint32_t>((u >> 52) & 0x7ff);
  const uint64_t man = u & ((1ull << 52) - 1);
  if (ex == 0x7ff) return man != 0 ? 0x7fff : static_cast<uint16_t>(sign | (((1u << EB) - 1) << MB));
  if (ex == 0 && man == 0) return sign;
  const uint64_t m = ex == 0 ? man : (man | (1ull << 52));
  const int e = ex == 0 ? -1074 : static_cast<int>(ex) - 1075;
  return static_cast<uint16_t>(sign | encode<EB, MB>(neg, m, e, r));
}

template <int EB, int MB>
inline uint16_t from_int(long long i, Round r) {
  if (i == 0) return 0;
  const bool neg = i < 0;
  const uint64_t m = neg ? 0ull - static_cast<uint64_t>(i) : static_cast<uint64_t>(i);
  return static_cast<uint16_t>((neg ? 1u << (EB + MB) : 0u) | encode<EB, MB>(neg, m, 0, r));
}

template <int EB, int MB>
inline uint16_t from_uint(unsigned long long i, Round r) {
  return i == 0 ? 0 : encode<EB, MB>(false, i, 0, r);
}

inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t ex = (h >> 10) & 0x1f;
  const uint32_t man = h & 0x3ff;
  if (ex == 0x1f) return bits_float(sign | 0x7f800000u | (man << 13));
  if (ex == 0) {
    const float v = static_cast<float>(man) * 5.9604644775390625e-08f;  // man * 2^-24, exact
    return sign ? -v : v;
  }
  return bits_float(sign | ((ex + 112) << 23) | (man << 13));
}

inline float bf16_to_float(uint16_t b) { return bits_float(static_cast<uint32_t>(b) << 16); }

// float -> integer conversions with CUDA's saturation: NaN gives 0, out-of-range values the
// nearest representable integer.
template <class I>
inline I to_int(float x, Round r) {
  if (x != x) return 0;
  double v = x;
  switch (r) {
    case kRN: {
      const double t = std::trunc(v);
      const double d = v - t;
      if (d > 0.5 || (d == 0.5 && std::fmod(t, 2.0) != 0)) {
        v = t + 1;
      } else if (d < -0.5 || (d == -0.5 && std::fmod(t, 2.0) != 0)) {
        v = t - 1;
      } else {
        v = t;
      }
      break;
    }
    case kRZ:
      v = std::trunc(v);
      break;
    case kRD:
      v = std::floor(v);
      break;
    case kRU:
      v = std::ceil(v);
      break;
  }
  constexpr double lo = static_cast<double>(std::numeric_limits<I>::min());
  constexpr double hi = static_cast<double>(std::numeric_limits<I>::max());
  if (v <= lo) return std::numeric_limits<I>::min();
  if (v >= hi) return std::numeric_limits<I>::max();
  return static_cast<I>(v);
}

}  // namespace fp
}  // namespace emu
}  // namespace jm

struct __half_raw {
  unsigned short x;
};
struct __nv_bfloat16_raw {
  unsigned short x;
};

// clang-format off
#define JM_EMU_HALF_LIKE(T, RAW, EB, MB, TO_FLOAT)                                                  \
  struct alignas(2) T {                                                                             \
    unsigned short __x;                                                                             \
    T() = default;                                                                                  \
    constexpr T(const RAW& r) : __x(r.x) {}                                                          \
    T(float f) : __x(::jm::emu::fp::from_float<EB, MB>(f, ::jm::emu::fp::kRN)) {}                    \
    T(double d) : __x(::jm::emu::fp::from_double<EB, MB>(d, ::jm::emu::fp::kRN)) {}                  \
    T(int i) : __x(::jm::emu::fp::from_int<EB, MB>(i, ::jm::emu::fp::kRN)) {}                        \
    T(unsigned i) : __x(::jm::emu::fp::from_uint<EB, MB>(i, ::jm::emu::fp::kRN)) {}                  \
    T(long i) : __x(::jm::emu::fp::from_int<EB, MB>(i, ::jm::emu::fp::kRN)) {}                       \
    T(unsigned long i) : __x(::jm::emu::fp::from_uint<EB, MB>(i, ::jm::emu::fp::kRN)) {}             \
    T(long long i) : __x(::jm::emu::fp::from_int<EB, MB>(i, ::jm::emu::fp::kRN)) {}                  \
    T(unsigned long long i) : __x(::jm::emu::fp::from_uint<EB, MB>(i, ::jm::emu::fp::kRN)) {}        \
    T(short i) : T(static_cast<int>(i)) {}                                                          \
    T(unsigned short i) : T(static_cast<unsigned>(i)) {}                                            \
    T& operator=(const RAW& r) { __x = r.x; return *this; }                                         \
    T& operator=(float f) { return *this = T(f); }                                                  \
    T& operator=(double d) { return *this = T(d); }                                                 \
    operator RAW() const { RAW r; r.x = __x; return r; }                                            \
    operator float() const { return TO_FLOAT(__x); }                                                \
  };
// clang-format on

JM_EMU_HALF_LIKE(__half, __half_raw, 5, 10, ::jm::emu::fp::half_to_float)
JM_EMU_HALF_LIKE(__nv_bfloat16, __nv_bfloat16_raw, 8, 7, ::jm::emu::fp::bf16_to_float)
#undef JM_EMU_HALF_LIKE

struct alignas(4) __half2 {
  __half x, y;
};
struct alignas(4) __nv_bfloat162 {
  __nv_bfloat16 x, y;
};
struct __half2_raw {
  unsigned short x, y;
};
struct __nv_bfloat162_raw {
  unsigned short x, y;
};

typedef __half half;
typedef __half2 half2;
typedef __nv_bfloat16 nv_bfloat16;
typedef __nv_bfloat162 nv_bfloat162;

namespace jm {
namespace emu {
namespace fp {
inline __half mk_half(uint16_t b) {
  __half h;
  h.__x = b;
  return h;
}
inline __nv_bfloat16 mk_bf16(uint16_t b) {
  __nv_bfloat16 h;
  h.__x = b;
  return h;
}
}  // namespace fp
}  // namespace emu
}  // namespace jm

// ---- conversions: __half ---------------------------------------------------------------------
#define JM_EMU_FP ::jm::emu::fp
inline __half __float2half(float a) { return JM_EMU_FP::mk_half(JM_EMU_FP::from_float<5, 10>(a, JM_EMU_FP::kRN)); }
inline __half __float2half_rn(float a) { return __float2half(a); }
inline __half __float2half_rz(float a) { return JM_EMU_FP::mk_half(JM_EMU_FP::from_float<5, 10>(a, JM_EMU_FP::kRZ)); }
inline __half __float2half_rd(float a) { return JM_EMU_FP::mk_half(JM_EMU_FP::from_float<5, 10>(a, JM_EMU_FP::kRD)); }
inline __half __float2half_ru(float a) { return JM_EMU_FP::mk_half(JM_EMU_FP::from_float<5, 10>(a, JM_EMU_FP::kRU)); }
inline __half __double2half(double a) { return JM_EMU_FP::mk_half(JM_EMU_FP::from_double<5, 10>(a, JM_EMU_FP::kRN)); }
inline float __half2float(__half a) { return JM_EMU_FP::half_to_float(a.__x); }
inline __half __int2half_rn(int i) { return JM_EMU_FP::mk_half(JM_EMU_FP::from_int<5, 10>(i, JM_EMU_FP::kRN)); }
inline __half __int2half_rz(int i) { return JM_EMU_FP::mk_half(JM_EMU_FP::from_int<5, 10>(i, JM_EMU_FP::kRZ)); }
inline __half __int2half_rd(int i) { return JM_EMU_FP::mk_half(JM_EMU_FP::from_int<5, 10>(i, JM_EMU_FP::kRD)); }
inline __half __int2half_ru(int i) { return JM_EMU_FP::mk_half(JM_EMU_FP::from_int<5, 10>(i, JM_EMU_FP::kRU)); }
inline __half __uint2half_rn(unsigned i) { return JM_EMU_FP::mk_half(JM_EMU_FP::from_uint<5, 10>(i, JM_EMU_FP::kRN)); }
inline __half __short2half_rn(short i) { return __int2half_rn(i); }
inline __half __ushort2half_rn(unsigned short i) { return __uint2half_rn(i); }
inline __half __ll2half_rn(long long i) { return JM_EMU_FP::mk_half(JM_EMU_FP::from_int<5, 10>(i, JM_EMU_FP::kRN)); }
inline int __half2int_rn(__half h) { return JM_EMU_FP::to_int<int>(__half2float(h), JM_EMU_FP::kRN); }
inline int __half2int_rz(__half h) { return JM_EMU_FP::to_int<int>(__half2float(h), JM_EMU_FP::kRZ); }
inline int __half2int_rd(__half h) { return JM_EMU_FP::to_int<int>(__half2float(h), JM_EMU_FP::kRD); }
inline int __half2int_ru(__half h) { return JM_EMU_FP::to_int<int>(__half2float(h), JM_EMU_FP::kRU); }
inline unsigned __half2uint_rn(__half h) { return JM_EMU_FP::to_int<unsigned>(__half2float(h), JM_EMU_FP::kRN); }
inline unsigned __half2uint_rz(__half h) { return JM_EMU_FP::to_int<unsigned>(__half2float(h), JM_EMU_FP::kRZ); }
inline short __half2short_rn(__half h) { return JM_EMU_FP::to_int<short>(__half2float(h), JM_EMU_FP::kRN); }
inline short __half2short_rz(__half h) { return JM_EMU_FP::to_int<short>(__half2float(h), JM_EMU_FP::kRZ); }
inline signed char __half2char_rz(__half h) { return JM_EMU_FP::to_int<signed char>(__half2float(h), JM_EMU_FP::kRZ); }
inline long long __half2ll_rn(__half h) { return JM_EMU_FP::to_int<long long>(__half2float(h), JM_EMU_FP::kRN); }
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline short __half_as_short(__half h) { return static_cast<short>(h.__x); }
inline __half __ushort_as_half(unsigned short u) { return JM_EMU_FP::mk_half(u); }
inline __half __short_as_half(short s) { return JM_EMU_FP::mk_half(static_cast<uint16_t>(s)); }

// ---- conversions: __nv_bfloat16 ---------------------------------------------------------------
inline __nv_bfloat16 __float2bfloat16(float a) { return JM_EMU_FP::mk_bf16(JM_EMU_FP::from_float<8, 7>(a, JM_EMU_FP::kRN)); }
inline __nv_bfloat16 __float2bfloat16_rn(float a) { return __float2bfloat16(a); }
inline __nv_bfloat16 __float2bfloat16_rz(float a) { return JM_EMU_FP::mk_bf16(JM_EMU_FP::from_float<8, 7>(a, JM_EMU_FP::kRZ)); }
inline __nv_bfloat16 __float2bfloat16_rd(float a) { return JM_EMU_FP::mk_bf16(JM_EMU_FP::from_float<8, 7>(a, JM_EMU_FP::kRD)); }
inline __nv_bfloat16 __float2bfloat16_ru(float a) { return JM_EMU_FP::mk_bf16(JM_EMU_FP::from_float<8, 7>(a, JM_EMU_FP::kRU)); }
inline __nv_bfloat16 __double2bfloat16(double a) { return JM_EMU_FP::mk_bf16(JM_EMU_FP::from_double<8, 7>(a, JM_EMU_FP::kRN)); }
inline float __bfloat162float(__nv_bfloat16 a) { return JM_EMU_FP::bf16_to_float(a.__x); }
inline __nv_bfloat16 __int2bfloat16_rn(int i) { return JM_EMU_FP::mk_bf16(JM_EMU_FP::from_int<8, 7>(i, JM_EMU_FP::kRN)); }
inline __nv_bfloat16 __uint2bfloat16_rn(unsigned i) { return JM_EMU_FP::mk_bf16(JM_EMU_FP::from_uint<8, 7>(i, JM_EMU_FP::kRN)); }
inline int __bfloat162int_rn(__nv_bfloat16 h) { return JM_EMU_FP::to_int<int>(__bfloat162float(h), JM_EMU_FP::kRN); }
inline int __bfloat162int_rz(__nv_bfloat16 h) { return JM_EMU_FP::to_int<int>(__bfloat162float(h), JM_EMU_FP::kRZ); }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
inline short __bfloat16_as_short(__nv_bfloat16 h) { return static_cast<short>(h.__x); }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { return JM_EMU_FP::mk_bf16(u); }
inline __nv_bfloat16 __short_as_bfloat16(short s) { return JM_EMU_FP::mk_bf16(static_cast<uint16_t>(s)); }
inline __half __bfloat162half(__nv_bfloat16 b) { return __float2half(__bfloat162float(b)); }  // exact float hop
inline __nv_bfloat16 __half2bfloat16(__half h) { return __float2bfloat16(__half2float(h)); }

// ---- pairs -------------------------------------------------------------------------------------
inline __half2 make_half2(__half x, __half y) { return __half2{x, y}; }
inline __half2 __halves2half2(__half lo, __half hi) { return __half2{lo, hi}; }
inline __half2 __half2half2(__half a) { return __half2{a, a}; }
inline __half __low2half(__half2 a) { return a.x; }
inline __half __high2half(__half2 a) { return a.y; }
inline __half2 __lows2half2(__half2 a, __half2 b) { return __half2{a.x, b.x}; }
inline __half2 __highs2half2(__half2 a, __half2 b) { return __half2{a.y, b.y}; }
inline __half2 __low2half2(__half2 a) { return __half2{a.x, a.x}; }
inline __half2 __high2half2(__half2 a) { return __half2{a.y, a.y}; }
inline __half2 __lowhigh2highlow(__half2 a) { return __half2{a.y, a.x}; }
inline float __low2float(__half2 a) { return __half2float(a.x); }
inline float __high2float(__half2 a) { return __half2float(a.y); }
inline __half2 __float2half2_rn(float a) { return __half2{__float2half(a), __float2half(a)}; }
inline __half2 __floats2half2_rn(float a, float b) { return __half2{__float2half(a), __float2half(b)}; }

inline __nv_bfloat162 make_bfloat162(__nv_bfloat16 x, __nv_bfloat16 y) { return __nv_bfloat162{x, y}; }
inline __nv_bfloat162 __halves2bfloat162(__nv_bfloat16 lo, __nv_bfloat16 hi) { return __nv_bfloat162{lo, hi}; }
inline __nv_bfloat162 __bfloat162bfloat162(__nv_bfloat16 a) { return __nv_bfloat162{a, a}; }
inline __nv_bfloat16 __low2bfloat16(__nv_bfloat162 a) { return a.x; }
inline __nv_bfloat16 __high2bfloat16(__nv_bfloat162 a) { return a.y; }
inline __nv_bfloat162 __lows2bfloat162(__nv_bfloat162 a, __nv_bfloat162 b) { return __nv_bfloat162{a.x, b.x}; }
inline __nv_bfloat162 __highs2bfloat162(__nv_bfloat162 a, __nv_bfloat162 b) { return __nv_bfloat162{a.y, b.y}; }
inline __nv_bfloat162 __low2bfloat162(__nv_bfloat162 a) { return __nv_bfloat162{a.x, a.x}; }
inline __nv_bfloat162 __high2bfloat162(__nv_bfloat162 a) { return __nv_bfloat162{a.y, a.y}; }
inline float __low2float(__nv_bfloat162 a) { return __bfloat162float(a.x); }
inline float __high2float(__nv_bfloat162 a) { return __bfloat162float(a.y); }
inline __nv_bfloat162 __float2bfloat162_rn(float a) { return __nv_bfloat162{__float2bfloat16(a), __float2bfloat16(a)}; }
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
  return __nv_bfloat162{__float2bfloat16(a), __float2bfloat16(b)};
}
#undef JM_EMU_FP

// ---- arithmetic, comparisons and math, the same for both formats ---------------------------------
// clang-format off
#define JM_EMU_HALF_OPS(T, T2, TO_F, FROM_F, FROM_D)                                               \
  inline T __hadd(T a, T b) { return FROM_F(TO_F(a) + TO_F(b)); }                                  \
  inline T __hsub(T a, T b) { return FROM_F(TO_F(a) - TO_F(b)); }                                  \
  inline T __hmul(T a, T b) { return FROM_F(TO_F(a) * TO_F(b)); }                                  \
  inline T __hdiv(T a, T b) { return FROM_F(TO_F(a) / TO_F(b)); }                                  \
  inline T __hadd_sat(T a, T b) { return FROM_F(::jm::emu::fp::saturate(TO_F(a) + TO_F(b))); }             \
  inline T __hsub_sat(T a, T b) { return FROM_F(::jm::emu::fp::saturate(TO_F(a) - TO_F(b))); }             \
  inline T __hmul_sat(T a, T b) { return FROM_F(::jm::emu::fp::saturate(TO_F(a) * TO_F(b))); }             \
  inline T __hfma(T a, T b, T c) {                                                                 \
    return FROM_D(static_cast<double>(TO_F(a)) * static_cast<double>(TO_F(b)) + TO_F(c));          \
  }                                                                                                \
  inline T __hfma_sat(T a, T b, T c) {                                                             \
    double r = static_cast<double>(TO_F(a)) * static_cast<double>(TO_F(b)) + TO_F(c);              \
    return FROM_D(r != r ? 0.0 : (r < 0 ? 0.0 : (r > 1 ? 1.0 : r)));                               \
  }                                                                                                \
  inline T __hneg(T a) { T r = a; r.__x ^= 0x8000; return r; }                                     \
  inline T __habs(T a) { T r = a; r.__x &= 0x7fff; return r; }                                     \
  inline bool __hisnan(T a) { float f = TO_F(a); return f != f; }                                  \
  inline int __hisinf(T a) { float f = TO_F(a); return std::isinf(f) ? (f < 0 ? -1 : 1) : 0; }     \
  inline bool __heq(T a, T b) { return TO_F(a) == TO_F(b); }                                       \
  inline bool __hne(T a, T b) { float x = TO_F(a), y = TO_F(b); return x < y || x > y; }           \
  inline bool __hlt(T a, T b) { return TO_F(a) < TO_F(b); }                                        \
  inline bool __hle(T a, T b) { return TO_F(a) <= TO_F(b); }                                       \
  inline bool __hgt(T a, T b) { return TO_F(a) > TO_F(b); }                                        \
  inline bool __hge(T a, T b) { return TO_F(a) >= TO_F(b); }                                       \
  inline bool __hequ(T a, T b) { return !(TO_F(a) < TO_F(b) || TO_F(a) > TO_F(b)); }               \
  inline bool __hneu(T a, T b) { return !(TO_F(a) == TO_F(b)); }                                   \
  inline bool __hltu(T a, T b) { return !(TO_F(a) >= TO_F(b)); }                                   \
  inline bool __hleu(T a, T b) { return !(TO_F(a) > TO_F(b)); }                                    \
  inline bool __hgtu(T a, T b) { return !(TO_F(a) <= TO_F(b)); }                                   \
  inline bool __hgeu(T a, T b) { return !(TO_F(a) < TO_F(b)); }                                    \
  /* max/min: a NaN operand gives the other one (both NaN: the canonical NaN); +0 > -0 */           \
  inline T __hmax(T a, T b) {                                                                      \
    float x = TO_F(a), y = TO_F(b);                                                                \
    if (x != x) return y != y ? FROM_F(y) : b;                                                     \
    if (y != y) return a;                                                                          \
    if (x == y) return (a.__x & 0x8000) ? b : a;                                                   \
    return x > y ? a : b;                                                                          \
  }                                                                                                \
  inline T __hmin(T a, T b) {                                                                      \
    float x = TO_F(a), y = TO_F(b);                                                                \
    if (x != x) return y != y ? FROM_F(y) : b;                                                     \
    if (y != y) return a;                                                                          \
    if (x == y) return (a.__x & 0x8000) ? a : b;                                                   \
    return x < y ? a : b;                                                                          \
  }                                                                                                \
  inline T __hmax_nan(T a, T b) { return (__hisnan(a) || __hisnan(b)) ? FROM_F(NAN) : __hmax(a, b); } \
  inline T __hmin_nan(T a, T b) { return (__hisnan(a) || __hisnan(b)) ? FROM_F(NAN) : __hmin(a, b); } \
  inline T hsqrt(T a) { return FROM_F(std::sqrt(TO_F(a))); }                                       \
  inline T hrsqrt(T a) { return FROM_F(1.0f / std::sqrt(TO_F(a))); }                               \
  inline T hrcp(T a) { return FROM_F(1.0f / TO_F(a)); }                                            \
  inline T hexp(T a) { return FROM_F(std::exp(TO_F(a))); }                                         \
  inline T hexp2(T a) { return FROM_F(std::exp2(TO_F(a))); }                                       \
  inline T hexp10(T a) { return FROM_F(std::pow(10.0f, TO_F(a))); }                                \
  inline T hlog(T a) { return FROM_F(std::log(TO_F(a))); }                                         \
  inline T hlog2(T a) { return FROM_F(std::log2(TO_F(a))); }                                       \
  inline T hlog10(T a) { return FROM_F(std::log10(TO_F(a))); }                                     \
  inline T hsin(T a) { return FROM_F(std::sin(TO_F(a))); }                                         \
  inline T hcos(T a) { return FROM_F(std::cos(TO_F(a))); }                                         \
  inline T htanh(T a) { return FROM_F(std::tanh(TO_F(a))); }                                       \
  inline T hfloor(T a) { return FROM_F(std::floor(TO_F(a))); }                                     \
  inline T hceil(T a) { return FROM_F(std::ceil(TO_F(a))); }                                       \
  inline T htrunc(T a) { return FROM_F(std::trunc(TO_F(a))); }                                     \
  inline T hrint(T a) { return FROM_F(std::nearbyint(TO_F(a))); }                                  \
  inline T operator+(T a, T b) { return __hadd(a, b); }                                            \
  inline T operator-(T a, T b) { return __hsub(a, b); }                                            \
  inline T operator*(T a, T b) { return __hmul(a, b); }                                            \
  inline T operator/(T a, T b) { return __hdiv(a, b); }                                            \
  inline T& operator+=(T& a, T b) { return a = __hadd(a, b); }                                     \
  inline T& operator-=(T& a, T b) { return a = __hsub(a, b); }                                     \
  inline T& operator*=(T& a, T b) { return a = __hmul(a, b); }                                     \
  inline T& operator/=(T& a, T b) { return a = __hdiv(a, b); }                                     \
  inline T operator+(T a) { return a; }                                                            \
  inline T operator-(T a) { return __hneg(a); }                                                    \
  inline bool operator==(T a, T b) { return __heq(a, b); }                                         \
  inline bool operator!=(T a, T b) { return __hneu(a, b); }                                        \
  inline bool operator<(T a, T b) { return __hlt(a, b); }                                          \
  inline bool operator<=(T a, T b) { return __hle(a, b); }                                         \
  inline bool operator>(T a, T b) { return __hgt(a, b); }                                          \
  inline bool operator>=(T a, T b) { return __hge(a, b); }                                         \
  inline T2 __hadd2(T2 a, T2 b) { return T2{__hadd(a.x, b.x), __hadd(a.y, b.y)}; }                 \
  inline T2 __hsub2(T2 a, T2 b) { return T2{__hsub(a.x, b.x), __hsub(a.y, b.y)}; }                 \
  inline T2 __hmul2(T2 a, T2 b) { return T2{__hmul(a.x, b.x), __hmul(a.y, b.y)}; }                 \
  inline T2 __h2div(T2 a, T2 b) { return T2{__hdiv(a.x, b.x), __hdiv(a.y, b.y)}; }                 \
  inline T2 __hfma2(T2 a, T2 b, T2 c) { return T2{__hfma(a.x, b.x, c.x), __hfma(a.y, b.y, c.y)}; } \
  inline T2 __hneg2(T2 a) { return T2{__hneg(a.x), __hneg(a.y)}; }                                 \
  inline T2 __habs2(T2 a) { return T2{__habs(a.x), __habs(a.y)}; }                                 \
  inline T2 __hmax2(T2 a, T2 b) { return T2{__hmax(a.x, b.x), __hmax(a.y, b.y)}; }                 \
  inline T2 __hmin2(T2 a, T2 b) { return T2{__hmin(a.x, b.x), __hmin(a.y, b.y)}; }                 \
  inline T2 h2exp(T2 a) { return T2{hexp(a.x), hexp(a.y)}; }                                       \
  inline T2 h2log(T2 a) { return T2{hlog(a.x), hlog(a.y)}; }                                       \
  inline T2 h2sqrt(T2 a) { return T2{hsqrt(a.x), hsqrt(a.y)}; }                                    \
  inline T2 h2rsqrt(T2 a) { return T2{hrsqrt(a.x), hrsqrt(a.y)}; }                                 \
  inline T2 operator+(T2 a, T2 b) { return __hadd2(a, b); }                                        \
  inline T2 operator-(T2 a, T2 b) { return __hsub2(a, b); }                                        \
  inline T2 operator*(T2 a, T2 b) { return __hmul2(a, b); }                                        \
  inline T2 operator/(T2 a, T2 b) { return __h2div(a, b); }                                        \
  inline T2& operator+=(T2& a, T2 b) { return a = __hadd2(a, b); }                                 \
  inline T2& operator-=(T2& a, T2 b) { return a = __hsub2(a, b); }                                 \
  inline T2& operator*=(T2& a, T2 b) { return a = __hmul2(a, b); }                                 \
  inline T2 operator-(T2 a) { return __hneg2(a); }
// clang-format on

namespace jm {
namespace emu {
namespace fp {
inline float saturate(float x) { return x != x ? 0.0f : (x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x)); }
inline __half half_from_double(double d) { return mk_half(from_double<5, 10>(d, kRN)); }
inline __nv_bfloat16 bf16_from_double(double d) { return mk_bf16(from_double<8, 7>(d, kRN)); }
}  // namespace fp
}  // namespace emu
}  // namespace jm

JM_EMU_HALF_OPS(__half, __half2, __half2float, __float2half, ::jm::emu::fp::half_from_double)
JM_EMU_HALF_OPS(__nv_bfloat16, __nv_bfloat162, __bfloat162float, __float2bfloat16, ::jm::emu::fp::bf16_from_double)
#undef JM_EMU_HALF_OPS

inline float2 __half22float2(__half2 a) { return float2{__half2float(a.x), __half2float(a.y)}; }
inline __half2 __float22half2_rn(float2 a) { return __half2{__float2half(a.x), __float2half(a.y)}; }
inline float2 __bfloat1622float2(__nv_bfloat162 a) { return float2{__bfloat162float(a.x), __bfloat162float(a.y)}; }
inline __nv_bfloat162 __float22bfloat162_rn(float2 a) {
  return __nv_bfloat162{__float2bfloat16(a.x), __float2bfloat16(a.y)};
}
