"""The CUDA memory interface: return codes become one-line errors; pinned host views; the choice
of binding. (No GPU here: the cuda-python path is driven by a stand-in module, and by the real
cuda-bindings where installed, which without a driver must fail cleanly.)"""

from __future__ import annotations

import ctypes
import types

import numpy as np
import pytest

from jetmamba.errors import UsageError
from jetmamba.runtime import cudamem


def _fake_runtime(count_status=0):
    names = {0: b"cudaSuccess", 2: b"cudaErrorMemoryAllocation", 35: b"cudaErrorInsufficientDriver"}
    rt = types.SimpleNamespace(
        cudaGetDeviceCount=lambda: (count_status, 1),
        cudaSetDevice=lambda d: (0,),
        cudaMalloc=lambda n: (2, None),  # out of memory
        cudaGetErrorName=lambda s: (0, names[int(s)]),
        cudaGetErrorString=lambda s: (0, b"details"),
    )
    return rt


def test_return_codes_become_clear_errors():
    cuda = cudamem.CudaPython(0, module=_fake_runtime())
    with pytest.raises(cudamem.CudaError, match=r"cudaMalloc failed: cudaErrorMemoryAllocation \(details\)"):
        cuda.malloc(1 << 40)
    with pytest.raises(cudamem.CudaError, match="cudaErrorInsufficientDriver"):
        cudamem.CudaPython(0, module=_fake_runtime(count_status=35))
    with pytest.raises(cudamem.CudaError, match="device 3 does not exist"):
        cudamem.CudaPython(3, module=_fake_runtime())


def test_real_cuda_bindings_without_a_driver_fail_cleanly():
    pytest.importorskip("cuda.bindings.runtime", reason="cuda-python is not installed (it is not a test extra)")
    try:
        cuda = cudamem.CudaPython(0)
    except cudamem.CudaError as exc:
        assert "cudaGetDeviceCount failed" in str(exc) or "does not exist" in str(exc)
    else:
        assert cuda.compute_capability()[0] >= 5  # a real GPU: it must answer


def test_host_buffer_views():
    block = ctypes.create_string_buffer(64)
    buffer = cudamem.HostBuffer(ctypes.addressof(block), 64)
    view = buffer.array(np.int64, (2, 4))
    view[...] = np.arange(8).reshape(2, 4)
    assert np.frombuffer(block.raw, np.int64).tolist() == list(range(8))
    with pytest.raises(UsageError, match="does not fit"):
        buffer.array(np.float32, (17,))


def test_binding_choice(monkeypatch):
    with pytest.raises(UsageError, match="unknown CUDA binding"):
        cudamem.open_cuda(0, prefer="cupy")
    monkeypatch.setattr(cudamem, "_import_cuda_python", lambda: (_ for _ in ()).throw(UsageError("no cuda-python")))
    monkeypatch.setattr(cudamem.importlib, "import_module", lambda name: (_ for _ in ()).throw(ImportError(name)))
    with pytest.raises(UsageError, match="no CUDA Python binding: no cuda-python; pycuda is not installed"):
        cudamem.open_cuda(0)
    assert cudamem.available_binding() is None
