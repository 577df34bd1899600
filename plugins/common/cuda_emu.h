// jetmamba's CUDA front door: include this (and nothing else of CUDA) in kernel sources.
//
// Under nvcc (__CUDACC__) it includes CUDA's own headers and defines JM_LAUNCH as a real launch;
// under NVRTC (__CUDACC_RTC__, the CUDA 12.6 check) see emu/rtc.h.
// Under a host C++17 compiler it is a small CUDA *execution emulator*, so that the same .cuh/.cu
// sources compile with g++ and run on a CPU (tests on machines without a GPU). The emulator is
// header-only; build emulated kernels with jetmamba.plugins.emulation (plugins/emulation.py).
//
// Launching (both worlds):
//     JM_LAUNCH(grid, block, smem_bytes, stream, kernel)(args...);
//     return cudaGetLastError();
// `kernel` comes last so that a template-id with commas needs no parentheses:
//     JM_LAUNCH(dim3(n / 256), 256, 0, stream, scan_kernel<float, 4>)(x, y, n);
//
// Execution model of the emulator
// - Blocks run one after another, in blockIdx order (x fastest). All threads of the running block
//   are live at once, each with its own stack, so __syncthreads is a real barrier.
// - Shared memory: `__shared__` is `static` (one instance per kernel, which is one per running
//   block since blocks do not overlap; not cleared between blocks). `extern __shared__ T name[];`
//   (dynamic shared memory, the launch's smem bytes, filled with the byte 0xff (JM_EMU_POISON) at
//   the start of every block so that reads of unwritten memory show up as NaN / -1) is rewritten
//   by the build helper to JM_EMU_DYNAMIC_SHARED(T, name): a pointer, not an array (C++ cannot
//   express the CUDA declaration; a build without the helper must spell it that way itself).
// - Two scheduling modes, chosen per launch by jm_emu_set_mode() or the environment variable
//   JM_EMU_MODE (default "forward"; "threads" in ThreadSanitizer / AddressSanitizer builds):
//   * "forward", "reverse", "random" (deterministic fibers): each CUDA thread is a cooperative
//     fiber on the launching host thread. The scheduler runs one thread until it reaches a
//     synchronisation point (__syncthreads*, a warp collective, or its end), then the next, in
//     increasing threadIdx order (forward), decreasing order (reverse) or a seeded random
//     permutation per round (random, jm_emu_set_seed). A thread that completes a barrier also
//     yields, so every phase between synchronisation points runs whole threads in that order.
//     Results are deterministic. A race between two threads of one phase (a missing barrier)
//     shows in at least one of forward / reverse: the reader runs before the writer it forgot to
//     wait for, or after the writer it should have preceded. Tests run both orders.
//   * "threads": each CUDA thread of the block is a real POSIX thread (created per launch, reused
//     across its blocks); barriers and warp collectives are a mutex and condition variables, so a
//     -fsanitize=thread build reports the data races of a missing barrier, and atomics are really
//     concurrent. Slow (a barrier wakes every thread: ~20 ms for a 256-thread block with ten
//     barriers on two cores); meant for small launches under TSan.
// - __syncthreads waits for every thread of the block that has not exited (a thread that returned
//   counts as arrived, as on sm_70+). __syncthreads_count / _and / _or reduce their predicate.
// - Warp collectives (__shfl*_sync, __ballot_sync, __any/__all/__uni_sync, __match_*_sync,
//   __reduce_*_sync, __syncwarp) are synchronisation points of the lanes named in the mask:
//   the last lane to arrive computes every participant's result with PTX's exact rules (width
//   segments, clamping, own value when out of range), then all go on. Lanes named in the mask that
//   have exited (or do not exist: a partial last warp) do not take part, and reading a value from a
//   lane outside the group gives the poison value (all bits set), as CUDA leaves it undefined.
// - The emulator fails the launch (cudaErrorLaunchFailure; the message goes to stderr unless
//   JM_EMU_QUIET=1, and to jm_emu_last_error()) when a lane is not in its own mask, a width is not
//   a power of two, lanes that name each other make different calls or masks, a thread calls
//   __trap(), or the block deadlocks (every live thread waits and none can go on, e.g. a lane in a
//   shuffle waiting for a lane that waits at __syncthreads). Bad launch configurations give
//   cudaErrorInvalidConfiguration. The library stays usable after either.
// - warpSize is 32; lane = linear thread index % 32, linear = x + y*bx + z*bx*by.
// - __half / __nv_bfloat16 are our own, bit-exact (emu/fp16.h); the intrinsics (emu/intrinsics.h)
//   include fast math, conversions, bit ops, __dp4a, __ldg, atomics; emu/runtime.h has the
//   runtime API subset (errors, streams as dummies, cudaMalloc/Memcpy/Memset on host memory).
// - Launches are serialised (one at a time per library) and synchronous; their errors are
//   returned by cudaGetLastError() of the launching host thread. The emulator's state is hidden
//   inside each shared library, so differently built libraries can share a process.
// - JM_EMULATED is 1 here and 0 under nvcc; __CUDA_ARCH__ is not defined. Environment: JM_EMU_MODE,
//   JM_EMU_POISON (byte, default 0xff), JM_EMU_STACK_KB (per fiber / thread), JM_EMU_QUIET.
// Limits: no implicit warp synchrony (use the _sync intrinsics and __syncwarp: lanes of a warp
// run one after another between collectives), no inline PTX, no cooperative groups or grid-wide
// sync, no dynamic parallelism; a block that spins waiting for another block hangs (blocks are
// sequential); the memory model is the host's (only threads mode under TSan checks ordering);
// fast-math intrinsics and float contraction differ from the GPU's in the last bits.
#pragma once

#if defined(__CUDACC_RTC__)  // NVRTC: the CUDA 12.6 check of the device code (emu/rtc.h)

#include "emu/rtc.h"

#define JM_EMULATED 0
#define JM_LAUNCH(grid, block, smem, stream, ...) \
  ::jm::rtc::make_sink(dim3(grid), dim3(block), static_cast<size_t>(smem), (stream), __VA_ARGS__)

#elif defined(__CUDACC__)

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#define JM_EMULATED 0
#define JM_LAUNCH(grid, block, smem, stream, ...) __VA_ARGS__<<<(grid), (block), (smem), (stream)>>>

#else  // host compiler: the emulator

#include "emu/types.h"
#include "emu/fp16.h"
#include "emu/intrinsics.h"
#include "emu/runtime.h"

#define JM_EMULATED 1
// Defined last: libstdc++'s <memory> spells __attribute__((__noinline__)), which this macro would
// break, so standard headers that use it must come before (<memory> already has).
#define __noinline__ __attribute__((noinline))
#define JM_LAUNCH(grid, block, smem, stream, ...)                                                      \
  ::jm::emu::detail::LaunchBuilder{::jm::emu::detail::LaunchConfig{                                   \
      dim3(grid), dim3(block), static_cast<size_t>(smem), (stream), #__VA_ARGS__}}(__VA_ARGS__)

#endif
