"""jetmamba::W4A8Linear: the CUDA kernels (plugins/w4a8_linear) against the op reference.

Every test body runs emulated on the CPU and, where a GPU exists, on it (tests/support/kernels.py).
M = 1..8 takes the decode GEMV (one instantiation per M), larger M the tiled GEMM; K from 96 to
4096 with group sizes 128, 64 and 32, N not a multiple of the tiles (16 rows a GEMV block, 64 a
GEMM tile), with and without bias. Outputs are held to the error model in tests/support/w4_linear.py
(the int32 group sums are exact, so only the fp32 scaling and summation of the partials differ).
"""

from __future__ import annotations

import ctypes

import pytest
import torch
from kernels import BACKENDS, backend  # noqa: F401
from w4_linear import INVALID_VALUE, SUCCESS, Case, bind, check_outputs, ptr, weights

from jetmamba.compiler.ops.reference import w4a8_linear

SOURCES = ["w4a8_linear/w4a8_linear.cu"]


class Params(ctypes.Structure):
    _fields_ = [
        ("x", ctypes.c_void_p), ("qweight", ctypes.c_void_p), ("scales", ctypes.c_void_p), ("bias", ctypes.c_void_p),
        ("y", ctypes.c_void_p), ("M", ctypes.c_int), ("N", ctypes.c_int), ("K", ctypes.c_int),
        ("group_size", ctypes.c_int), ("x_scale", ctypes.c_float),
    ]  # fmt: skip


def call(lib, p: Params | None) -> int:
    bind(lib.jm_w4a8_linear, Params)
    return lib.jm_w4a8_linear(ctypes.byref(p) if p is not None else None, None)


X_SCALE = 0.02


def activations(case: Case) -> torch.Tensor:
    g = torch.Generator().manual_seed(case.seed + 1)
    return torch.randint(-128, 128, (case.m, case.k), generator=g, dtype=torch.int8)


def run(backend, lib, case: Case, x=None, x_scale: float = X_SCALE):  # noqa: F811
    qweight, scales, bias, codes = weights(case)
    x = activations(case) if x is None else x
    xd, qd, sd = backend.tensor(x), backend.tensor(qweight), backend.tensor(scales)
    bd = backend.tensor(bias) if bias is not None else None
    y = backend.empty((case.m, case.n), torch.float16)
    p = Params(ptr(xd), ptr(qd), ptr(sd), ptr(bd), ptr(y), case.m, case.n, case.k, case.group_size, x_scale)
    backend.check(lib, call(lib, p))
    backend.sync()
    want = w4a8_linear(x, qweight, scales, bias, x_scale=x_scale, group_size=case.group_size)
    w = codes.double() * scales.double().repeat_interleave(case.group_size, 1)
    abs_terms = x_scale * x.double().abs() @ w.abs().t() + (0 if bias is None else bias.double().abs())
    return y.cpu(), want, abs_terms


CASES = [
    Case(1, 130, 128), Case(1, 64, 4096), Case(1, 50, 192, 64, bias=False), Case(1, 17, 96, 32),
    Case(2, 40, 1024, bias=False), Case(2, 33, 2560), Case(7, 130, 320, 64), Case(7, 16, 1152),
    Case(8, 30, 512, 32, bias=False), Case(3, 20, 256), Case(4, 24, 384), Case(5, 9, 128), Case(6, 70, 256, 64),
    Case(9, 65, 256), Case(64, 130, 512), Case(64, 64, 192, 64, bias=False), Case(130, 70, 1024),
    Case(130, 130, 4096, bias=False), Case(100, 1, 96, 32),
]  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_matches_reference(backend, case):  # noqa: F811
    lib = backend.load(SOURCES)
    y, want, abs_terms = run(backend, lib, case)
    check_outputs(y, want, abs_terms, case.k)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_saturated_activations(backend):  # noqa: F811
    """x all -128 or 127 against codes -8..7: the largest int32 group sums (|sum| = 128 * 8 * G)."""
    case = Case(70, 40, 256, bias=False, seed=3)
    g = torch.Generator().manual_seed(9)
    x = torch.where(torch.rand(70, 256, generator=g) < 0.5, -128, 127).to(torch.int8)
    lib = backend.load(SOURCES)
    for rows in (x[:5], x):  # the GEMV and the GEMM
        y, want, abs_terms = run(backend, lib, Case(rows.shape[0], 40, 256, bias=False, seed=3), x=rows, x_scale=1e-3)
        check_outputs(y, want, abs_terms, case.k)


@pytest.mark.parametrize("backend", ["emu"], indirect=True)
@pytest.mark.parametrize("case", [Case(4, 40, 2048, seed=5), Case(70, 70, 256, seed=6)], ids=["gemv", "gemm"])
def test_fiber_schedules_agree(backend, case):  # noqa: F811
    """forward, reverse and random thread orders give the same bits (the staging barriers hold)."""
    lib = backend.load(SOURCES)
    results = []
    try:
        for mode in ("forward", "reverse", "random"):
            lib.emu_set_mode(mode)
            lib.emu_set_seed(11)
            results.append(run(backend, lib, case)[0])
    finally:
        lib.emu_set_mode(None)
    check_outputs(results[0], *run(backend, lib, case)[1:], case.k)
    for y in results[1:]:
        assert torch.equal(y, results[0])


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_bad_arguments_are_rejected_and_write_nothing(backend):  # noqa: F811
    lib = backend.load(SOURCES)
    assert lib.jm_w4a8_linear_params_size() == ctypes.sizeof(Params)
    case = Case(2, 32, 256)
    qweight, scales, bias, _ = weights(case)
    x = backend.tensor(activations(case))
    qd, sd, bd = backend.tensor(qweight), backend.tensor(scales), backend.tensor(bias)
    y = backend.empty((2, 32), torch.float16)
    good = dict(x=ptr(x), qweight=ptr(qd), scales=ptr(sd), bias=ptr(bd), y=ptr(y), M=2, N=32, K=256, group_size=128,
                x_scale=X_SCALE)  # fmt: skip
    assert call(lib, Params(**good)) == SUCCESS
    backend.sync()
    y.fill_(float("nan"))
    assert call(lib, None) == INVALID_VALUE
    bad = {
        "x NULL": dict(x=None), "qweight NULL": dict(qweight=None), "scales NULL": dict(scales=None),
        "y NULL": dict(y=None), "M < 0": dict(M=-1), "N = 0": dict(N=0), "K = 0": dict(K=0, group_size=32),
        "G = 16": dict(group_size=16), "G = 48": dict(group_size=48, K=192), "G does not divide K": dict(K=224),
        "x misaligned": dict(x=ptr(x) + 8), "qweight misaligned": dict(qweight=ptr(qd) + 8),
        "scales misaligned": dict(scales=ptr(sd) + 1), "bias misaligned": dict(bias=ptr(bd) + 2),
        "y overlaps x": dict(y=ptr(x)), "y overlaps qweight": dict(y=ptr(qd) + 64), "M too large": dict(M=1 << 30),
        "x_scale = 0": dict(x_scale=0.0), "x_scale NaN": dict(x_scale=float("nan")),
        "x_scale inf": dict(x_scale=float("inf")),
    }  # fmt: skip
    for why, change in bad.items():
        assert call(lib, Params(**{**good, **change})) == INVALID_VALUE, why
    backend.sync()
    assert torch.isnan(y.cpu().float()).all(), "a rejected call wrote y"
    assert call(lib, Params(**{**good, "M": 0})) == SUCCESS  # nothing to do


def test_torch_ops_twin_matches_the_reference():
    """jetmamba.plugins.torch_ops.w4a8_linear: the reference's signature, [b, l, K] in, on the kernel."""
    from jetmamba.plugins import torch_ops

    case = Case(6, 48, 256, 64, seed=8)
    qweight, scales, bias, codes = weights(case)
    x = activations(case).reshape(2, 3, 256)
    kw = {"group_size": 64} if "w4a8" == "w4a16" else {"group_size": 64, "x_scale": 0.02}
    got = torch_ops.w4a8_linear(x, qweight, scales, bias, **kw)
    want = w4a8_linear(x, qweight, scales, bias, **kw)
    w = codes.double() * scales.double().repeat_interleave(64, 1)
    abs_terms = (0.02 if "x_scale" in kw else 1.0) * x.double().abs() @ w.abs().t() + bias.double().abs()
    check_outputs(got, want, abs_terms, 256)
