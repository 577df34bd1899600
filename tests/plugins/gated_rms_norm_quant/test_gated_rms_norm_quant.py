"""jetmamba::GatedRMSNormQuant: the CUDA kernel (plugins/gated_rms_norm_quant) against the op reference.

Every test body runs emulated on the CPU and, where a GPU exists, on it (tests/support/kernels.py).
Groups of every size class: a warp per group (up to 64 vectors) and a block per group, 1, 2 and 8
groups a row, odd group sizes (the element path), groups past the register cache (recomputed
from y and z), fp16 and fp32 y and weights, saturating scales and the emulator's three fiber
schedules. hadamard = 1 (Quamba's Hadamard before out_proj): the norm into an fp32 workspace, then
HadamardQuant's kernel, against the reference's transform of every supported order class.
"""

from __future__ import annotations

import ctypes

import pytest
import torch
from kernels import BACKENDS, backend  # noqa: F401

from jetmamba.compiler.ops.reference import gated_rms_norm_quant

# hadamard = 1 calls HadamardQuant's launcher: the library links both
SOURCES = ["gated_rms_norm_quant/gated_rms_norm_quant.cu", "hadamard_quant/hadamard_quant.cu"]
SUCCESS, INVALID_VALUE = 0, 1
FP32, FP16 = 0, 1
DTYPE_CODES = {torch.float32: FP32, torch.float16: FP16}
EPS = 1e-5
Z_SCALE = 0.05  # gates in [-6.4, 6.35]

# The kernel computes the reference's fp32 operations in the reference's order, but sums each group's
# squares in another order (per-thread partial sums, then a butterfly across lanes and warps) and its
# exp and divisions may round an ulp apart from torch's (the GPU's expf is not glibc's or Sleef's):
# h, the inverse rms and value / out_scale can differ by an ulp or two. A code then differs where
# that quotient lies within a hair of a half-integer, where round-half-to-even goes one way or the
# other: by 1, at most TIE_WINDOW quanta from the tie (the fp64 value decides), on at most
# MAX_TIE_FRACTION of the outputs (or one output in a small case).
TIE_WINDOW = 1e-3
MAX_TIE_FRACTION = 1e-4


class Params(ctypes.Structure):
    _fields_ = [
        ("y", ctypes.c_void_p), ("z", ctypes.c_void_p), ("weight", ctypes.c_void_p), ("out", ctypes.c_void_p),
        ("rows", ctypes.c_int), ("d", ctypes.c_int), ("group_size", ctypes.c_int), ("y_dtype", ctypes.c_int),
        ("weight_dtype", ctypes.c_int), ("z_scale", ctypes.c_float), ("eps", ctypes.c_float),
        ("out_scale", ctypes.c_float), ("hadamard", ctypes.c_int), ("workspace", ctypes.c_void_p),
    ]  # fmt: skip


def call(lib, p: Params | None) -> int:
    fn = lib.jm_gated_rms_norm_quant
    fn.argtypes = [ctypes.POINTER(Params), ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return fn(ctypes.byref(p) if p is not None else None, None)


def ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def make_inputs(shape, dtype, wdtype, seed: int, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    y = (torch.randn(shape, generator=g) * scale).to(dtype)
    z = torch.randint(-128, 128, shape, generator=g, dtype=torch.int8)
    weight = (1.0 + 0.3 * torch.randn(shape[-1], generator=g)).to(wdtype)
    return y, z, weight


def run(backend, lib, y, z, weight, group_size, out_scale, offset: int = 0):  # noqa: F811
    """The kernel on the backend; `offset` elements in front of every tensor misalign them."""

    def place(t):
        buf = backend.tensor(torch.cat([torch.zeros(offset, dtype=t.dtype), t.reshape(-1)]))
        return buf[offset:].view(t.shape)

    yd, zd, wd = place(y), place(z), place(weight)
    out = backend.empty((offset + y.numel(),), torch.int8)[offset:].view(y.shape)
    p = Params(ptr(yd), ptr(zd), ptr(wd), ptr(out), y.numel() // y.shape[-1], y.shape[-1], group_size,
               DTYPE_CODES[y.dtype], DTYPE_CODES[weight.dtype], Z_SCALE, EPS, out_scale, 0)  # fmt: skip
    backend.check(lib, call(lib, p))
    backend.sync()
    return out.cpu()


def exact_quotient(y, z, weight, group_size: int, out_scale: float) -> torch.Tensor:
    """The reference's value / out_scale in fp64: where the fp32 results fall."""
    g = z.double() * Z_SCALE
    h = y.double() * g * torch.sigmoid(g)
    hg = h.view(*h.shape[:-1], -1, group_size)
    n = (hg / torch.sqrt(hg.pow(2).mean(-1, keepdim=True) + EPS)).view(h.shape)
    return n * weight.double() / out_scale


def check(out, y, z, weight, group_size: int, out_scale: float) -> int:
    """out equal to the reference but for ±1 at rounding ties; returns the number of ties."""
    ref = gated_rms_norm_quant(y, z, weight, z_scale=Z_SCALE, eps=EPS, group_size=group_size, out_scale=out_scale,
                               hadamard=0)  # fmt: skip
    diff = (out.int() - ref.int()).abs()
    assert int(diff.max()) <= 1, f"an int8 output is {int(diff.max())} codes off"
    bad = diff > 0
    n_bad = int(bad.sum())
    if n_bad:
        q = exact_quotient(y, z, weight, group_size, out_scale)[bad]
        distance = (q - q.floor() - 0.5).abs()
        assert float(distance.max()) < TIE_WINDOW, f"a ±1 difference {float(distance.max()):.3g} quanta from a tie"
    assert n_bad <= max(1.0, MAX_TIE_FRACTION * out.numel()), f"{n_bad} of {out.numel()} outputs off by one"
    return n_bad


@pytest.fixture
def lib(backend):  # noqa: F811
    lib = backend.load(SOURCES)
    if backend.kind == "emu":
        lib.emu_set_mode("forward")
    return lib


# (d, groups): Mamba2's d_inner split into n_groups. Group sizes 1 ... 4096: a warp per group up to
# 64 vectors (512 fp16 / 256 fp32 channels, or 64 on the element path), a block beyond; 125, 7 and
# 1 are odd (the element path).
SHAPES = [(1, 1), (7, 1), (64, 2), (192, 1), (384, 1), (384, 2), (384, 8), (768, 2), (1000, 8), (1024, 2),
          (4096, 1), (4096, 8), (5120, 1)]  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=["fp16", "fp32"])
@pytest.mark.parametrize(("d", "groups"), SHAPES, ids=[f"{d}/{g}" for d, g in SHAPES])
def test_matches_reference(backend, lib, d, groups, dtype):  # noqa: F811
    """Odd and even row counts, fp16 and fp32 weights."""
    for case, (shape, wdtype) in enumerate([((1, 1, d), dtype), ((1, 5, d), torch.float32),
                                            ((3, 1, d), torch.float16)]):  # fmt: skip
        y, z, weight = make_inputs(shape, dtype, wdtype, seed=d * 10 + groups + case)
        out = run(backend, lib, y, z, weight, d // groups, out_scale=4.0 / 127)
        check(out, y, z, weight, d // groups, 4.0 / 127)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize(
    ("d", "groups", "dtype"),
    [(16384, 1, torch.float16), (16384, 2, torch.float32), (20000, 1, torch.float16), (8194, 1, torch.float32)],
    ids=["16384-fp16", "16384/2-fp32", "20000-fp16-past-cache", "8194-fp32-element-past-cache"],
)
def test_long_groups(backend, lib, d, groups, dtype):  # noqa: F811
    """Up to 16384 channels a group stays in registers; longer groups (and groups over 8192 on the
    element path) recompute their tail from y and z."""
    y, z, weight = make_inputs((2, 1, d), dtype, torch.float16, seed=d + groups)
    out = run(backend, lib, y, z, weight, d // groups, out_scale=4.0 / 127)
    check(out, y, z, weight, d // groups, 4.0 / 127)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=["fp16", "fp32"])
def test_misaligned_tensors_take_the_element_path(backend, lib, dtype):  # noqa: F811
    y, z, weight = make_inputs((2, 3, 768), dtype, dtype, seed=7)
    out = run(backend, lib, y, z, weight, 384, out_scale=4.0 / 127, offset=1)
    check(out, y, z, weight, 384, 4.0 / 127)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_saturation_and_large_values(backend, lib):  # noqa: F811
    """A small scale saturates most codes to -128 / 127 exactly; y of a few thousand."""
    y, z, weight = make_inputs((1, 4, 1024), torch.float16, torch.float16, seed=3, scale=4e3)
    out = run(backend, lib, y, z, weight, 512, out_scale=5e-4)
    check(out, y, z, weight, 512, 5e-4)
    assert (out == 127).float().mean() > 0.2 and (out == -128).float().mean() > 0.2  # silu(z < 0) is small


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_rounding_ties_are_rare(backend, lib):  # noqa: F811
    """A larger sample (64 rows of 4096 channels in 1 and 8 groups, fp32 and fp16): the fraction of
    ±1 ties."""
    n_bad = total = 0
    for groups, dtype in ((1, torch.float32), (8, torch.float16), (8, torch.float32)):
        y, z, weight = make_inputs((4, 16, 4096), dtype, torch.float32, seed=groups + 11)
        out = run(backend, lib, y, z, weight, 4096 // groups, out_scale=3.0 / 127)
        n_bad += check(out, y, z, weight, 4096 // groups, 3.0 / 127)
        total += out.numel()
    print(f"rounding ties: {n_bad} of {total} int8 outputs ({n_bad / total:.2e})")
    assert n_bad <= MAX_TIE_FRACTION * total


@pytest.mark.parametrize("backend", ["emu"], indirect=True)
@pytest.mark.parametrize("mode", ["forward", "reverse", "random"])
def test_fiber_schedules_agree(backend, lib, mode):  # noqa: F811
    """The block reduction's barrier (two groups of 1536 a row) under every schedule: the same bits."""
    y, z, weight = make_inputs((1, 3, 3072), torch.float32, torch.float32, seed=5)
    lib.emu_set_mode("forward")
    want = run(backend, lib, y, z, weight, 1536, out_scale=4.0 / 127)
    lib.emu_set_mode(mode)
    got = run(backend, lib, y, z, weight, 1536, out_scale=4.0 / 127)
    lib.emu_set_mode("forward")
    assert torch.equal(want, got)
    check(got, y, z, weight, 1536, 4.0 / 127)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_bad_arguments_are_refused_and_nothing_is_written(backend, lib):  # noqa: F811
    y, z, weight = make_inputs((1, 2, 64), torch.float16, torch.float16, seed=1)
    yd, zd, wd = backend.tensor(y), backend.tensor(z), backend.tensor(weight)
    out = backend.empty(y.shape, torch.int8)

    def params(**kw):
        base = dict(y=ptr(yd), z=ptr(zd), weight=ptr(wd), out=ptr(out), rows=2, d=64, group_size=32, y_dtype=FP16,
                    weight_dtype=FP16, z_scale=Z_SCALE, eps=EPS, out_scale=0.05, hadamard=0)  # fmt: skip
        base.update(kw)
        return Params(**base)

    bad = [dict(y=None), dict(z=None), dict(weight=None), dict(out=None), dict(rows=-1), dict(d=0),
           dict(group_size=0), dict(group_size=48), dict(group_size=128), dict(y_dtype=3), dict(weight_dtype=-1),
           dict(z_scale=0.0), dict(z_scale=float("nan")), dict(eps=-1.0), dict(out_scale=-0.05),
           dict(out_scale=float("inf")), dict(hadamard=2), dict(hadamard=-1)]  # fmt: skip
    assert call(lib, None) == INVALID_VALUE
    for kw in bad:
        assert call(lib, params(**kw)) == INVALID_VALUE, kw
    assert call(lib, params(rows=0)) == SUCCESS
    # the Hadamard option needs a workspace and a d that HadamardQuant transforms
    assert call(lib, params(hadamard=1)) == INVALID_VALUE  # no workspace
    ws = backend.empty((2 * 96,), torch.float32)
    no_order = params(hadamard=1, workspace=ptr(ws), d=36, rows=1, group_size=36)  # 36 = 9 * 4: no Hadamard order
    assert call(lib, no_order) == INVALID_VALUE
    backend.sync()
    assert (out.cpu() == -77).all()
    assert call(lib, params()) == SUCCESS
    backend.sync()
    check(out.cpu(), y, z, weight, 32, 0.05)


def hadamard_tie_check(out, ref, y, z, weight, group_size: int, out_scale: float):
    """±1 at most, on at most MAX_TIE_FRACTION of the codes (or one): the transform sums the
    normalised row in another order than the reference's einsum, so a quotient within an ulp of a
    half-integer may round the other way."""
    diff = (out.int() - ref.int()).abs()
    assert int(diff.max()) <= 1, f"an int8 output is {int(diff.max())} codes off"
    assert int((diff > 0).sum()) <= max(1.0, MAX_TIE_FRACTION * out.numel())


# d: the Hadamard order classes Mamba2 uses for d_inner (2^k, 12 * 2^k as the fixture's 384, 20 * 2^k)
@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize(("d", "groups", "dtype"), [(64, 1, torch.float16), (384, 2, torch.float16),
                                                     (640, 1, torch.float32), (3072, 8, torch.float16)])  # fmt: skip
def test_hadamard_option_matches_reference(backend, lib, d, groups, dtype):  # noqa: F811
    y, z, weight = make_inputs((2, 3, d), dtype, torch.float32, seed=d + groups)
    yd, zd, wd = backend.tensor(y), backend.tensor(z), backend.tensor(weight)
    out = backend.empty(y.shape, torch.int8)
    ws = backend.empty((6 * d,), torch.float32)
    out_scale = 4.0 / 127
    p = Params(ptr(yd), ptr(zd), ptr(wd), ptr(out), 6, d, d // groups, DTYPE_CODES[dtype], FP32, Z_SCALE, EPS,
               out_scale, 1, ptr(ws))  # fmt: skip
    backend.check(lib, call(lib, p))
    backend.sync()
    ref = gated_rms_norm_quant(y, z, weight, z_scale=Z_SCALE, eps=EPS, group_size=d // groups, out_scale=out_scale,
                               hadamard=1)  # fmt: skip
    hadamard_tie_check(out.cpu(), ref, y, z, weight, d // groups, out_scale)
    assert (out.cpu() != 0).float().mean() > 0.5  # a real signal, not a row of zeros
