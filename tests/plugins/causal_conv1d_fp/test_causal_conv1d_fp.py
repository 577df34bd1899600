"""jetmamba::CausalConv1dFp (fp16 / fp32): the CUDA kernel (plugins/causal_conv1d_fp, whose body is
plugins/causal_conv1d/causal_conv1d.cuh) against the op reference.

Every test body runs emulated on the CPU and, where a GPU exists, on it (tests/support/kernels.py).
Outputs within the "conv.kernel.<dtype>" tolerance (fp32 maths in both; the kernel's fused
multiply-adds and exponential differ from the reference's in the last bits); the new state exactly.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import pytest
import torch
from kernels import BACKENDS, backend  # noqa: F401
from tolerances import assert_close

from jetmamba.compiler.ops.reference import causal_conv1d_fp

SOURCES = ["causal_conv1d_fp/causal_conv1d_fp.cu"]
SUCCESS, INVALID_VALUE = 0, 1
FP32, FP16 = 0, 1  # JmCausalConv1dFpDtype (TensorRT's DataType values)
DTYPES = {torch.float32: FP32, torch.float16: FP16}
VP, I32 = ctypes.c_void_p, ctypes.c_int


class Params(ctypes.Structure):
    _fields_ = [
        ("x", VP), ("weight", VP), ("bias", VP), ("conv_state", VP), ("y", VP), ("conv_state_out", VP),
        ("dtype", I32), ("batch", I32), ("seqlen", I32), ("channels", I32), ("k", I32), ("seq_chunk", I32),
    ]  # fmt: skip


@dataclass
class Case:
    dtype: torch.dtype
    batch: int
    seqlen: int
    channels: int
    k: int
    bias: bool = True
    magnitude: float = 1.0  # of x and the state; large values drive SiLU's exponential out of range
    seed: int = 0


def make_inputs(case: Case) -> dict:
    g = torch.Generator().manual_seed(case.seed)
    b, l, c, k = case.batch, case.seqlen, case.channels, case.k

    def randn(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g)).to(case.dtype)

    # unit-scale data: |y| stays well below 16, where one fp16 rounding step is below the tolerance
    return {
        "x": randn(b, l, c, scale=case.magnitude),
        "weight": randn(c, k, scale=0.5),
        "bias": randn(c, scale=0.5) if case.bias else None,
        "conv_state": randn(b, k - 1, c, scale=case.magnitude),
    }


def reference(inp: dict):
    return causal_conv1d_fp(inp["x"], inp["weight"], inp["bias"], inp["conv_state"])


def ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def params(dev: dict, y, state_out, *, dtype, batch, seqlen, channels, k, seq_chunk=0) -> Params:
    return Params(ptr(dev["x"]), ptr(dev["weight"]), ptr(dev["bias"]), ptr(dev["conv_state"]), ptr(y),
                  ptr(state_out), DTYPES[dtype], batch, seqlen, channels, k, seq_chunk)  # fmt: skip


def call(lib, p) -> int:
    size = lib.jm_causal_conv1d_fp_params_size
    size.restype = ctypes.c_size_t
    assert size() == ctypes.sizeof(Params), "the ctypes Params layout differs from the C struct"
    fn = lib.jm_causal_conv1d_fp
    fn.argtypes = [ctypes.POINTER(Params), VP]
    fn.restype = ctypes.c_int
    return fn(None if p is None else ctypes.byref(p), None)


def to_device(be, inp: dict) -> dict:
    return {name: None if t is None else be.tensor(t) for name, t in inp.items()}


def run(be, lib, inp: dict, *, seq_chunk: int = 0, in_place: bool = False):
    """(y, conv_state_out) on the CPU; in_place passes the state buffer as conv_state_out too."""
    b, l, c = inp["x"].shape
    k = inp["weight"].shape[1]
    dtype = inp["x"].dtype
    dev = to_device(be, inp)
    y = be.empty((b, l, c), dtype)
    if in_place:  # a copy: on the CPU be dev["conv_state"] is the caller's tensor itself
        dev["conv_state"] = state_out = dev["conv_state"].clone()
    else:
        state_out = be.empty((b, k - 1, c), dtype)
    p = params(dev, y, state_out, dtype=dtype, batch=b, seqlen=l, channels=c, k=k, seq_chunk=seq_chunk)
    be.check(lib, call(lib, p))
    be.sync()
    return y.cpu(), state_out.cpu()


def check(be, lib, inp: dict, **kwargs):
    y, state_out = run(be, lib, inp, **kwargs)
    ref_y, ref_state = reference(inp)
    assert y.dtype == ref_y.dtype and state_out.dtype == ref_state.dtype
    assert torch.equal(state_out, ref_state), "the new conv state is not the last k-1 inputs"
    assert_close(y.float(), ref_y.float(), f"conv.kernel.{'fp16' if y.dtype == torch.float16 else 'fp32'}")
    return y, state_out


CASES = [
    # decode, and lengths below / at / above k-1: odd channels (scalar path), batch 1, bias
    *(Case(dt, 1, l, 37, k, seed=k * 10 + l) for dt in DTYPES for k in (2, 3, 4) for l in (1, 2, 7)),
    # batch 3, channels a multiple of 4 but not of the block (vectorised path), no bias
    *(Case(dt, 3, l, 260, k, bias=False, seed=k * 10 + l + 1) for dt in DTYPES for k in (2, 3, 4) for l in (1, 3)),
    # several sequence chunks (the launcher's chunks are at least 32 steps)
    *(
        Case(dt, b, 150, c, k, bias=c % 2 == 1, seed=k + c)
        for dt in DTYPES
        for k in (2, 4)
        for b, c in ((1, 37), (3, 68))
    ),
    # large inputs: SiLU's exp(-v) overflows for v < -88 (the output is -0), large v passes through
    Case(torch.float32, 2, 9, 33, 4, magnitude=60.0, seed=5),
    Case(torch.float16, 2, 9, 36, 3, magnitude=6.0, seed=6),
    Case(torch.float32, 3, 5, 1, 4, seed=7),
]


def case_id(case: Case) -> str:
    name = "fp16" if case.dtype == torch.float16 else "fp32"
    bias = "-bias" if case.bias else ""
    return f"{name}-b{case.batch}-l{case.seqlen}-c{case.channels}-k{case.k}{bias}-m{case.magnitude:g}"


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_matches_reference(backend, case):  # noqa: F811
    check(backend, backend.load(SOURCES), make_inputs(case))


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp16"])
@pytest.mark.parametrize("k", [2, 4])
def test_explicit_chunks_give_the_same_result(backend, dtype, k):  # noqa: F811
    """The smallest chunk (k-1), a small odd one, one longer than the sequence: identical outputs."""
    lib = backend.load(SOURCES)
    for channels in (36, 37):
        inp = make_inputs(Case(dtype, 2, 23, channels, k, seed=k * 7 + channels))
        y_auto, state_auto = check(backend, lib, inp)
        for chunk in (k - 1, 5, 64):
            y, state_out = run(backend, lib, inp, seq_chunk=chunk)
            assert torch.equal(y, y_auto) and torch.equal(state_out, state_auto)


@pytest.mark.parametrize("backend", ["emu"], indirect=True)
def test_fiber_schedules_agree(backend):  # noqa: F811
    """forward, reverse and random thread orders give the same outputs, in place or not."""
    lib = backend.load(SOURCES)
    results = []
    try:
        for mode in ("forward", "reverse", "random"):
            lib.emu_set_mode(mode)
            lib.emu_set_seed(3)
            for dtype in DTYPES:
                inp = make_inputs(Case(dtype, 3, 70, 132, 4, seed=21))
                results.append(check(backend, lib, inp, seq_chunk=8))
                results.append(run(backend, lib, inp, seq_chunk=8, in_place=True))
    finally:
        lib.emu_set_mode(None)
    for i, (y, state_out) in enumerate(results):
        first = results[i % 4 - i % 2]  # forward's result of the same dtype
        assert torch.equal(y, first[0]) and torch.equal(state_out, first[1])


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp16"])
@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("in_place", [False, True], ids=["new-state-buffer", "state-in-place"])
def test_prefill_then_decode_equals_one_call(backend, dtype, k, in_place):  # noqa: F811
    """Prefill 9 steps, then 6 single steps feeding the state back (in place: one buffer for
    conv_state and conv_state_out), equals one 15-step call exactly: outputs and final state."""
    lib = backend.load(SOURCES)
    for channels in (40, 41):
        full = make_inputs(Case(dtype, 2, 15, channels, k, seed=31 + k + channels))
        y_full, state_full = check(backend, lib, full)
        dev = to_device(backend, full)
        state = dev["conv_state"].clone()
        ys = []
        for t0, t1 in [(0, 9)] + [(t, t + 1) for t in range(9, 15)]:
            x = backend.tensor(full["x"][:, t0:t1])
            y = backend.empty((2, t1 - t0, channels), dtype)
            state_out = state if in_place else backend.empty(state.shape, dtype)
            p = params({**dev, "x": x, "conv_state": state}, y, state_out, dtype=dtype, batch=2, seqlen=t1 - t0,
                       channels=channels, k=k)  # fmt: skip
            backend.check(lib, call(lib, p))
            backend.sync()
            ys.append(y.cpu())
            state = state_out
        assert torch.equal(torch.cat(ys, dim=1), y_full)
        assert torch.equal(state.cpu(), state_full)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_in_place_state_over_many_chunks(backend):  # noqa: F811
    """conv_state_out == conv_state with many chunks: the thread that reads the old state writes the new."""
    lib = backend.load(SOURCES)
    for dtype in DTYPES:
        for channels in (64, 65):
            inp = make_inputs(Case(dtype, 3, 100, channels, 4, seed=40 + channels))
            y, state_out = check(backend, lib, inp, seq_chunk=4, in_place=True)
            y2, state2 = run(backend, lib, inp, seq_chunk=4)
            assert torch.equal(y, y2) and torch.equal(state_out, state2)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_empty_sequence_copies_the_state(backend):  # noqa: F811
    lib = backend.load(SOURCES)
    inp = make_inputs(Case(torch.float16, 2, 1, 36, 3, seed=60))
    dev = to_device(backend, inp)
    state_out = backend.empty((2, 2, 36), torch.float16)
    p = params({**dev, "x": None}, None, state_out, dtype=torch.float16, batch=2, seqlen=0, channels=36, k=3)
    backend.check(lib, call(lib, p))
    backend.sync()
    assert torch.equal(state_out.cpu(), inp["conv_state"])


BAD_ARGUMENTS = {
    "unknown dtype": {"dtype": 2},
    "negative dtype": {"dtype": -1},
    "k=1": {"k": 1},
    "k=5": {"k": 5},
    "negative seqlen": {"seqlen": -1},
    "negative batch": {"batch": -1},
    "negative channels": {"channels": -3},
    "too many batch items": {"batch": 70000},
    "seq_chunk below k-1": {"seq_chunk": 1},
    "seq_chunk giving > 65535 chunks": {"seqlen": 200000, "seq_chunk": 3},
    "NULL x": {"x": None},
    "NULL weight": {"weight": None},
    "NULL conv_state": {"conv_state": None},
    "NULL y": {"y": None},
    "NULL conv_state_out": {"conv_state_out": None},
    "y overlaps x": {"y": "x+2"},
    "y overlaps bias": {"y": "bias"},
    "state_out overlaps weight": {"conv_state_out": "weight+4"},
    "state_out shifted over state": {"conv_state_out": "conv_state+2"},
}


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_bad_arguments_are_rejected_and_write_nothing(backend):  # noqa: F811
    lib = backend.load(SOURCES)
    b, l, c, k = 2, 5, 37, 3
    dtype = torch.float16
    inp = make_inputs(Case(dtype, b, l, c, k, seed=70))
    dev = to_device(backend, inp)
    assert call(lib, None) == INVALID_VALUE
    for why, change in BAD_ARGUMENTS.items():
        y = backend.empty((b, l, c), dtype)
        state_out = backend.empty((b, k - 1, c), dtype)
        state_before = dev["conv_state"].cpu().clone()
        p = params(dev, y, state_out, dtype=dtype, batch=b, seqlen=l, channels=c, k=k)
        for field, value in change.items():
            if isinstance(value, str):  # an address inside another tensor
                name, _, offset = value.partition("+")
                value = dev[name].data_ptr() + int(offset or 0)
            setattr(p, field, value)
        backend.sync()
        assert call(lib, p) == INVALID_VALUE, why
        backend.sync()
        assert y.cpu().isnan().all() and state_out.cpu().isnan().all(), f"{why}: an output was written"
        assert torch.equal(dev["conv_state"].cpu(), state_before) and torch.equal(dev["x"].cpu(), inp["x"]), why
