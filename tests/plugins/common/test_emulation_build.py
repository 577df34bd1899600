"""The emulation build helper (plugins/emulation.py): caching, dynamic shared memory, errors."""

from __future__ import annotations

import ctypes
import textwrap

import numpy as np
import pytest

from jetmamba.errors import JetmambaError
from jetmamba.plugins import emulation

pytestmark = pytest.mark.skipif(emulation.find_compiler() is None, reason="no C++ compiler (g++ / $CXX)")

KERNEL = textwrap.dedent(
    """
    #include <cuda_runtime.h>   // CUDA's own spelling: the emulated build's stand-in
    #include <cuda_fp16.h>
    #include "helper.cuh"

    namespace demo {
    extern __shared__ __align__(16) float file_scope_smem[];  // namespace scope, aligned

    template <typename T>
    __global__ void reverse_kernel(const T* x, T* y) {
      extern __shared__ T buf[];
      buf[threadIdx.x] = x[blockIdx.x * blockDim.x + threadIdx.x];
      __syncthreads();
      // both arrays start the dynamic shared memory, as on the GPU (else the result is off by 1000)
      const T alias = static_cast<void*>(&file_scope_smem[0]) == static_cast<void*>(&buf[0]) ? 0 : 1000;
      y[blockIdx.x * blockDim.x + threadIdx.x] = OFFSET + buf[blockDim.x - 1 - threadIdx.x] + alias;
    }
    }  // namespace demo

    extern "C" cudaError_t demo_reverse(const float* x, float* y, int grid, int block) {
      JM_LAUNCH(grid, block, block * sizeof(float), 0, demo::reverse_kernel<float>)(x, y);
      return cudaGetLastError();
    }
    """
)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JETMAMBA_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "emulation"


def write_kernel(d, offset="0.0f"):
    (d / "helper.cuh").write_text(f'#pragma once\n#include "common/cuda_emu.h"\n#define OFFSET {offset}\n')
    (d / "demo.cu").write_text(KERNEL)
    return d / "demo.cu"


def run_reverse(lib, block=32, grid=3):
    x = np.arange(grid * block, dtype=np.float32)
    y = np.zeros_like(x)
    fn = lib.demo_reverse
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    fn.restype = ctypes.c_int
    assert fn(x.ctypes.data, y.ctypes.data, grid, block) == 0, lib.emu_last_error()
    return x.reshape(grid, block), y.reshape(grid, block)


def test_dynamic_shared_memory_and_cuda_headers(tmp_path, cache):
    lib = emulation.load([write_kernel(tmp_path)])
    for mode in ("forward", "reverse", "threads"):
        lib.emu_set_mode(mode)
        x, y = run_reverse(lib)
        np.testing.assert_array_equal(y, x[:, ::-1])


def test_built_once_and_rebuilt_when_an_included_header_changes(tmp_path, cache):
    src = write_kernel(tmp_path)
    first = emulation.build([src])
    stamp = first.stat().st_mtime_ns
    assert emulation.build([src]) == first and first.stat().st_mtime_ns == stamp  # from the cache
    write_kernel(tmp_path, offset="100.0f")  # only helper.cuh differs
    second = emulation.build([src])
    assert second != first
    x, y = run_reverse(emulation.load([src]))
    np.testing.assert_array_equal(y, x[:, ::-1] + 100)
    assert sorted(p.name for p in cache.iterdir()) == sorted([first.name, second.name])  # no leftovers
    assert emulation.build([src], defines={"JM_EMU_MAX_DYNAMIC_SMEM": 65536}) not in (first, second)


def test_compile_errors_name_the_original_file(tmp_path, cache):
    src = write_kernel(tmp_path)
    src.write_text(src.read_text().replace("__syncthreads();", "__syncthreads()  // missing semicolon"))
    with pytest.raises(emulation.KernelBuildError) as info:
        emulation.build([src])
    msg = str(info.value)
    assert isinstance(info.value, JetmambaError)
    assert msg.startswith("building demo.cu for the CUDA emulator failed")
    assert f"{src}:" in msg and "error" in msg  # the compiler's own words, at the original path
    assert not [p for p in cache.iterdir() if p.is_dir()]  # the build's scratch folder is gone


def test_missing_compiler_and_sources(tmp_path, cache, monkeypatch):
    src = write_kernel(tmp_path)
    with pytest.raises(emulation.KernelBuildError, match="does not exist"):
        emulation.build([tmp_path / "nope.cu"])
    monkeypatch.setattr(emulation, "find_compiler", lambda: None)
    with pytest.raises(emulation.KernelBuildError, match="no C\\+\\+ compiler found"):
        emulation.build([src])


def test_sanitizer_builds_are_not_loaded_into_python(tmp_path, cache):
    with pytest.raises(emulation.KernelBuildError, match="cannot be loaded into this Python process"):
        emulation.load([write_kernel(tmp_path)], sanitize="thread")
    with pytest.raises(ValueError, match="sanitize must be one of"):
        emulation.build([write_kernel(tmp_path)], sanitize="memory")


def test_rewrite_keeps_lines():
    text = "a\n  extern __shared__ __align__(16) unsigned char raw[];  // x\nextern __shared__ T s [ ] ;\nb\n"
    out = emulation._rewrite_dynamic_shared(text)
    assert out.count("\n") == text.count("\n")
    assert "typedef __align__(16) unsigned char jm_emu_dynamic_t_raw; jm_emu_dynamic_t_raw* const raw" in out
    assert "typedef T jm_emu_dynamic_t_s; jm_emu_dynamic_t_s* const s" in out
    assert "extern __shared__" not in out
