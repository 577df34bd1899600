"""jetmamba::HadamardQuant: the CUDA kernel (plugins/hadamard_quant) against the op reference.

Every test body runs emulated on the CPU and, where a GPU exists, on it (tests/support/kernels.py).
Every supported size class up to 16384 is one kernel instantiation per input type, and each is
run: n = 2^k (1 ... 16384) and 12, 20, 28 times 2^k (40 * 2^k is 20 * 2^(k+1)), with row counts
that leave the last block of packed rows partial, in fp16 and fp32, with saturating inputs, with
16-byte aligned tensors (vectorised path) and misaligned ones (element path), and under the
emulator's three fiber schedules for the orders that exchange data between warps.
"""

from __future__ import annotations

import ctypes
import math

import pytest
import torch
from kernels import BACKENDS, backend  # noqa: F401

from jetmamba.calibration.hadamard import factor, hadamard_matrix, hadamard_transform, is_supported
from jetmamba.compiler.ops.reference import hadamard_quant

SOURCES = ["hadamard_quant/hadamard_quant.cu"]
SUCCESS, INVALID_VALUE = 0, 1
FP32, FP16 = 0, 1
DTYPE_CODES = {torch.float32: FP32, torch.float16: FP16}
MAX_ORDER = 16384

# The kernel runs the Walsh-Hadamard stages in the reference's order (the same fp32 butterflies on
# the same pairs) and rounds both divisions correctly, so for n = 2^k its codes equal the
# reference's exactly. For m > 1 it sums the m x m base block in column order, torch's einsum in
# its BLAS's order: fp32 sums in a different order are a few ulps apart, so a code can differ where
# the value / out_scale lies within a hair of a half-integer, where round-half-to-even goes one way
# or the other: by 1, at most TIE_WINDOW quanta from the tie (the fp64 value decides), on at most
# MAX_TIE_FRACTION of the outputs (or one output in a small case). Observed: 0 (3 million outputs
# of m = 12, 20, 28 emulated on x86-64: the reference's einsum summed in the same order there).
TIE_WINDOW = 1e-3
MAX_TIE_FRACTION = 1e-4

POWERS_OF_TWO = [1 << k for k in range(15)]  # 1 ... 16384
TIMES_12 = [12 << k for k in range(11)]  # 12 ... 12288
TIMES_20 = [20 << k for k in range(10)]  # 20, 40 (= 40 * 2^0), ... 10240
TIMES_28 = [28 << k for k in range(10)]  # 28 ... 14336
EVERY_ORDER_CLASS = POWERS_OF_TWO + TIMES_12 + TIMES_20 + TIMES_28  # one instantiation each


class Params(ctypes.Structure):
    _fields_ = [
        ("x", ctypes.c_void_p), ("y", ctypes.c_void_p), ("rows", ctypes.c_int64), ("n", ctypes.c_int),
        ("dtype", ctypes.c_int), ("out_scale", ctypes.c_float),
    ]  # fmt: skip


def call(lib, p: Params) -> int:
    fn = lib.jm_hadamard_quant
    fn.argtypes = [ctypes.POINTER(Params), ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return fn(ctypes.byref(p), None)


def rows_for(n: int) -> int:
    """Odd row counts, one row for the largest orders (the emulator runs every CUDA thread)."""
    return 5 if n <= 256 else 3 if n <= 2048 else 1


def inputs(shape, dtype, seed: int, magnitude: float = 1.0) -> torch.Tensor:
    """Gaussian rows of different sizes (so some rows use few codes, others saturate)."""
    g = torch.Generator().manual_seed(seed)
    row_scale = torch.rand(*shape[:-1], 1, generator=g) * 1.5 + 0.25
    return (torch.randn(*shape, generator=g) * row_scale * magnitude).to(dtype)


def run(be, lib, x: torch.Tensor, out_scale: float, *, x_offset: int = 0, y_offset: int = 0) -> torch.Tensor:
    """The kernel on x's rows ([..., n], any leading dims); offsets place x and y that many elements
    past a 16-byte aligned address (the element-by-element path)."""
    n, numel = x.shape[-1], x.numel()
    xbuf = be.tensor(torch.zeros(numel + x_offset, dtype=x.dtype))
    xbuf[x_offset:] = be.tensor(x.reshape(-1))
    ybuf = be.empty((numel + y_offset,), torch.int8)
    p = Params(xbuf[x_offset:].data_ptr(), ybuf[y_offset:].data_ptr(), numel // n, n, DTYPE_CODES[x.dtype], out_scale)
    be.check(lib, call(lib, p))
    be.sync()
    return ybuf[y_offset:].cpu().reshape(x.shape)


def tie_mismatches(y: torch.Tensor, x: torch.Tensor, out_scale: float) -> int:
    """Asserts y equals the reference (exactly for n = 2^k), else but for ±1 at rounding ties;
    returns how many ties went the other way."""
    ref = hadamard_quant(x, out_scale=out_scale)
    diff = y.int() - ref.int()
    bad = diff != 0
    n_bad = int(bad.sum())
    if n_bad:
        assert factor(x.shape[-1])[0] > 1, f"n = 2^k must match exactly; {n_bad} codes differ"
        assert int(diff.abs().max()) == 1, f"int8 outputs differ by up to {int(diff.abs().max())}"
        u = (hadamard_transform(x.double()) / out_scale)[bad]
        distance = (u - torch.floor(u) - 0.5).abs()
        assert float(distance.max()) < TIE_WINDOW, f"a ±1 difference {float(distance.max()):.3g} quanta from a tie"
    assert n_bad <= max(1.0, MAX_TIE_FRACTION * y.numel()), f"{n_bad} of {y.numel()} outputs off by one"
    return n_bad


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=["fp16", "fp32"])
@pytest.mark.parametrize("n", EVERY_ORDER_CLASS)
def test_every_order_matches_the_reference(backend, n, dtype):  # noqa: F811
    lib = backend.load(SOURCES)
    x = inputs((rows_for(n), n), dtype, seed=n)
    out_scale = 3.0 / 127  # about 3 standard deviations: a few codes saturate
    tie_mismatches(run(backend, lib, x, out_scale), x, out_scale)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("n", [1, 2, 8, 12, 16, 28, 40, 64, 96, 256, 448])
def test_leading_dims_and_partial_blocks(backend, n):  # noqa: F811
    """[2, 67, n]: 134 rows, so the blocks that pack several small rows end with a partial one."""
    lib = backend.load(SOURCES)
    x = inputs((2, 67, n), torch.float16, seed=1000 + n)
    tie_mismatches(run(backend, lib, x, 0.02), x, 0.02)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("n", [4, 24, 160, 768, 2560, 3584, 16384])
def test_saturating_inputs(backend, n):  # noqa: F811
    """Large inputs: most codes clip to -128 or 127, the rest still round as the reference."""
    lib = backend.load(SOURCES)
    x = inputs((rows_for(n), n), torch.float16, seed=2000 + n, magnitude=40.0)
    out_scale = 0.05
    y = run(backend, lib, x, out_scale)
    tie_mismatches(y, x, out_scale)
    saturated = float(((y == 127) | (y == -128)).float().mean())
    assert saturated > 0.5, f"only {saturated:.0%} of the codes saturate: the test does not test saturation"
    assert (y == -128).any() and (y == 127).any()


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_exact_ties_round_half_to_even(backend):  # noqa: F811
    """n = 1 and n = 4 (sqrt(n) exact) with values on half-integers: ties go to the even code."""
    lib = backend.load(SOURCES)
    halves = torch.arange(-130, 130, dtype=torch.float32) + 0.5
    x1 = (halves * 0.25).to(torch.float16).reshape(-1, 1)  # t = x / 0.25: every value is a tie
    y1 = run(backend, lib, x1, 0.25)
    assert torch.equal(y1, hadamard_quant(x1, out_scale=0.25))
    expected = torch.round(halves).clamp(-128, 127).to(torch.int8).reshape(-1, 1)
    assert torch.equal(y1, expected)
    x4 = torch.zeros(halves.numel(), 4)
    x4[:, 0] = halves * 0.5  # y = x H^T / 2 = halves * 0.25 in every position
    assert torch.equal(run(backend, lib, x4, 0.25), hadamard_quant(x4, out_scale=0.25))


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("n", [12, 20, 28, 24, 40, 56, 96])
def test_the_base_blocks_are_calibrations(backend, n):  # noqa: F811
    """One-hot rows give the columns of H: the kernel's Paley blocks, Kronecker order and signs
    are jetmamba.calibration.hadamard's."""
    lib = backend.load(SOURCES)
    x = torch.eye(n)
    out_scale = 1.0 / (100.0 * math.sqrt(n))  # every entry becomes +-100
    y = run(backend, lib, x, out_scale)
    assert torch.equal(y, (100 * hadamard_matrix(n).t()).to(torch.int8))


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("n", [8, 48, 768, 4096, 28 * 32])
@pytest.mark.parametrize("offsets", [(1, 0), (0, 3), (1, 1)], ids=["x", "y", "both"])
def test_misaligned_tensors(backend, n, offsets):  # noqa: F811
    """x or y off 16-byte alignment: the element path gives the same codes."""
    lib = backend.load(SOURCES)
    x = inputs((3, n), torch.float16, seed=3000 + n)
    y = run(backend, lib, x, 0.02, x_offset=offsets[0], y_offset=offsets[1])
    assert torch.equal(y, run(backend, lib, x, 0.02))
    tie_mismatches(y, x, 0.02)


@pytest.mark.parametrize("mode", ["forward", "reverse", "random"])
@pytest.mark.parametrize("n", [40, 2048, 3584, 5120, 14336, 16384])
def test_fiber_schedules(mode, n):
    """A missing barrier or a shuffle read before its write shows in forward or reverse order: the
    orders that exchange through shared memory (2048: 8 warps, 3584: 4 warps, 5120: 4 warps in two
    rounds, 14336: 8 warps in seven, 16384: 16 warps in two) and one that packs rows into warps (40)."""
    from kernels import Backend

    be = Backend("emu")
    lib = be.load(SOURCES)
    x = inputs((2, n), torch.float32, seed=4000 + n)
    lib.emu_set_mode(mode)
    lib.emu_set_seed(7)
    try:
        y = run(be, lib, x, 0.02)
    finally:
        lib.emu_set_mode(None)
    tie_mismatches(y, x, 0.02)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_rounding_ties_are_rare(backend, capsys):  # noqa: F811
    """A larger sample of m > 1 orders; prints the fraction of ±1 tie differences."""
    lib = backend.load(SOURCES)
    n_bad = total = 0
    for n, rows in ((12, 2000), (20, 1000), (28, 1000), (768, 64), (2560, 16), (1792, 16), (12288, 2)):
        x = inputs((rows, n), torch.float32, seed=5000 + n)
        y = run(backend, lib, x, 0.01)
        n_bad += tie_mismatches(y, x, 0.01)
        total += y.numel()
    assert n_bad <= MAX_TIE_FRACTION * total
    with capsys.disabled():
        print(f"\nrounding ties: {n_bad} of {total} int8 outputs ({n_bad / total:.2e})")


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_invalid_arguments_write_nothing(backend):  # noqa: F811
    lib = backend.load(SOURCES)
    x = backend.tensor(torch.randn(2 * MAX_ORDER * 2))
    y = backend.empty((x.numel(),), torch.int8)

    def status(**kw) -> int:
        args = {"x": x.data_ptr(), "y": y.data_ptr(), "rows": 1, "n": 768, "dtype": FP32, "out_scale": 0.1} | kw
        return call(lib, Params(**args))

    unsupported = [0, -12, 3, 6, 9, 36, 44, 9 * 512, 32768, 12 * 2048, 20 * 1024, 28 * 1024, 1 << 30]
    for n in unsupported:
        assert status(n=n) == INVALID_VALUE, f"n = {n} was accepted"
    for bad in ({"x": None}, {"y": None}, {"rows": -1}, {"dtype": 2}, {"dtype": -1}, {"out_scale": 0.0},
                {"out_scale": -0.5}, {"out_scale": float("nan")}, {"out_scale": float("inf")}):  # fmt: skip
        assert status(**bad) == INVALID_VALUE, f"{bad} was accepted"
    null_params = lib.jm_hadamard_quant
    null_params.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    assert null_params(None, None) == INVALID_VALUE
    assert status(rows=0, x=None, y=None) == SUCCESS  # nothing to do
    backend.sync()
    assert bool((y.cpu() == -77).all()), "a rejected launch wrote to y"


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_supported_orders_are_the_specs(backend):  # noqa: F811
    lib = backend.load(SOURCES)
    fn = lib.jm_hadamard_order_supported
    fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
    for n in range(-2, 2 * MAX_ORDER + 2):
        assert bool(fn(n)) == (n >= 1 and n <= MAX_ORDER and is_supported(n)), n
