"""The CUDA emulator (plugins/common/cuda_emu.h): real CUDA kernels built with g++ and run on the CPU.

The kernels are in kernels/*.cu; they are also compiled with nvcc for sm_87 at the end. Each
launch is small: the whole file runs in well under a minute on two busy cores.
"""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from jetmamba.plugins import emulation

KERNELS = Path(__file__).parent / "kernels"
KERNEL_SOURCES = sorted(KERNELS.glob("*.cu"))  # one emulated library; tsan_driver.cpp is a program

SUCCESS, INVALID_VALUE, INVALID_CONFIGURATION, LAUNCH_FAILURE = 0, 1, 9, 719
VP, I32, U32 = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint
FIBER_MODES = ("forward", "reverse", "random")

_SIGNATURES = {
    "jm_test_block_sum_smem": [VP, I32, VP],
    "jm_test_block_sum_shfl": [VP, VP],
    "jm_test_vote": [VP, U32, VP, VP, VP, I32, I32],
    "jm_test_shfl": [VP, VP, I32, I32, U32, VP, I32, I32],
    "jm_test_shfl_types": [VP, VP, VP, VP, I32, I32],
    "jm_test_block_scan": [VP, VP, I32, I32],
    "jm_test_match_reduce": [VP] * 8 + [I32, I32],
    "jm_test_index": [VP, VP, VP],
    "jm_test_early_exit": [I32, VP, I32, I32],
    "jm_test_scale": [VP, VP, ctypes.c_long],
    "jm_test_half2": [VP, VP, VP, I32],
    "jm_test_float_convert": [VP, I32, VP, VP, VP],
    "jm_test_bits_to_float": [VP, I32, VP, VP],
    "jm_test_double_convert": [VP, I32, VP, VP],
    "jm_test_half_arith": [VP, VP, VP, I32, VP],
    "jm_test_fast_math": [VP, I32, VP],
    "jm_test_atomics": [VP, I32, VP, VP, I32, I32],
    "jm_test_faulty": [I32, VP, I32, I32, ctypes.c_size_t],
}


def call(lib, name: str, *args) -> int:
    fn = getattr(lib, name)
    fn.argtypes = _SIGNATURES[name]
    fn.restype = ctypes.c_int
    return fn(*[a.ctypes.data if isinstance(a, np.ndarray) else a for a in args])


class ReduceParams(ctypes.Structure):
    _fields_ = [("x", VP), ("out", VP), ("n", I32), ("grid", I32), ("block", I32)]


@pytest.fixture(scope="module")
def emu_lib():
    if emulation.find_compiler() is None:
        pytest.skip("no C++ compiler (g++ / $CXX): the CUDA emulator cannot build kernels")
    return emulation.load(KERNEL_SOURCES, name="emu_test_kernels")


@pytest.fixture
def lib(emu_lib):
    emu_lib.emu_set_mode("forward")
    yield emu_lib
    emu_lib.emu_set_mode(None)


def block_sums(lib, kernel: str, x: np.ndarray, grid: int, block: int, barrier: bool = True) -> np.ndarray:
    per_block = 2 if kernel == "shfl" else 1
    out = np.zeros(per_block * grid, np.float32)
    p = ReduceParams(x.ctypes.data, out.ctypes.data, x.size, grid, block)
    if kernel == "shfl":
        err = call(lib, "jm_test_block_sum_shfl", ctypes.byref(p), None)
    else:
        err = call(lib, "jm_test_block_sum_smem", ctypes.byref(p), int(barrier), None)
    assert err == SUCCESS, lib.emu_last_error()
    return out


def reference_block_sums(x: np.ndarray, grid: int, block: int) -> np.ndarray:
    """What each block of the grid-stride loop sums (integer-valued data: exact in float32)."""
    idx = np.arange(x.size)
    owner = (idx // block) % grid
    return np.bincount(owner, weights=x.astype(np.float64), minlength=grid)


# ---- reductions -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [*FIBER_MODES, "threads"])
@pytest.mark.parametrize("block", [32, 80, 96, 256])
def test_block_reductions_match_numpy(lib, mode, block):
    """Shared memory + __syncthreads and warp shuffles (xor butterfly, __shfl_down_sync tree), with
    dynamic and static shared memory; 80 threads leave a partial last warp of 16 lanes."""
    lib.emu_set_mode(mode)
    rng = np.random.default_rng(block)
    for grid in (1, 3) if mode == "threads" else (1, 7):
        x = rng.integers(-8, 9, size=grid * block * 3 + 5).astype(np.float32)
        ref = reference_block_sums(x, grid, block)
        np.testing.assert_array_equal(block_sums(lib, "smem", x, grid, block), ref)
        shfl = block_sums(lib, "shfl", x, grid, block).reshape(grid, 2)
        np.testing.assert_array_equal(shfl[:, 0], ref)  # butterfly path
        np.testing.assert_array_equal(shfl[:, 1], ref)  # down-tree path


def test_fiber_modes_are_fast(lib):
    """A block of 256 threads over 300 blocks, with nine barriers each, in well under a second."""
    x = np.ones(256 * 300, np.float32)
    block_sums(lib, "smem", x, 300, 256)  # warm the fiber stacks
    t0 = time.perf_counter()
    out = block_sums(lib, "smem", x, 300, 256)
    smem_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    block_sums(lib, "shfl", x, 300, 256)
    shfl_s = time.perf_counter() - t0
    print(f"300 blocks x 256 threads: shared-memory tree {smem_s:.3f} s, shuffle reduction {shfl_s:.3f} s")
    assert (out == 256).all()
    assert smem_s < 1.0 and shfl_s < 1.0


# ---- a missing barrier is caught ----------------------------------------------------------------------


def test_missing_barrier_is_caught_deterministically(lib):
    """The reduction without its __syncthreads reads shared memory before other threads wrote it: in
    forward order the reader always runs before the writer, so the result is wrong (the unwritten
    dynamic shared memory holds the 0xff poison, a NaN), and wrong the same way on every run."""
    x = np.arange(1, 256 * 4 + 1, dtype=np.float32) % 7
    ref = reference_block_sums(x, 4, 256)
    results = {}
    for mode in ("forward", "reverse"):
        lib.emu_set_mode(mode)
        good = block_sums(lib, "smem", x, 4, 256, barrier=True)
        np.testing.assert_array_equal(good, ref)
        results[mode] = [block_sums(lib, "smem", x, 4, 256, barrier=False) for _ in range(3)]
        for r in results[mode][1:]:
            np.testing.assert_array_equal(r, results[mode][0])  # deterministic, NaNs included
    caught = [m for m in results if not np.array_equal(results[m][0], ref)]
    assert caught == ["forward"] or set(caught) == {"forward", "reverse"}
    assert np.isnan(results["forward"][0]).all()


def test_random_mode_is_reproducible_by_seed(lib):
    lib.emu_set_mode("random")
    x = np.arange(96 * 5, dtype=np.float32) % 5
    runs = []
    for seed in (1, 2, 1):
        lib.emu_set_seed(seed)
        runs.append(block_sums(lib, "smem", x, 5, 96, barrier=False))
        np.testing.assert_array_equal(block_sums(lib, "smem", x, 5, 96), reference_block_sums(x, 5, 96))
    np.testing.assert_array_equal(runs[0], runs[2])


# ---- warp operations --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["forward", "reverse", "threads"])
@pytest.mark.parametrize("mask", [0xFFFFFFFF, 0x0000FFFF, 0x55555555, 0x80000001, 1 << 7])
def test_votes_with_partial_masks(lib, mode, mask):
    lib.emu_set_mode(mode)
    grid, block = 2, 96
    n = grid * block
    rng = np.random.default_rng(mask & 0xFFFF)
    pred = (rng.random(n) < 0.5).astype(np.int32)
    pred[:32] = 1  # a warp where every lane votes yes
    ballot, any_, all_ = np.zeros(n, np.uint32), np.zeros(n, np.int32), np.zeros(n, np.int32)
    assert call(lib, "jm_test_vote", pred, mask, ballot, any_, all_, grid, block) == SUCCESS
    lanes = np.arange(n) % 32
    member = ((mask >> lanes) & 1).astype(bool)
    for w in range(n // 32):
        sl = slice(32 * w, 32 * w + 32)
        bits = sum(1 << int(lane) for lane in range(32) if (mask >> lane) & 1 and pred[32 * w + lane])
        m = member[sl]
        assert (ballot[sl][m] == bits).all()
        assert (any_[sl][m] == int(bits != 0)).all()
        assert (all_[sl][m] == int(bits == mask)).all()
        assert (ballot[sl][~m] == 0xDEADBEEF).all() and (any_[sl][~m] == -1).all()


def reference_shfl(val: np.ndarray, param: np.ndarray, op: int, width: int) -> np.ndarray:
    """CUDA's documented shuffle semantics, written from the programming guide (not from PTX)."""
    out = np.empty_like(val)
    for t in range(val.size):
        base, lane = t - t % 32, t % 32
        seg = lane - lane % width
        p = int(param[t])
        if op == 0:  # source lane modulo width, inside the lane's own segment
            src = seg + (p & (width - 1))
        elif op == 1:  # up: own value where lane - delta leaves the segment
            src = lane - p if lane % width >= p else lane
        elif op == 2:  # down
            src = lane + p if lane % width + p < width else lane
        else:  # xor: earlier segments may be read, later ones give the own value
            src = lane ^ p
            if src // width > lane // width:
                src = lane
        out[t] = val[base + src]
    return out


@pytest.mark.parametrize("mode", ["forward", "reverse"])
@pytest.mark.parametrize("width", [32, 16, 8, 2])
def test_shuffles_match_cuda_semantics(lib, mode, width):
    lib.emu_set_mode(mode)
    grid, block = 2, 64
    n = grid * block
    rng = np.random.default_rng(width)
    val = rng.integers(-1000, 1000, size=n).astype(np.int32)
    params = {
        0: rng.integers(-40, 40, size=n).astype(np.int32),  # out-of-range and negative source lanes
        1: np.full(n, rng.integers(0, 32), np.int32),
        2: np.full(n, rng.integers(0, 32), np.int32),
        3: rng.integers(0, 32, size=n).astype(np.int32),  # lane masks reaching other segments
    }
    for delta in (1, 3):
        params[1 + 4 * delta] = np.full(n, delta, np.int32)  # more up / down cases, keyed apart
        params[2 + 4 * delta] = np.full(n, delta, np.int32)
    for key, param in params.items():
        op = key % 4
        out = np.zeros(n, np.int32)
        assert call(lib, "jm_test_shfl", val, param, op, width, 0xFFFFFFFF, out, grid, block) == SUCCESS
        np.testing.assert_array_equal(out, reference_shfl(val, param, op, width), err_msg=f"op {op}")


def test_shuffle_from_a_lane_outside_the_group_gives_poison(lib):
    """CUDA leaves it undefined; the emulator returns all bits set, so a kernel that relies on it shows."""
    val = np.arange(64, dtype=np.int32) + 100
    out = np.zeros(64, np.int32)
    xor16 = np.full(64, 16, np.int32)
    assert call(lib, "jm_test_shfl", val, xor16, 3, 32, 0x0000FFFF, out, 2, 32) == SUCCESS
    assert (out.reshape(2, 32)[:, :16] == -1).all() and (out.reshape(2, 32)[:, 16:] == -2).all()
    xor1 = np.ones(64, np.int32)
    assert call(lib, "jm_test_shfl", val, xor1, 3, 32, 0x0000FFFF, out, 2, 32) == SUCCESS
    np.testing.assert_array_equal(out.reshape(2, 32)[:, :16], (val ^ 1).reshape(2, 32)[:, :16])
    # a partial warp (block of 48): lanes 16..31 of the second warp do not exist
    val48 = np.arange(48, dtype=np.int32)
    out48 = np.zeros(48, np.int32)
    assert call(lib, "jm_test_shfl", val48, np.full(48, 16, np.int32), 3, 32, 0xFFFFFFFF, out48, 1, 48) == SUCCESS
    np.testing.assert_array_equal(out48[:32], val48[:32] ^ 16)
    assert (out48[32:] == -1).all()


def test_shuffles_of_64_and_16_bit_values(lib):
    n = 64
    d = np.random.default_rng(0).standard_normal(n)
    h = np.arange(n, dtype=np.float16).view(np.uint16)
    dout, hout = np.zeros(n), np.zeros(n, np.uint16)
    assert call(lib, "jm_test_shfl_types", d, h, dout, hout, 1, n) == SUCCESS
    lanes = np.arange(n)
    np.testing.assert_array_equal(dout, d[lanes ^ 5])
    np.testing.assert_array_equal(hout, h[(lanes // 32) * 32 + 31 - lanes % 32])


@pytest.mark.parametrize("mode", ["forward", "reverse", "threads"])
@pytest.mark.parametrize("block", [32, 80, 96, 256])
def test_shfl_up_block_scan(lib, mode, block):
    lib.emu_set_mode(mode)
    grid = 2 if mode == "threads" else 5
    x = np.random.default_rng(block).integers(-50, 50, size=grid * block).astype(np.int32)
    out = np.zeros_like(x)
    assert call(lib, "jm_test_block_scan", x, out, grid, block) == SUCCESS, lib.emu_last_error()
    np.testing.assert_array_equal(out.reshape(grid, block), np.cumsum(x.reshape(grid, block), axis=1))


def test_match_reduce_and_syncthreads_predicates(lib):
    grid, block = 2, 64
    n = grid * block
    x = np.random.default_rng(3).integers(0, 4, size=n).astype(np.int32)
    x[32:64] = 2  # a warp where all values match
    outs = [np.zeros(n, t) for t in (np.uint32, np.int32, np.int32, np.int32, np.uint32, np.uint32, np.int32)]
    assert call(lib, "jm_test_match_reduce", x, *outs, grid, block) == SUCCESS
    match_any, match_all, red_add, red_min, red_max, red_or, count = outs
    for w in range(n // 32):
        xs = x[32 * w : 32 * w + 32]
        for lane in range(32):
            assert match_any[32 * w + lane] == sum(1 << j for j in range(32) if xs[j] == xs[lane])
        parity = xs & 1
        assert (match_all[32 * w : 32 * w + 32] == (1 if (parity == parity[0]).all() else -1)).all()
        assert (red_add[32 * w : 32 * w + 32] == xs.sum()).all()
        assert (red_min[32 * w : 32 * w + 32] == xs.min()).all()
        assert (red_max[32 * w : 32 * w + 32] == xs.max()).all()
        assert (red_or[32 * w : 32 * w + 32] == np.bitwise_or.reduce(xs)).all()
    for b in range(grid):
        positives = int((x[b * block : (b + 1) * block] > 0).sum())
        assert (count[b * block : (b + 1) * block] == positives * 10 + 2).all()


@pytest.mark.parametrize("grid,block", [((2, 3, 2), (4, 2, 3)), ((5, 1, 1), (33, 1, 1)), ((1, 2, 3), (8, 8, 2))])
def test_index_variables(lib, grid, block):
    nthreads, nblocks = int(np.prod(block)), int(np.prod(grid))
    out = np.zeros((nblocks, nthreads, 12), np.int32)
    assert call(lib, "jm_test_index", out, np.array(grid, np.uint32), np.array(block, np.uint32)) == SUCCESS
    bz, by, bx = np.unravel_index(np.arange(nblocks), grid[::-1])
    tz, ty, tx = np.unravel_index(np.arange(nthreads), block[::-1])
    np.testing.assert_array_equal(out[:, :, 0:3], np.broadcast_to(np.stack([tx, ty, tz], 1), (nblocks, nthreads, 3)))
    np.testing.assert_array_equal(out[:, 0, 3:6], np.stack([bx, by, bz], 1))
    assert (out[:, :, 6:9] == block).all() and (out[:, :, 9:12] == grid).all()


@pytest.mark.parametrize("mode", ["forward", "reverse", "threads"])
def test_exited_threads_count_as_arrived_at_syncthreads(lib, mode):
    lib.emu_set_mode(mode)
    out = np.full(2 * 96, -7, np.int32)
    assert call(lib, "jm_test_early_exit", 50, out, 2, 96) == SUCCESS, lib.emu_last_error()
    o = out.reshape(2, 96)
    np.testing.assert_array_equal(o[:, :50], np.broadcast_to((49 - np.arange(50)) * 3, (2, 50)))
    assert (o[:, 50:] == -7).all()


def test_template_kernel_with_a_comma_and_converted_arguments(lib):
    x = np.arange(-50, 150, dtype=np.int32)
    y = np.zeros_like(x)
    assert call(lib, "jm_test_scale", x, y, x.size) == SUCCESS
    np.testing.assert_array_equal(y, np.where(np.arange(x.size) % 64 == 0, 0, 3 * x))  # thread 0 zeroed its n


# ---- fp16 / bf16 / integer conversions ------------------------------------------------------------


def _special_floats() -> np.ndarray:
    rng = np.random.default_rng(7)
    halves = np.arange(0x0000, 0x7C00, dtype=np.uint16).view(np.float16).astype(np.float64)
    half_ties = (halves[:-1] + halves[1:]) / 2  # exact in float32: 12 significant bits
    bf16_ties = ((np.arange(0, 0x7F80, dtype=np.uint32) << 16) | 0x8000).view(np.float32)
    near = np.array([65504, 65519.99, 65520, 65536, 1e5, 2.0**-24, 2.0**-25, 3 * 2.0**-26, 2.0**-26, 1e-10])
    ints = np.array([0.5, 1.5, 2.5, 3.5, -0.5, -1.5, -2.5, 2.0**31, -(2.0**31), 2.0**31 - 128, 3e9, -3e9, 1e20])
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 3.4e38, -3.4e38, 1.4e-45, 1.2e-38])
    random_bits = rng.integers(0, 2**32, size=60000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    pos = np.concatenate([half_ties, near, ints]).astype(np.float32)
    vals = np.concatenate([pos, -pos, bf16_ties, -bf16_ties, specials.astype(np.float32), random_bits])
    with np.errstate(invalid="ignore"):
        return vals.astype(np.float32)


def _to_bf16_bits_directed(x: np.ndarray, mode: str) -> np.ndarray:
    """float32 -> bfloat16 toward zero / down / up (bf16 is the top half of float32)."""
    bits = x.view(np.uint32)
    top = (bits >> 16).astype(np.uint32)
    inexact = (bits & 0xFFFF) != 0
    neg = (bits >> 31) == 1
    if mode == "rz":
        bump = np.zeros_like(inexact)
    elif mode == "rd":
        bump = inexact & neg
    else:
        bump = inexact & ~neg
    out = top + bump
    return np.where(np.isnan(x), 0x7FFF, out).astype(np.uint16)


def _to_half_directed(x: np.ndarray, mode: str) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        h = x.astype(np.float16)
        wide = h.astype(np.float64)
        down = np.where(wide <= x, h, np.nextafter(h, np.float16(-np.inf)))
        up = np.where(wide >= x, h, np.nextafter(h, np.float16(np.inf)))
    if mode == "rd":
        r = down
    elif mode == "ru":
        r = up
    else:
        r = np.where(x > 0, down, up)
    return r.view(np.uint16)


def _round_float64(x: np.ndarray, mant_bits: int, min_exp: int, max_finite: float) -> np.ndarray:
    """float64 -> a binary format's value, to nearest even, computed independently of the emulator."""
    with np.errstate(all="ignore"):
        _, e = np.frexp(x)
        quantum = np.ldexp(1.0, np.maximum(e - 1 - mant_bits, min_exp - mant_bits))
        r = np.rint(x / quantum) * quantum
        return np.where(np.abs(r) > max_finite, np.copysign(np.inf, x), np.where(np.isfinite(x), r, x))


def test_float_conversions_are_bit_exact(lib):
    x = _special_floats()
    n = x.size
    half, bf16 = np.zeros(4 * n, np.uint16), np.zeros(4 * n, np.uint16)
    ints = np.zeros(4 * n, np.int32)
    assert call(lib, "jm_test_float_convert", x, n, half, bf16, ints) == SUCCESS
    half, bf16, ints = half.reshape(n, 4), bf16.reshape(n, 4), ints.reshape(n, 4)
    nan = np.isnan(x)
    # to nearest even against torch (NaN: CUDA's canonical 0x7fff, where torch keeps a payload)
    t = torch.from_numpy(x)
    torch_half = t.to(torch.float16).view(torch.int16).numpy().view(np.uint16)
    torch_bf16 = t.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(half[~nan, 0], torch_half[~nan])
    np.testing.assert_array_equal(bf16[~nan, 0], torch_bf16[~nan])
    assert (half[nan] == 0x7FFF).all() and (bf16[nan] == 0x7FFF).all()
    for col, mode in ((1, "rz"), (2, "rd"), (3, "ru")):
        np.testing.assert_array_equal(half[~nan, col], _to_half_directed(x[~nan], mode), err_msg=mode)
        np.testing.assert_array_equal(bf16[:, col], _to_bf16_bits_directed(x, mode), err_msg=mode)
    # float -> int: ties to even for _rn, saturating, NaN -> 0
    lim = (-(2.0**31), 2.0**31 - 1)
    with np.errstate(invalid="ignore"):
        for col, f in ((0, np.rint), (1, np.trunc), (2, np.floor), (3, np.ceil)):
            expect = np.where(nan, 0, np.clip(f(x.astype(np.float64)), *lim)).astype(np.int64)
            np.testing.assert_array_equal(ints[:, col], expect, err_msg=f.__name__)
    for value, want in ((0.5, 0), (1.5, 2), (2.5, 2), (3.5, 4), (-0.5, 0), (-1.5, -2), (-2.5, -2)):
        assert (ints[x == value, 0] == want).all(), value


def test_half_and_bf16_to_float_all_patterns(lib):
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    f_half, f_bf16 = np.zeros(bits.size, np.float32), np.zeros(bits.size, np.float32)
    assert call(lib, "jm_test_bits_to_float", bits, bits.size, f_half, f_bf16) == SUCCESS
    b = torch.from_numpy(bits.view(np.int16))
    np.testing.assert_array_equal(f_half, b.view(torch.float16).float().numpy())  # NaN == NaN here
    np.testing.assert_array_equal(f_bf16, b.view(torch.bfloat16).float().numpy())
    finite = ~np.isnan(f_half)
    want_bits = b.view(torch.float16).float().numpy().view(np.uint32)
    np.testing.assert_array_equal(f_half.view(np.uint32)[finite], want_bits[finite])  # signed zeros too


def test_double_conversions_round_once(lib):
    """__double2half / __double2bfloat16 round the double itself, not a float rounded from it."""
    rng = np.random.default_rng(11)
    halves = np.arange(1, 0x7BFF, dtype=np.uint16).view(np.float16).astype(np.float64)
    ties = (halves[:-1] + halves[1:]) / 2
    nudged = np.concatenate([ties * (1 + 2.0**-40), ties * (1 - 2.0**-40)])  # lost in a float hop
    x = np.concatenate([ties, nudged, rng.standard_normal(20000) * 10.0 ** rng.integers(-9, 6, 20000)])
    x = np.concatenate([x, -x, [0.0, -0.0, np.inf, -np.inf, 1e300, 1e-300]])
    half, bf16 = np.zeros(x.size, np.uint16), np.zeros(x.size, np.uint16)
    assert call(lib, "jm_test_double_convert", x, x.size, half, bf16) == SUCCESS
    with np.errstate(over="ignore"):
        want_half = x.astype(np.float16).view(np.uint16)  # numpy rounds doubles directly
    np.testing.assert_array_equal(half, want_half)
    # our own independent rounding helper agrees with numpy for half, so trust it for bf16
    np.testing.assert_array_equal(_round_float64(x, 10, -14, 65504.0).astype(np.float16).view(np.uint16), half[:])
    ref = _round_float64(x, 7, -126, float(np.uint32(0x7F7F0000).view(np.float32)))
    got = (bf16.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    np.testing.assert_array_equal(got, ref)
    assert np.array_equal(np.signbit(got), np.signbit(x))


def test_half_arithmetic_is_correctly_rounded(lib):
    rng = np.random.default_rng(5)
    n = 40000

    def halves():
        h = (rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4, n)).astype(np.float16)
        h[:50] = np.array([np.inf, -np.inf, 0, -0.0, 65504, 6e-8, 1e-5] * 7 + [1.0])[:50].astype(np.float16)
        return h

    a, b, c = halves(), halves(), halves()
    out = np.zeros(6 * n, np.uint16)
    assert call(lib, "jm_test_half_arith", a.view(np.uint16), b.view(np.uint16), c.view(np.uint16), n, out) == SUCCESS
    out = out.reshape(n, 6)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)

    def same(got_bits, want: torch.Tensor, what):
        want_bits = want.view(torch.int16).numpy().view(np.uint16)
        isnan = want.float().isnan().numpy()
        np.testing.assert_array_equal(got_bits[~isnan], want_bits[~isnan], err_msg=what)
        assert (got_bits[isnan] == 0x7FFF).all(), what

    with np.errstate(all="ignore"):
        same(out[:, 0], ta + tb, "half add")
        same(out[:, 1], ta * tb, "half mul")
        same(out[:, 2], ta / tb, "half div")
        fma = a.astype(np.float64) * b.astype(np.float64) + c.astype(np.float64)
        same(out[:, 3], torch.from_numpy(fma.astype(np.float16)), "half fma")
        # bf16: reinterpret the same bits
        ba, bb, bc = (torch.from_numpy(v.view(np.int16)).view(torch.bfloat16) for v in (a, b, c))
        same(out[:, 4], ba + bb, "bf16 add")
        f64 = ba.double() * bb.double() + bc.double()
        ref = _round_float64(f64.numpy(), 7, -126, float(np.uint32(0x7F7F0000).view(np.float32)))
        want = torch.from_numpy(ref.astype(np.float32)).to(torch.bfloat16)  # exact: already on the grid
        same(out[:, 5], want, "bf16 fma")


def test_vector_loads_and_half2_arithmetic(lib):
    n4 = 300
    x = np.random.default_rng(2).standard_normal(4 * n4).astype(np.float32) * 30
    scale = np.array([1.5, -0.25], np.float16)
    out = np.zeros(4 * n4, np.uint16)
    assert call(lib, "jm_test_half2", x, scale.view(np.uint16), out, n4) == SUCCESS
    h = torch.from_numpy(x).half().view(n4, 4)
    s = torch.from_numpy(scale)
    want = torch.empty(n4, 4, dtype=torch.float16)
    want[:, 0:2] = h[:, 0:2] * s
    fma = h[:, 2:4].double() * s.double() + 0.5  # one rounding, as __hfma2
    want[:, 2:4] = torch.from_numpy(fma.numpy().astype(np.float16))
    np.testing.assert_array_equal(out.reshape(n4, 4), want.view(torch.int16).numpy().view(np.uint16))


def test_fast_math_intrinsics_are_close(lib):
    x = np.linspace(-20, 20, 4001, dtype=np.float32)
    out = np.zeros(6 * x.size, np.float32)
    assert call(lib, "jm_test_fast_math", x, x.size, out) == SUCCESS
    out = out.reshape(-1, 6)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(out[:, 0], np.exp(x64), rtol=2e-6)
    np.testing.assert_allclose(out[:, 1], np.log(np.abs(x64) + 1), rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(out[:, 2], np.exp2(x64), rtol=2e-7)
    np.testing.assert_allclose(out[:, 3], x64 / 3, rtol=2e-7)
    np.testing.assert_allclose(out[:, 4], 1 / np.sqrt(np.abs(x64) + 1), rtol=2e-7)
    np.testing.assert_array_equal(out[:, 5], np.clip(x, 0, 1))


# ---- atomics ---------------------------------------------------------------------------------------


class AtomicOut(ctypes.Structure):
    _fields_ = [
        ("counter", I32),
        ("fsum", ctypes.c_float),
        ("imax", I32),
        ("imin", I32),
        ("ull_sum", ctypes.c_ulonglong),
        ("cas_counter", U32),
        ("dsum", ctypes.c_double),
    ]


@pytest.mark.parametrize("mode", ["forward", "threads"])
def test_atomics_from_many_threads_and_blocks(lib, mode):
    lib.emu_set_mode(mode)
    grid, block, nbins = 6, 256, 37
    n = grid * block
    keys = np.random.default_rng(9).integers(0, 100000, size=n).astype(np.int32)
    hist = np.zeros(nbins, np.uint32)
    o = AtomicOut(0, 0.0, -(2**31), 2**31 - 1, 0, 0, 0.0)
    assert call(lib, "jm_test_atomics", keys, nbins, hist, ctypes.byref(o), grid, block) == SUCCESS
    assert o.counter == n and o.fsum == n and o.cas_counter == n and o.dsum == n / 2
    assert o.imax == keys.max() and o.imin == keys.min() and o.ull_sum == n * (n - 1) // 2
    np.testing.assert_array_equal(hist, np.bincount(keys % nbins, minlength=nbins))


# ---- faults the emulator reports --------------------------------------------------------------------


FAULTS = {
    0: "deadlock",
    1: "does not name the calling lane",
    2: "every lane named in a mask must make the same call",
    3: "width 12",
    4: "deadlock",
    5: "__trap()",
}


@pytest.mark.parametrize("mode", ["forward", "reverse", "threads"])
@pytest.mark.parametrize("which", sorted(FAULTS))
def test_faulty_kernels_fail_the_launch(lib, mode, which, capfd):
    lib.emu_set_mode(mode)
    out = np.zeros(128, np.int32)
    assert call(lib, "jm_test_faulty", which, out, 2, 64, 0) == LAUNCH_FAILURE
    msg = lib.emu_last_error()
    assert FAULTS[which] in msg and f"{mode} mode" in msg and "faulty_kernel" in msg
    assert "jm_emu:" in capfd.readouterr().err
    # the library is usable again at once
    assert call(lib, "jm_test_faulty", 99, out, 2, 64, 0) == SUCCESS
    np.testing.assert_array_equal(out, np.tile(np.arange(64), 2))


def test_invalid_launch_configurations(lib):
    out = np.zeros(4096, np.int32)
    assert call(lib, "jm_test_faulty", 99, out, 1, 2048, 0) == INVALID_CONFIGURATION
    assert "invalid block" in lib.emu_last_error()
    assert call(lib, "jm_test_faulty", 99, out, 0, 32, 0) == INVALID_CONFIGURATION
    assert call(lib, "jm_test_faulty", 99, out, 1, 32, 1 << 30) == INVALID_CONFIGURATION
    assert "dynamic shared memory" in lib.emu_last_error()


def test_mode_selection(lib, monkeypatch):
    with pytest.raises(ValueError, match="unknown emulator mode"):
        lib.emu_set_mode("sideways")
    lib.emu_set_mode(None)
    monkeypatch.setenv("JM_EMU_MODE", "reverse")
    assert lib.emu_mode() == "reverse"
    monkeypatch.setenv("JM_EMU_MODE", "sideways")
    assert lib.emu_mode() == "invalid"
    out = np.zeros(64, np.int32)
    assert call(lib, "jm_test_faulty", 99, out, 1, 64, 0) == INVALID_VALUE
    assert "JM_EMU_MODE=sideways" in lib.emu_last_error()
    monkeypatch.delenv("JM_EMU_MODE")
    assert lib.emu_mode() == "forward"
    lib.emu_set_mode("threads")
    assert lib.emu_mode() == "threads"


# ---- ThreadSanitizer ----------------------------------------------------------------------------------


@pytest.mark.tsan
@pytest.mark.slow
def test_thread_sanitizer_reports_the_missing_barrier():
    """In threads mode every CUDA thread is a POSIX thread and barriers are mutex + condition
    variable, so TSan sees the shared-memory race of the kernel without its __syncthreads, and
    nothing in the correct kernels (shared-memory tree, warp shuffles, static shared memory)."""
    ok, why = emulation.sanitizer_available("thread")
    if not ok:
        pytest.skip(f"ThreadSanitizer is unavailable here: {why}")
    exe = emulation.build([KERNELS / "reduce.cu", KERNELS / "tsan_driver.cpp"], sanitize="thread", executable=True)
    env = dict(os.environ, TSAN_OPTIONS="halt_on_error=0 exitcode=66", JM_EMU_QUIET="1")
    good = subprocess.run([str(exe), "good"], capture_output=True, text=True, timeout=300, env=env)
    assert good.returncode == 0, good.stderr[-3000:]
    assert "ThreadSanitizer" not in good.stderr
    sums = [sum(i % 5 for i in range(64 * b, 64 * b + 64)) for b in range(2)]
    assert f"smem {sums[0]} {sums[1]}" in good.stdout
    # TSan sees a race only when the two accesses are not ordered by some other synchronisation in
    # that run (the emulator's own locks can order them by chance): a few runs, one report needed
    for _ in range(8):
        bad = subprocess.run([str(exe), "bad"], capture_output=True, text=True, timeout=300, env=env)
        if bad.returncode == 66:
            break
    assert bad.returncode == 66, bad.stderr[-3000:]
    assert "WARNING: ThreadSanitizer: data race" in bad.stderr
    assert "block_sum_smem<false>" in bad.stderr  # the race is located in the kernel


# ---- nvcc ------------------------------------------------------------------------------------------------


@pytest.mark.nvcc
def test_kernels_compile_with_nvcc_for_orin(tmp_path):
    """The same sources through nvcc for sm_87 (Orin) and, where the toolkit knows it, sm_110
    (Thor); ptxas's register / spill / shared memory report is printed (pytest -s)."""
    nvcc = emulation.find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc is not installed (CUDA toolkit): the GPU compile check needs it")
    archs = subprocess.run([nvcc, "--list-gpu-arch"], capture_output=True, text=True).stdout
    gencode = ["-gencode", "arch=compute_87,code=sm_87"]
    if "compute_110" in archs:
        gencode += ["-gencode", "arch=compute_110,code=sm_110"]
    unit = tmp_path / "all_kernels.cu"
    unit.write_text("".join(f'#include "{s}"\n' for s in KERNEL_SOURCES))
    cmd = [nvcc, "-std=c++17", *gencode, f"-I{emulation.PLUGINS_DIR}", "-Xptxas", "-v", "-c", str(unit)]
    proc = subprocess.run([*cmd, "-o", str(tmp_path / "all.o")], capture_output=True, text=True, timeout=600)
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, report[-6000:]
    lines = [line for line in report.splitlines() if "entry function" in line or "Used" in line or "spill" in line]
    print("\n".join(lines))
    assert len(re.findall(r"Used \d+ registers", report)) >= 10
    assert "warning" not in report.lower()
    assert not re.search(r"[1-9]\d* bytes spill stores", report)


def test_kernels_build_with_the_ucontext_fallback():
    """Architectures other than x86-64 switch fibers with ucontext; build that path here as well."""
    lib = emulation.load([KERNELS / "reduce.cu"], name="emu_ucontext", defines={"JM_EMU_USE_UCONTEXT": None})
    for mode in ("forward", "reverse"):
        lib.emu_set_mode(mode)
        x = np.arange(96 * 3, dtype=np.float32) % 9
        np.testing.assert_array_equal(block_sums(lib, "smem", x, 3, 96), reference_block_sums(x, 3, 96))
        np.testing.assert_array_equal(block_sums(lib, "shfl", x, 3, 96)[::2], reference_block_sums(x, 3, 96))
    lib.emu_set_mode(None)
