"""jetmamba::RMSNormQuant: the CUDA kernel (plugins/rms_norm_quant) against the op reference.

Every test body runs emulated on the CPU and, where a GPU exists, on it (tests/support/kernels.py).
Row lengths cover both teams (a warp per row up to 64 vectors, a block beyond), the vectorised path
(d a multiple of 8 fp16 / 4 fp32 channels, 16-byte aligned tensors) and the element path (odd d,
misaligned tensors), rows past the register cache (re-read from residual_out), fp16 and fp32
activations and weights, with and without the residual, saturating scales and the emulator's three
fiber schedules.
"""

from __future__ import annotations

import ctypes

import pytest
import torch
from kernels import BACKENDS, backend  # noqa: F401

from jetmamba.compiler.ops.reference import rms_norm_quant

SOURCES = ["rms_norm_quant/rms_norm_quant.cu"]
SUCCESS, INVALID_VALUE = 0, 1
FP32, FP16 = 0, 1
DTYPE_CODES = {torch.float32: FP32, torch.float16: FP16}
EPS = 1e-5

# The kernel computes the reference's fp32 operations in the reference's order, with correctly
# rounded divisions, but sums the squares in another order (per-thread partial sums, then a
# butterfly across lanes and warps, where torch sums in its own blocked order): the inverse rms can
# be an ulp or two apart, and so can value / out_scale. A code then differs where that quotient lies
# within a hair of a half-integer, where round-half-to-even goes one way or the other: by 1, at most
# TIE_WINDOW quanta from the tie (the fp64 value decides), on at most MAX_TIE_FRACTION of the
# outputs (or one output in a small case). residual_out involves no sum: it is bit-exact.
TIE_WINDOW = 1e-3
MAX_TIE_FRACTION = 1e-4


class Params(ctypes.Structure):
    _fields_ = [
        ("x", ctypes.c_void_p), ("residual", ctypes.c_void_p), ("weight", ctypes.c_void_p), ("y", ctypes.c_void_p),
        ("residual_out", ctypes.c_void_p), ("rows", ctypes.c_int), ("d", ctypes.c_int), ("x_dtype", ctypes.c_int),
        ("weight_dtype", ctypes.c_int), ("eps", ctypes.c_float), ("out_scale", ctypes.c_float),
    ]  # fmt: skip


def call(lib, p: Params | None) -> int:
    fn = lib.jm_rms_norm_quant
    fn.argtypes = [ctypes.POINTER(Params), ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return fn(ctypes.byref(p) if p is not None else None, None)


def ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def make_inputs(shape, dtype, wdtype, with_residual: bool, seed: int, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * scale).to(dtype)
    residual = (torch.randn(shape, generator=g) * scale).to(dtype) if with_residual else None
    weight = (1.0 + 0.3 * torch.randn(shape[-1], generator=g)).to(wdtype)
    return x, residual, weight


def run(backend, lib, x, residual, weight, out_scale, eps=EPS, offset: int = 0):  # noqa: F811
    """The kernel on the backend; `offset` elements of padding in front of every tensor make them
    misaligned for the vector path. Returns (y, residual_out) on the CPU."""

    def place(t):
        if t is None:
            return None
        buf = backend.tensor(torch.cat([torch.zeros(offset, dtype=t.dtype), t.reshape(-1)]))
        return buf[offset:].view(t.shape)

    def empty(shape, dtype):
        return backend.empty((offset + torch.Size(shape).numel(),), dtype)[offset:].view(shape)

    xd, rd, wd = place(x), place(residual), place(weight)
    y, r = empty(x.shape, torch.int8), empty(x.shape, x.dtype)
    rows = x.numel() // x.shape[-1]
    p = Params(ptr(xd), ptr(rd), ptr(wd), ptr(y), ptr(r), rows, x.shape[-1], DTYPE_CODES[x.dtype],
               DTYPE_CODES[weight.dtype], eps, out_scale)  # fmt: skip
    backend.check(lib, call(lib, p))
    backend.sync()
    return y.cpu(), r.cpu()


def exact_quotient(r: torch.Tensor, weight: torch.Tensor, eps: float, out_scale: float) -> torch.Tensor:
    """rmsnorm(r) * weight / out_scale in fp64, from the stored r: where the fp32 results fall."""
    r64 = r.double()
    return r64 / torch.sqrt(r64.pow(2).mean(-1, keepdim=True) + eps) * weight.double() / out_scale


def check(y, r, x, residual, weight, out_scale, eps=EPS) -> int:
    """residual_out bit-exact, y equal to the reference but for ±1 at rounding ties; returns the ties."""
    y_ref, r_ref = rms_norm_quant(x, residual, weight, eps=eps, out_scale=out_scale)
    assert torch.equal(r.view(torch.int16 if r.dtype == torch.float16 else torch.int32),
                       r_ref.view(torch.int16 if r.dtype == torch.float16 else torch.int32))  # fmt: skip
    diff = (y.int() - y_ref.int()).abs()
    assert int(diff.max()) <= 1, f"an int8 output is {int(diff.max())} codes off"
    bad = diff > 0
    n_bad = int(bad.sum())
    if n_bad:
        q = exact_quotient(r_ref, weight, eps, out_scale)[bad]
        distance = (q - q.floor() - 0.5).abs()
        assert float(distance.max()) < TIE_WINDOW, f"a ±1 difference {float(distance.max()):.3g} quanta from a tie"
    assert n_bad <= max(1.0, MAX_TIE_FRACTION * y.numel()), f"{n_bad} of {y.numel()} outputs off by one"
    return n_bad


@pytest.fixture
def lib(backend):  # noqa: F811
    lib = backend.load(SOURCES)
    if backend.kind == "emu":
        lib.emu_set_mode("forward")
    return lib


D_SIZES = [1, 7, 64, 192, 384, 512, 520, 768, 999, 4096]  # warp team up to 64 vectors (512 fp16 channels), 999: odd


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=["fp16", "fp32"])
@pytest.mark.parametrize("d", D_SIZES)
def test_matches_reference(backend, lib, d, dtype):  # noqa: F811
    """Odd and even row counts, with and without the residual, fp16 and fp32 weights."""
    for case, (rows, with_residual, wdtype) in enumerate([(1, True, dtype), (5, False, torch.float32),
                                                          (3, True, torch.float16)]):  # fmt: skip
        x, residual, weight = make_inputs((1, rows, d), dtype, wdtype, with_residual, seed=d * 10 + case)
        y, r = run(backend, lib, x, residual, weight, out_scale=4.0 / 127)
        check(y, r, x, residual, weight, 4.0 / 127)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize(
    ("d", "dtype"),
    [(16384, torch.float16), (16384, torch.float32), (20000, torch.float16), (8193, torch.float32)],
    ids=["16384-fp16", "16384-fp32", "20000-fp16-past-cache", "8193-fp32-element-past-cache"],
)
def test_long_rows(backend, lib, d, dtype):  # noqa: F811
    """Up to 16384 channels the row stays in registers (16 values a thread, 1024 threads); longer rows
    (and rows over 8192 on the element path) re-read their tail from residual_out."""
    x, residual, weight = make_inputs((2, 1, d), dtype, torch.float16, True, seed=d)
    y, r = run(backend, lib, x, residual, weight, out_scale=4.0 / 127)
    check(y, r, x, residual, weight, 4.0 / 127)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=["fp16", "fp32"])
def test_misaligned_tensors_take_the_element_path(backend, lib, dtype):  # noqa: F811
    """d a multiple of the vector width, but the tensors one element off 16-byte alignment."""
    x, residual, weight = make_inputs((2, 3, 768), dtype, dtype, True, seed=7)
    y, r = run(backend, lib, x, residual, weight, out_scale=4.0 / 127, offset=1)
    check(y, r, x, residual, weight, 4.0 / 127)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_saturation_and_large_activations(backend, lib):  # noqa: F811
    """A small scale saturates most codes to -128 / 127 exactly; fp16 activations of a few thousand
    (their squares overflow fp16, not the fp32 sum)."""
    x, residual, weight = make_inputs((1, 4, 1024), torch.float16, torch.float16, True, seed=3, scale=4e3)
    y, r = run(backend, lib, x, residual, weight, out_scale=0.002)
    check(y, r, x, residual, weight, 0.002)
    assert (y == 127).float().mean() > 0.3 and (y == -128).float().mean() > 0.3


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_rounding_ties_are_rare(backend, lib):  # noqa: F811
    """A larger sample (64 rows of 4096 and 1000 channels, fp32 and fp16): the fraction of ±1 ties."""
    n_bad = total = 0
    for d, dtype in ((4096, torch.float32), (4096, torch.float16), (1000, torch.float32)):
        x, residual, weight = make_inputs((4, 16, d), dtype, torch.float32, True, seed=d + 11)
        y, r = run(backend, lib, x, residual, weight, out_scale=3.0 / 127)
        n_bad += check(y, r, x, residual, weight, 3.0 / 127)
        total += y.numel()
    print(f"rounding ties: {n_bad} of {total} int8 outputs ({n_bad / total:.2e})")
    assert n_bad <= MAX_TIE_FRACTION * total


@pytest.mark.parametrize("backend", ["emu"], indirect=True)
@pytest.mark.parametrize("mode", ["forward", "reverse", "random"])
def test_fiber_schedules_agree(backend, lib, mode):  # noqa: F811
    """The block reduction's barrier: every schedule of the emulated threads gives the same bits."""
    x, residual, weight = make_inputs((1, 3, 3000), torch.float32, torch.float32, True, seed=5)
    lib.emu_set_mode("forward")
    want = run(backend, lib, x, residual, weight, out_scale=4.0 / 127)
    lib.emu_set_mode(mode)
    got = run(backend, lib, x, residual, weight, out_scale=4.0 / 127)
    lib.emu_set_mode("forward")
    assert torch.equal(want[0], got[0]) and torch.equal(want[1].view(torch.int32), got[1].view(torch.int32))
    check(*got, x, residual, weight, 4.0 / 127)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_bad_arguments_are_refused_and_nothing_is_written(backend, lib):  # noqa: F811
    x, residual, weight = make_inputs((1, 2, 64), torch.float16, torch.float16, True, seed=1)
    xd, rd, wd = backend.tensor(x), backend.tensor(residual), backend.tensor(weight)
    y, r = backend.empty(x.shape, torch.int8), backend.empty(x.shape, torch.float16)

    def params(**kw):
        base = dict(x=ptr(xd), residual=ptr(rd), weight=ptr(wd), y=ptr(y), residual_out=ptr(r), rows=2, d=64,
                    x_dtype=FP16, weight_dtype=FP16, eps=EPS, out_scale=0.05)  # fmt: skip
        base.update(kw)
        return Params(**base)

    bad = [dict(x=None), dict(weight=None), dict(y=None), dict(residual_out=None), dict(rows=-1), dict(d=0),
           dict(x_dtype=2), dict(weight_dtype=-1), dict(eps=-1.0), dict(eps=float("nan")), dict(out_scale=0.0),
           dict(out_scale=float("inf")), dict(out_scale=float("nan"))]  # fmt: skip
    assert call(lib, None) == INVALID_VALUE
    for kw in bad:
        assert call(lib, params(**kw)) == INVALID_VALUE, kw
    assert call(lib, params(rows=0)) == SUCCESS
    backend.sync()
    assert (y.cpu() == -77).all() and r.cpu().isnan().all()
    assert call(lib, params(residual=None)) == SUCCESS  # the residual is optional
    backend.sync()
    check(y.cpu(), r.cpu(), x, None, weight, 0.05)
