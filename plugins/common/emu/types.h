// CUDA's declaration specifiers, built-in vector types, dim3 and error codes for the emulator (host
// builds only). The layouts and alignments are CUDA's, so that structs shared with device code match.
#pragma once

#include <cstddef>

// ---- declaration specifiers --------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __constant__
#define __managed__
#define __grid_constant__
#define __forceinline__ inline __attribute__((always_inline))
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
#define __cluster_dims__(...)
// Static shared memory: blocks run one after another, so a function-local static is exactly one
// instance per running block (not re-initialised between blocks: its contents carry over, where on
// a GPU they are undefined). `extern __shared__ T name[];` (dynamic shared memory) becomes an extern
// array that the build links to the launch's dynamic shared memory; see cuda_emu.h.
#define __shared__ static

// ---- vector types ------------------------------------------------------------------------------
// clang-format off
#define JM_EMU_VEC(T, N, A2, A4)                                                                    \
  struct __attribute__((aligned(A2))) N##2 { T x, y; };                                             \
  struct N##3 { T x, y, z; };                                                                       \
  struct __attribute__((aligned(A4))) N##4 { T x, y, z, w; };                                       \
  inline N##2 make_##N##2(T x, T y) { return N##2{x, y}; }                                         \
  inline N##3 make_##N##3(T x, T y, T z) { return N##3{x, y, z}; }                                 \
  inline N##4 make_##N##4(T x, T y, T z, T w) { return N##4{x, y, z, w}; }
// clang-format on
JM_EMU_VEC(signed char, char, 2, 4)
JM_EMU_VEC(unsigned char, uchar, 2, 4)
JM_EMU_VEC(short, short, 4, 8)
JM_EMU_VEC(unsigned short, ushort, 4, 8)
JM_EMU_VEC(int, int, 8, 16)
JM_EMU_VEC(unsigned int, uint, 8, 16)
JM_EMU_VEC(long long, longlong, 16, 16)
JM_EMU_VEC(unsigned long long, ulonglong, 16, 16)
JM_EMU_VEC(float, float, 8, 16)
JM_EMU_VEC(double, double, 16, 16)
#undef JM_EMU_VEC

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return uint3{x, y, z}; }
};

constexpr int warpSize = 32;

// ---- runtime types -----------------------------------------------------------------------------
// The values are CUDA's own, so that a code read from a log means the same thing.
enum cudaError {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInitializationError = 3,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevicePointer = 17,
  cudaErrorInvalidMemcpyDirection = 21,
  cudaErrorNotSupported = 801,
  cudaErrorLaunchOutOfResources = 701,
  cudaErrorIllegalAddress = 700,
  cudaErrorAssert = 710,
  cudaErrorIllegalInstruction = 715,
  cudaErrorLaunchFailure = 719,
  cudaErrorUnknown = 999,
};
typedef enum cudaError cudaError_t;

struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;
struct CUevent_st;
typedef struct CUevent_st* cudaEvent_t;

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};

enum cudaFuncAttribute {
  cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
  cudaFuncAttributePreferredSharedMemoryCarveout = 9,
};

enum cudaDeviceAttr {
  cudaDevAttrMaxThreadsPerBlock = 1,
  cudaDevAttrMaxSharedMemoryPerBlock = 8,
  cudaDevAttrWarpSize = 10,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrComputeCapabilityMajor = 75,
  cudaDevAttrComputeCapabilityMinor = 76,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};
