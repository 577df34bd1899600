"""ctypes bindings of native/scan_cpu.c and the thread fan-out that drives them.

The C functions take a plain argument struct and a thread count; they split the work over
OpenMP threads themselves (sharing PyTorch's libgomp, see native/scan_cpu.c).
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch

from jetmamba.native import load_library

SOURCE = Path(__file__).parent / "native" / "scan_cpu.c"

_i64 = ctypes.c_int64
_fp = ctypes.c_void_p


class Scan1Args(ctypes.Structure):
    """Mirror of ``jm_scan1_args``."""

    _fields_ = [
        ("batch", _i64), ("seqlen", _i64), ("dim", _i64), ("dstate", _i64),
        ("x", _fp), ("x_bs", _i64), ("x_ts", _i64),
        ("dt", _fp), ("dt_bs", _i64), ("dt_ts", _i64),
        ("dt_bias", _fp), ("dt_softplus", ctypes.c_int32),
        ("z", _fp), ("z_bs", _i64), ("z_ts", _i64),
        ("B", _fp), ("B_bs", _i64), ("B_ts", _i64),
        ("C", _fp), ("C_bs", _i64), ("C_ts", _i64),
        ("A_t", _fp), ("D", _fp),
        ("y", _fp), ("y_bs", _i64), ("y_ts", _i64),
        ("h", _fp),
    ]  # fmt: skip


class SSDArgs(ctypes.Structure):
    """Mirror of ``jm_ssd_args``."""

    _fields_ = [
        ("batch", _i64), ("seqlen", _i64), ("nheads", _i64), ("headdim", _i64),
        ("ngroups", _i64), ("dstate", _i64),
        ("x", _fp), ("x_bs", _i64), ("x_ts", _i64),
        ("dt", _fp), ("dt_bs", _i64), ("dt_ts", _i64),
        ("B", _fp), ("B_bs", _i64), ("B_ts", _i64),
        ("C", _fp), ("C_bs", _i64), ("C_ts", _i64),
        ("A", _fp), ("D", _fp),
        ("y", _fp), ("y_bs", _i64), ("y_ts", _i64),
        ("h", _fp),
    ]  # fmt: skip


class ConvArgs(ctypes.Structure):
    """Mirror of ``jm_conv_args``."""

    _fields_ = [
        ("batch", _i64), ("seqlen", _i64), ("channels", _i64), ("width", _i64),
        ("x", _fp), ("x_bs", _i64), ("x_ts", _i64),
        ("w_t", _fp), ("bias", _fp), ("state_in", _fp), ("y", _fp), ("state_out", _fp),
        ("silu", ctypes.c_int32),
    ]  # fmt: skip


FUNCTIONS = {
    "jm_selective_scan_f32": Scan1Args,
    "jm_ssd_scan_f32": SSDArgs,
    "jm_causal_conv1d_f32": ConvArgs,
}


@functools.lru_cache(maxsize=1)
def library() -> ctypes.CDLL | None:
    lib = load_library("scan_cpu", SOURCE, openmp=True)
    if lib is not None:
        for name, args in FUNCTIONS.items():
            fn = getattr(lib, name)
            fn.argtypes = [ctypes.POINTER(args), ctypes.c_int]
            fn.restype = ctypes.c_int
    return lib


def available() -> bool:
    return library() is not None


def rows(t: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """fp32 [b, l, c] with contiguous rows, and its batch and time strides (in elements)."""
    t = t.to(torch.float32)
    if t.stride(-1) != 1:
        t = t.contiguous()
    return t, t.stride(0), t.stride(1)


def ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def run(fn_name: str, args: ctypes.Structure, work: int) -> None:
    """Call ``fn_name`` on ``args`` with torch's intra-op thread count (one thread below ~64k
    elements of work, a decode step, where handing out items costs more than it saves)."""
    threads = max(1, torch.get_num_threads()) if work >= (1 << 16) else 1
    if getattr(library(), fn_name)(ctypes.byref(args), threads):
        raise MemoryError(f"{fn_name}: out of memory for its state buffer")
