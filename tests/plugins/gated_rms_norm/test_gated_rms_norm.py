"""jetmamba::GatedRMSNorm: GatedRMSNormQuant's kernel with fp z and an fp output (plugins/gated_rms_norm)
against the reference.

Every test body runs emulated on the CPU and, where a GPU exists, on it (tests/support/kernels.py).
The kernel is GatedRMSNormQuant's (tests/plugins/gated_rms_norm_quant covers its paths in depth);
here each team, 1, 2 and 8 groups, the vectorised and the element path, a group past the register
cache, fp16 and fp32, and the argument checks, for fp z and the fp output.
"""

from __future__ import annotations

import ctypes

import pytest
import torch
from kernels import BACKENDS, backend  # noqa: F401
from tolerances import assert_close

from jetmamba.compiler.ops.reference import gated_rms_norm_fp

SOURCES = ["gated_rms_norm/gated_rms_norm.cu"]
SUCCESS, INVALID_VALUE = 0, 1
FP32, FP16 = 0, 1
DTYPE_CODES = {torch.float32: FP32, torch.float16: FP16}
EPS = 1e-5
# out is compared within "norm.kernel.<dtype>": the groups' sums of squares are added in another
# order than torch's and exp may round differently, so an output is an fp32 ulp or two apart, or
# one fp16 rounding step
TOLERANCE_KEY = {torch.float32: "norm.kernel.fp32", torch.float16: "norm.kernel.fp16"}


class Params(ctypes.Structure):
    _fields_ = [
        ("y", ctypes.c_void_p), ("z", ctypes.c_void_p), ("weight", ctypes.c_void_p), ("out", ctypes.c_void_p),
        ("rows", ctypes.c_int), ("d", ctypes.c_int), ("group_size", ctypes.c_int), ("y_dtype", ctypes.c_int),
        ("weight_dtype", ctypes.c_int), ("eps", ctypes.c_float),
    ]  # fmt: skip


def call(lib, p: Params | None) -> int:
    fn = lib.jm_gated_rms_norm
    fn.argtypes = [ctypes.POINTER(Params), ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return fn(ctypes.byref(p) if p is not None else None, None)


def ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def make_inputs(shape, dtype, wdtype, seed: int):
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(shape, generator=g).to(dtype)
    z = (2.0 * torch.randn(shape, generator=g)).to(dtype)
    # y * silu(z) is heavy-tailed (a normalised value reaches ~25): weights in [0.25, 0.5) keep the outputs
    # below 8, the tolerance's premise
    weight = (0.25 + 0.25 * torch.rand(shape[-1], generator=g)).to(wdtype)
    return y, z, weight


def run(backend, y, z, weight, group_size: int, offset: int = 0):  # noqa: F811
    """The kernel on the backend; `offset` elements in front of every tensor misalign them."""
    lib = backend.load(SOURCES)

    def place(t):
        buf = backend.tensor(torch.cat([torch.zeros(offset, dtype=t.dtype), t.reshape(-1)]))
        return buf[offset:].view(t.shape)

    yd, zd, wd = place(y), place(z), place(weight)
    out = backend.empty((offset + y.numel(),), y.dtype)[offset:].view(y.shape)
    p = Params(ptr(yd), ptr(zd), ptr(wd), ptr(out), y.numel() // y.shape[-1], y.shape[-1], group_size,
               DTYPE_CODES[y.dtype], DTYPE_CODES[weight.dtype], EPS)  # fmt: skip
    backend.check(lib, call(lib, p))
    backend.sync()
    return out.cpu()


def check(out, y, z, weight, group_size: int) -> None:
    ref = gated_rms_norm_fp(y, z, weight, eps=EPS, group_size=group_size)
    assert float(ref.abs().max()) < 8.0  # the tolerance is one fp16 rounding step of outputs below 8
    assert_close(out, ref, TOLERANCE_KEY[y.dtype])


SHAPES = [(1, 1), (7, 1), (384, 1), (384, 2), (384, 8), (1000, 8), (4096, 1), (4096, 8), (20000, 1)]


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=["fp16", "fp32"])
@pytest.mark.parametrize(("d", "groups"), SHAPES, ids=[f"{d}/{g}" for d, g in SHAPES])
def test_matches_reference(backend, d, groups, dtype):  # noqa: F811
    for case, (shape, wdtype) in enumerate([((1, 1, d), dtype), ((1, 3, d), torch.float32)]):
        y, z, weight = make_inputs(shape, dtype, wdtype, seed=d * 10 + groups + case)
        check(run(backend, y, z, weight, d // groups), y, z, weight, d // groups)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=["fp16", "fp32"])
def test_misaligned_tensors_take_the_element_path(backend, dtype):  # noqa: F811
    y, z, weight = make_inputs((2, 3, 768), dtype, torch.float16, seed=7)
    check(run(backend, y, z, weight, 768, offset=1), y, z, weight, 768)


@pytest.mark.parametrize("backend", ["emu"], indirect=True)
def test_fiber_schedules_agree(backend):  # noqa: F811
    """The block reduction's barrier under the emulator's three schedules: the same bits."""
    lib = backend.load(SOURCES)
    y, z, weight = make_inputs((1, 2, 4096), torch.float16, torch.float16, seed=5)
    results = []
    for mode in ("forward", "reverse", "random"):
        lib.emu_set_mode(mode)
        results.append(run(backend, y, z, weight, 2048))
    lib.emu_set_mode("forward")
    for out in results[1:]:
        assert torch.equal(out.view(torch.int16), results[0].view(torch.int16))
    check(results[0], y, z, weight, 2048)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_bad_arguments_are_refused_and_nothing_is_written(backend):  # noqa: F811
    lib = backend.load(SOURCES)
    y, z, weight = make_inputs((1, 2, 64), torch.float32, torch.float32, seed=1)
    yd, zd, wd = backend.tensor(y), backend.tensor(z), backend.tensor(weight)
    out = backend.empty(y.shape, torch.float32)

    def params(**kw):
        base = dict(y=ptr(yd), z=ptr(zd), weight=ptr(wd), out=ptr(out), rows=2, d=64, group_size=16, y_dtype=FP32,
                    weight_dtype=FP32, eps=EPS)  # fmt: skip
        base.update(kw)
        return Params(**base)

    bad = [dict(y=None), dict(z=None), dict(weight=None), dict(out=None), dict(rows=-1), dict(d=0),
           dict(group_size=0), dict(group_size=-16), dict(group_size=24), dict(y_dtype=2), dict(weight_dtype=5),
           dict(eps=-1.0), dict(eps=float("nan"))]  # fmt: skip
    assert call(lib, None) == INVALID_VALUE
    for kw in bad:
        assert call(lib, params(**kw)) == INVALID_VALUE, kw
    assert call(lib, params(rows=0)) == SUCCESS
    backend.sync()
    assert out.cpu().isnan().all()
