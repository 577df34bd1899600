"""jetmamba::RMSNorm: RMSNormQuant's kernel with an fp output (plugins/rms_norm) against the reference.

Every test body runs emulated on the CPU and, where a GPU exists, on it (tests/support/kernels.py).
The kernel is RMSNormQuant's (tests/plugins/rms_norm_quant covers its paths in depth); here each
team, the vectorised and the element path, a row past the register cache, fp16 and fp32 with and
without the residual, and the argument checks, for the fp output.
"""

from __future__ import annotations

import ctypes

import pytest
import torch
from kernels import BACKENDS, backend  # noqa: F401
from tolerances import assert_close

from jetmamba.compiler.ops.reference import rms_norm_fp

SOURCES = ["rms_norm/rms_norm.cu"]
SUCCESS, INVALID_VALUE = 0, 1
FP32, FP16 = 0, 1
DTYPE_CODES = {torch.float32: FP32, torch.float16: FP16}
BITS = {torch.float32: torch.int32, torch.float16: torch.int16}
EPS = 1e-5
# y is compared within "norm.kernel.<dtype>" (the sums of squares are added in another order than
# torch's, so y can be an fp32 ulp or two apart, or one fp16 rounding step); residual_out bit-exact
TOLERANCE_KEY = {torch.float32: "norm.kernel.fp32", torch.float16: "norm.kernel.fp16"}


class Params(ctypes.Structure):
    _fields_ = [
        ("x", ctypes.c_void_p), ("residual", ctypes.c_void_p), ("weight", ctypes.c_void_p), ("y", ctypes.c_void_p),
        ("residual_out", ctypes.c_void_p), ("rows", ctypes.c_int), ("d", ctypes.c_int), ("x_dtype", ctypes.c_int),
        ("weight_dtype", ctypes.c_int), ("eps", ctypes.c_float),
    ]  # fmt: skip


def call(lib, p: Params | None) -> int:
    fn = lib.jm_rms_norm
    fn.argtypes = [ctypes.POINTER(Params), ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return fn(ctypes.byref(p) if p is not None else None, None)


def ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def make_inputs(shape, dtype, wdtype, with_residual: bool, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).to(dtype)
    residual = torch.randn(shape, generator=g).to(dtype) if with_residual else None
    weight = (0.5 + torch.rand(shape[-1], generator=g)).to(wdtype)  # outputs below 8: the tolerance's premise
    return x, residual, weight


def run(backend, x, residual, weight, offset: int = 0):  # noqa: F811
    """The kernel on the backend; `offset` elements in front of every tensor misalign them."""
    lib = backend.load(SOURCES)

    def place(t):
        if t is None:
            return None
        buf = backend.tensor(torch.cat([torch.zeros(offset, dtype=t.dtype), t.reshape(-1)]))
        return buf[offset:].view(t.shape)

    def empty():
        return backend.empty((offset + x.numel(),), x.dtype)[offset:].view(x.shape)

    xd, rd, wd = place(x), place(residual), place(weight)
    y, r = empty(), empty()
    p = Params(ptr(xd), ptr(rd), ptr(wd), ptr(y), ptr(r), x.numel() // x.shape[-1], x.shape[-1], DTYPE_CODES[x.dtype],
               DTYPE_CODES[weight.dtype], EPS)  # fmt: skip
    backend.check(lib, call(lib, p))
    backend.sync()
    return y.cpu(), r.cpu()


def check(y, r, x, residual, weight) -> None:
    y_ref, r_ref = rms_norm_fp(x, residual, weight, eps=EPS)
    assert torch.equal(r.view(BITS[r.dtype]), r_ref.view(BITS[r.dtype]))
    assert float(y_ref.abs().max()) < 8.0  # the tolerance is one fp16 rounding step of outputs below 8
    assert_close(y, y_ref, TOLERANCE_KEY[x.dtype])


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=["fp16", "fp32"])
@pytest.mark.parametrize("d", [1, 7, 192, 768, 999, 4096, 20000])  # 20000: past the register cache
def test_matches_reference(backend, d, dtype):  # noqa: F811
    for case, (rows, with_residual, wdtype) in enumerate([(1, True, dtype), (3, False, torch.float32)]):
        x, residual, weight = make_inputs((1, rows, d), dtype, wdtype, with_residual, seed=d * 10 + case)
        check(*run(backend, x, residual, weight), x, residual, weight)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=["fp16", "fp32"])
def test_misaligned_tensors_take_the_element_path(backend, dtype):  # noqa: F811
    x, residual, weight = make_inputs((2, 3, 384), dtype, torch.float16, True, seed=7)
    check(*run(backend, x, residual, weight, offset=1), x, residual, weight)


@pytest.mark.parametrize("backend", ["emu"], indirect=True)
def test_fiber_schedules_agree(backend):  # noqa: F811
    """The block reduction's barrier under the emulator's three schedules: the same bits."""
    lib = backend.load(SOURCES)
    x, residual, weight = make_inputs((1, 2, 2048), torch.float16, torch.float16, True, seed=5)
    results = []
    for mode in ("forward", "reverse", "random"):
        lib.emu_set_mode(mode)
        results.append(run(backend, x, residual, weight))
    lib.emu_set_mode("forward")
    for y, r in results[1:]:
        assert torch.equal(y.view(torch.int16), results[0][0].view(torch.int16)) and torch.equal(r, results[0][1])
    check(*results[0], x, residual, weight)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_bad_arguments_are_refused_and_nothing_is_written(backend):  # noqa: F811
    lib = backend.load(SOURCES)
    x, residual, weight = make_inputs((1, 2, 64), torch.float32, torch.float32, True, seed=1)
    xd, rd, wd = backend.tensor(x), backend.tensor(residual), backend.tensor(weight)
    y, r = backend.empty(x.shape, torch.float32), backend.empty(x.shape, torch.float32)

    def params(**kw):
        base = dict(x=ptr(xd), residual=ptr(rd), weight=ptr(wd), y=ptr(y), residual_out=ptr(r), rows=2, d=64,
                    x_dtype=FP32, weight_dtype=FP32, eps=EPS)  # fmt: skip
        base.update(kw)
        return Params(**base)

    bad = [dict(x=None), dict(weight=None), dict(y=None), dict(residual_out=None), dict(rows=-1), dict(d=0),
           dict(d=-5), dict(x_dtype=7), dict(weight_dtype=2), dict(eps=-1e-6), dict(eps=float("inf"))]  # fmt: skip
    assert call(lib, None) == INVALID_VALUE
    for kw in bad:
        assert call(lib, params(**kw)) == INVALID_VALUE, kw
    assert call(lib, params(rows=0)) == SUCCESS
    backend.sync()
    assert y.cpu().isnan().all() and r.cpu().isnan().all()
