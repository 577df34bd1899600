"""Running a kernel's C launcher in the tests: emulated on the CPU, or on a real GPU (GPU tier).

    @pytest.mark.parametrize("backend", BACKENDS, indirect=True)
    def test_x(backend):
        lib = backend.load(["plugins/my_op/my_op.cu"])
        x = backend.tensor(torch_tensor)              # on the backend's device
        err = lib.jm_my_op(ctypes.byref(params), None)
        backend.check(lib, err)                       # 0, or the CUDA error with the emulator's reason
        backend.sync()

``BACKENDS`` is ``["emu", "gpu"]``; "gpu" carries the ``gpu`` marker (skipped with a reason where
there is no CUDA GPU, see tests/conftest.py). The pointers in a params struct are
``tensor.data_ptr()`` on either backend.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
BACKENDS = ["emu", pytest.param("gpu", marks=pytest.mark.gpu)]


@dataclass
class Backend:
    kind: str  # "emu" | "gpu"

    @property
    def device(self) -> torch.device:
        return torch.device("cuda" if self.kind == "gpu" else "cpu")

    def load(self, sources, **kwargs) -> ctypes.CDLL:
        paths = [PLUGINS / s if not Path(s).is_absolute() else Path(s) for s in sources]
        if self.kind == "gpu":
            from jetmamba.plugins import nvcc

            return nvcc.load(paths)
        from jetmamba.plugins import emulation

        if emulation.find_compiler() is None:
            pytest.skip("no C++ compiler (g++ / $CXX) for the CUDA emulator")
        return emulation.load(paths, **kwargs)

    def tensor(self, t: torch.Tensor) -> torch.Tensor:
        return t.contiguous().to(self.device)

    def empty(self, shape, dtype) -> torch.Tensor:
        # filled with a pattern, not zeros, so an output the kernel forgets to write is noticed
        t = torch.empty(shape, dtype=dtype, device=self.device)
        return t.fill_(-77 if dtype == torch.int8 else float("nan"))

    def sync(self) -> None:
        if self.kind == "gpu":
            torch.cuda.synchronize()

    def check(self, lib, err: int) -> None:
        if err != 0:
            why = lib.emu_last_error() if self.kind == "emu" else ""
            raise AssertionError(f"launcher returned CUDA error {err} {why}")


@pytest.fixture
def backend(request) -> Backend:
    return Backend(request.param)
