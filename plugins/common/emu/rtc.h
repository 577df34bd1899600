// NVRTC (__CUDACC_RTC__): the CUDA 12.6 compile check of the device code (jetmamba kernels check).
//
// NVRTC compiles device code only, but the .cu files also hold the C launchers. NVRTC parses host
// functions without generating code for them, so they only need declarations of the runtime API
// they call (its built-in header has the types and enums, not the functions), and JM_LAUNCH must
// name the kernel so the template instantiations the launchers use are compiled, as under nvcc.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

// the runtime API subset the emulator provides (emu/runtime.h), as host declarations
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorName(cudaError_t);
const char* cudaGetErrorString(cudaError_t);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaStreamSynchronize(cudaStream_t);
cudaError_t cudaGetDevice(int*);
cudaError_t cudaSetDevice(int);
cudaError_t cudaDeviceGetAttribute(int*, cudaDeviceAttr, int);
template <typename T>
cudaError_t cudaFuncSetAttribute(T*, cudaFuncAttribute, int);
cudaError_t cudaMalloc(void**, size_t);
template <typename T>
cudaError_t cudaMalloc(T**, size_t);
cudaError_t cudaFree(void*);
cudaError_t cudaMemcpy(void*, const void*, size_t, cudaMemcpyKind);
cudaError_t cudaMemcpyAsync(void*, const void*, size_t, cudaMemcpyKind, cudaStream_t = 0);
cudaError_t cudaMemset(void*, int, size_t);
cudaError_t cudaMemsetAsync(void*, int, size_t, cudaStream_t = 0);

namespace jm {
namespace rtc {
// JM_LAUNCH(grid, block, smem, stream, kernel)(args...) becomes LaunchSink{kernel}(args...): the
// kernel's address is taken (so its instantiation is compiled), nothing is launched
template <typename Kernel>
struct LaunchSink {
  Kernel kernel;
  template <typename... Args>
  void operator()(Args&&...) const {}
};
template <typename Kernel>
LaunchSink<Kernel> make_sink(dim3 grid, dim3 block, size_t smem, cudaStream_t stream, Kernel kernel) {
  (void)grid, (void)block, (void)smem, (void)stream;  // evaluated, as a launch would
  return LaunchSink<Kernel>{kernel};
}
}  // namespace rtc
}  // namespace jm
