// TensorRT's plugin API, included the one way the glue includes it.
//
// TensorRT's headers include <cuda_runtime_api.h>: from the CUDA toolkit in a real build, from the
// emulator's stand-in (common/emu/include) in the emulated test build, which provides everything
// they use (cudaStream_t, cudaEvent_t, cudaError_t). Standard headers come first because the
// emulator defines __noinline__, which <memory> spells as an attribute. The headers' own
// deprecated declarations (IPluginV2 and friends, which we do not use) are silenced here only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
#include "NvInferRuntime.h"
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

// Symbols TensorRT (or a test) looks up in the library with dlsym; everything else may be hidden.
#if defined(_WIN32)
#define JM_TRT_EXPORT __declspec(dllexport)
#else
#define JM_TRT_EXPORT __attribute__((visibility("default")))
#endif
