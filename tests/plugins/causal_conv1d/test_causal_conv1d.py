"""jetmamba::CausalConv1d (int8): the CUDA kernel (plugins/causal_conv1d) against the op reference.

Every test body runs emulated on the CPU and, where a GPU exists, on it (tests/support/kernels.py).
Shapes are small: decode (l = 1), l below k-1, odd lengths, lengths spanning several sequence
chunks; odd channel counts (scalar path) and multiples of 4 (vectorised path) that are not a
multiple of the block.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import pytest
import torch
from kernels import BACKENDS, backend  # noqa: F401

from jetmamba.calibration.functional.conv import causal_conv1d_ref
from jetmamba.compiler.ops.reference import causal_conv1d_quant

SOURCES = ["causal_conv1d/causal_conv1d.cu"]
SUCCESS, INVALID_VALUE = 0, 1
VP, I32 = ctypes.c_void_p, ctypes.c_int

# The kernel sums the integer taps exactly and applies x_scale * w_scale once (one fused multiply-add
# with the bias); the reference multiplies every dequantized tap in fp32 and adds in its own order,
# and the two SiLUs use different exponentials. Both are within a few fp32 ulps of the exact value,
# so the int8 codes can differ only where v / out_scale lies within a hair of a half-integer, where
# round-half-to-even goes one way or the other: by 1, at most TIE_WINDOW quanta from the tie (the
# fp64 value decides), on at most MAX_TIE_FRACTION of the outputs (or one output in a small case).
# Observed: about 1e-6 (4 of 4.7 million outputs over random shapes and scales, emulated).
TIE_WINDOW = 1e-3
MAX_TIE_FRACTION = 1e-4


class Params(ctypes.Structure):
    _fields_ = [
        ("x", VP), ("weight", VP), ("bias", VP), ("conv_state", VP), ("y", VP), ("conv_state_out", VP),
        ("x_scale", VP), ("w_scale", VP), ("out_scale", VP),
        ("x_scale_count", I32), ("w_scale_count", I32), ("out_scale_count", I32),
        ("batch", I32), ("seqlen", I32), ("channels", I32), ("k", I32), ("seq_chunk", I32),
    ]  # fmt: skip


@dataclass
class Case:
    batch: int
    seqlen: int
    channels: int
    k: int
    bias: bool = True
    scales: str = "ttt"  # x, w, out: t = one per tensor, c = one per channel
    saturate: bool = False  # a small out_scale: many outputs clamp to -128 / 127
    seed: int = 0


def make_inputs(case: Case) -> dict:
    g = torch.Generator().manual_seed(case.seed)
    b, l, c, k = case.batch, case.seqlen, case.channels, case.k

    def codes(*shape):
        return torch.randint(-128, 128, shape, generator=g, dtype=torch.int8)

    def scale(kind: str, base: float) -> torch.Tensor:
        n = c if kind == "c" else 1
        return (base * (0.5 + torch.rand(n, generator=g))).float()

    inp = {
        "x": codes(b, l, c),
        "weight": codes(c, k),
        "bias": torch.randn(c, generator=g) if case.bias else None,
        "conv_state": codes(b, k - 1, c),
        "x_scale": scale(case.scales[0], 0.02),
        "w_scale": scale(case.scales[1], 0.01),
    }
    # out_scale from the data: the largest |y| over about 100 quanta, per channel or per tensor, times
    # a random factor, so outputs use the int8 range; saturating: 5000 quanta, so that SiLU's minimum
    # (-0.28) clamps to -128 too
    v = exact_values(inp)
    amax = v.abs().amax(dim=(0, 1)) if case.scales[2] == "c" else v.abs().amax().reshape(1)
    quanta = 5000.0 if case.saturate else 100.0
    inp["out_scale"] = (amax.clamp_min(1e-3) / quanta * (0.8 + 0.4 * torch.rand(amax.shape, generator=g))).float()
    return inp


def exact_values(inp: dict) -> torch.Tensor:
    """silu(conv(DQ(x), DQ(w)) + bias) in fp64: the value each output quantizes."""
    xs, ws = inp["x_scale"].double(), inp["w_scale"].double().reshape(-1, 1)
    bias = None if inp["bias"] is None else inp["bias"].double()
    v, _ = causal_conv1d_ref(inp["x"].double() * xs, inp["weight"].double() * ws, bias,
                             inp["conv_state"].double() * xs)  # fmt: skip
    return v


def reference(inp: dict):
    return causal_conv1d_quant(inp["x"], inp["weight"], inp["bias"], inp["conv_state"], x_scale=inp["x_scale"],
                               w_scale=inp["w_scale"], out_scale=inp["out_scale"])  # fmt: skip


def ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def params(dev: dict, y, state_out, *, batch, seqlen, channels, k, seq_chunk=0) -> Params:
    return Params(
        ptr(dev["x"]), ptr(dev["weight"]), ptr(dev["bias"]), ptr(dev["conv_state"]), ptr(y), ptr(state_out),
        ptr(dev["x_scale"]), ptr(dev["w_scale"]), ptr(dev["out_scale"]),
        dev["x_scale"].numel(), dev["w_scale"].numel(), dev["out_scale"].numel(),
        batch, seqlen, channels, k, seq_chunk,
    )  # fmt: skip


def call(lib, p) -> int:
    size = lib.jm_causal_conv1d_params_size
    size.restype = ctypes.c_size_t
    assert size() == ctypes.sizeof(Params), "the ctypes Params layout differs from the C struct"
    fn = lib.jm_causal_conv1d
    fn.argtypes = [ctypes.POINTER(Params), VP]
    fn.restype = ctypes.c_int
    return fn(None if p is None else ctypes.byref(p), None)


def to_device(be, inp: dict) -> dict:
    return {name: None if t is None else be.tensor(t) for name, t in inp.items()}


def run(be, lib, inp: dict, *, seq_chunk: int = 0, in_place: bool = False):
    """(y, conv_state_out) on the CPU; in_place passes the state buffer as conv_state_out too."""
    b, l, c = inp["x"].shape
    k = inp["weight"].shape[1]
    dev = to_device(be, inp)
    y = be.empty((b, l, c), torch.int8)
    if in_place:  # a copy: on the CPU be dev["conv_state"] is the caller's tensor itself
        dev["conv_state"] = state_out = dev["conv_state"].clone()
    else:
        state_out = be.empty((b, k - 1, c), torch.int8)
    p = params(dev, y, state_out, batch=b, seqlen=l, channels=c, k=k, seq_chunk=seq_chunk)
    be.check(lib, call(lib, p))
    be.sync()
    return y.cpu(), state_out.cpu()


def tie_mismatches(y: torch.Tensor, inp: dict) -> int:
    """Asserts y equals the reference but for ±1 at rounding ties; returns how many such ties."""
    ref_y, _ = reference(inp)
    diff = y.int() - ref_y.int()
    bad = diff != 0
    n_bad = int(bad.sum())
    if n_bad:
        assert int(diff.abs().max()) == 1, f"int8 outputs differ by up to {int(diff.abs().max())}"
        u = (exact_values(inp) / inp["out_scale"].double())[bad]
        distance = (u - torch.floor(u) - 0.5).abs()
        assert float(distance.max()) < TIE_WINDOW, f"a ±1 difference {float(distance.max()):.3g} quanta from a tie"
    assert n_bad <= max(1.0, MAX_TIE_FRACTION * y.numel()), f"{n_bad} of {y.numel()} outputs off by one"
    return n_bad


def check(be, lib, inp: dict, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    y, state_out = run(be, lib, inp, **kwargs)
    assert torch.equal(state_out, reference(inp)[1]), "the new conv state is not the last k-1 inputs"
    tie_mismatches(y, inp)
    return y, state_out


CASES = [
    # decode, and lengths below / at / above k-1, on the scalar path (odd channels)
    *(Case(1, l, 37, k, bias=True, scales="ttt", seed=k * 100 + l) for k in (2, 3, 4) for l in (1, 2, 3, 7)),
    # the same on the vectorised path, batch 3, per-channel scales, no bias
    *(Case(3, l, 260, k, bias=False, scales="ccc", seed=k * 100 + l + 1) for k in (2, 3, 4) for l in (1, 2, 3, 7)),
    # several sequence chunks (the launcher's chunks are at least 32 steps)
    *(
        Case(b, 150, c, k, bias=bias, scales=s, seed=k + c)
        for k in (2, 3, 4)
        for b, c, bias, s in ((1, 37, True, "tct"), (3, 68, False, "ctc"))
    ),
    # saturating outputs, mixed scales; tiny and single channels
    Case(2, 33, 21, 4, saturate=True, scales="tcc", seed=7),
    Case(2, 33, 64, 3, saturate=True, scales="cct", seed=8),
    Case(3, 5, 1, 4, scales="ccc", seed=9),
    Case(1, 1, 4, 2, bias=False, seed=10),
    Case(2, 65, 130, 4, scales="ctt", seed=11),  # 130 channels: a partial second block on the scalar path
]


def case_id(case: Case) -> str:
    return (f"b{case.batch}-l{case.seqlen}-c{case.channels}-k{case.k}-{case.scales}"
            f"{'-bias' if case.bias else ''}{'-sat' if case.saturate else ''}")  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_matches_reference(backend, case):  # noqa: F811
    lib = backend.load(SOURCES)
    inp = make_inputs(case)
    y, _ = check(backend, lib, inp)
    if case.saturate:
        assert (y == 127).sum() > y.numel() // 4 and (y == -128).any(), "the saturating case does not saturate"


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("seq_chunk", ["k-1", 5, 64])
def test_explicit_chunks_give_the_same_result(backend, k, seq_chunk):  # noqa: F811
    """The smallest chunk (k-1: every chunk but the first reads its whole window from x), a small odd
    one, and one longer than the sequence: outputs identical to the automatic choice."""
    lib = backend.load(SOURCES)
    for channels in (36, 37):  # vectorised and scalar paths
        inp = make_inputs(Case(2, 23, channels, k, scales="ccc", seed=k * 7 + channels))
        chunk = k - 1 if seq_chunk == "k-1" else seq_chunk
        y, state_out = check(backend, lib, inp, seq_chunk=chunk)
        y_auto, state_auto = run(backend, lib, inp)
        assert torch.equal(y, y_auto) and torch.equal(state_out, state_auto)


@pytest.mark.parametrize("backend", ["emu"], indirect=True)
def test_fiber_schedules_agree(backend):  # noqa: F811
    """forward, reverse and random thread orders: the same outputs (threads share nothing, and the
    only thread that writes a state element is the one that read it)."""
    lib = backend.load(SOURCES)
    inp = make_inputs(Case(3, 70, 132, 4, scales="ctc", seed=21))
    results = []
    try:
        for mode in ("forward", "reverse", "random"):
            lib.emu_set_mode(mode)
            lib.emu_set_seed(5)
            results.append(check(backend, lib, inp, seq_chunk=8))
            results.append(check(backend, lib, inp, seq_chunk=8, in_place=True))
    finally:
        lib.emu_set_mode(None)
    for y, state_out in results[1:]:
        assert torch.equal(y, results[0][0]) and torch.equal(state_out, results[0][1])


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("in_place", [False, True], ids=["new-state-buffer", "state-in-place"])
def test_prefill_then_decode_equals_one_call(backend, k, in_place):  # noqa: F811
    """Prefill 9 steps, then 6 single steps feeding the state back (in place: the same buffer as
    conv_state and conv_state_out), equals one 15-step call exactly: outputs and final state."""
    lib = backend.load(SOURCES)
    for channels in (40, 41):
        full = make_inputs(Case(2, 15, channels, k, scales="ccc", seed=31 + k + channels))
        y_full, state_full = check(backend, lib, full)
        dev = to_device(backend, full)
        state = dev["conv_state"].clone()
        ys = []
        for t0, t1 in [(0, 9)] + [(t, t + 1) for t in range(9, 15)]:
            x = backend.tensor(full["x"][:, t0:t1])
            y = backend.empty((2, t1 - t0, channels), torch.int8)
            state_out = state if in_place else backend.empty(state.shape, torch.int8)
            p = params({**dev, "x": x, "conv_state": state}, y, state_out, batch=2, seqlen=t1 - t0,
                       channels=channels, k=k)  # fmt: skip
            backend.check(lib, call(lib, p))
            backend.sync()
            ys.append(y.cpu())
            state = state_out
        assert torch.equal(torch.cat(ys, dim=1), y_full)
        assert torch.equal(state.cpu(), state_full)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_in_place_state_over_many_chunks(backend):  # noqa: F811
    """conv_state_out == conv_state with a sequence of many chunks: the old state is read (for the
    first outputs) by the same thread that writes the new one, so in-place is exact."""
    lib = backend.load(SOURCES)
    for channels in (64, 65):
        inp = make_inputs(Case(3, 100, channels, 4, scales="ttc", seed=40 + channels))
        y, state_out = check(backend, lib, inp, seq_chunk=4, in_place=True)
        y2, state2 = run(backend, lib, inp, seq_chunk=4)
        assert torch.equal(y, y2) and torch.equal(state_out, state2)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_rounding_ties_are_rare(backend):  # noqa: F811
    """A larger sample (2 x 64 x 512 outputs, k = 4, per-channel scales): the fraction of ±1 tie
    differences, printed, well under the bound."""
    lib = backend.load(SOURCES)
    inp = make_inputs(Case(2, 64, 512, 4, scales="ccc", seed=50))
    y, state_out = run(backend, lib, inp)
    assert torch.equal(state_out, reference(inp)[1])
    n_bad = tie_mismatches(y, inp)
    print(f"rounding ties: {n_bad} of {y.numel()} int8 outputs ({n_bad / y.numel():.2e})")


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_empty_sequence_copies_the_state_and_empty_batch_does_nothing(backend):  # noqa: F811
    lib = backend.load(SOURCES)
    inp = make_inputs(Case(2, 1, 36, 3, seed=60))
    dev = to_device(backend, inp)
    state_out = backend.empty((2, 2, 36), torch.int8)
    p = params({**dev, "x": None}, None, state_out, batch=2, seqlen=0, channels=36, k=3)
    backend.check(lib, call(lib, p))
    backend.sync()
    assert torch.equal(state_out.cpu(), inp["conv_state"])
    y = backend.empty((2, 1, 36), torch.int8)
    state_out = backend.empty((2, 2, 36), torch.int8)
    p = params(dev, y, state_out, batch=0, seqlen=1, channels=36, k=3)
    backend.check(lib, call(lib, p))
    backend.sync()
    assert (y.cpu() == -77).all() and (state_out.cpu() == -77).all()


BAD_ARGUMENTS = {
    "k=1": {"k": 1},
    "k=5": {"k": 5},
    "negative seqlen": {"seqlen": -1},
    "negative batch": {"batch": -2},
    "negative channels": {"channels": -1},
    "too many batch items": {"batch": 70000},
    "seq_chunk below k-1": {"seq_chunk": 2},
    "negative seq_chunk": {"seq_chunk": -1},
    "seq_chunk giving > 65535 chunks": {"seqlen": 200_000, "seq_chunk": 3},  # 66 667 chunks
    "two x scales": {"x_scale_count": 2},
    "no w scale": {"w_scale_count": 0},
    "out scales != channels": {"out_scale_count": 36},
    "NULL x_scale": {"x_scale": None},
    "NULL out_scale": {"out_scale": None},
    "NULL x": {"x": None},
    "NULL weight": {"weight": None},
    "NULL conv_state": {"conv_state": None},
    "NULL y": {"y": None},
    "NULL conv_state_out": {"conv_state_out": None},
    "y overlaps x": {"y": "x+5"},
    "state_out overlaps x": {"conv_state_out": "x"},
    "state_out shifted over state": {"conv_state_out": "conv_state+1"},
    "y over state": {"y": "conv_state"},
}


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_bad_arguments_are_rejected_and_write_nothing(backend):  # noqa: F811
    lib = backend.load(SOURCES)
    b, l, c, k = 2, 5, 37, 4
    inp = make_inputs(Case(b, l, c, k, scales="ccc", seed=70))
    dev = to_device(backend, inp)
    assert call(lib, None) == INVALID_VALUE
    for why, change in BAD_ARGUMENTS.items():
        y = backend.empty((b, l, c), torch.int8)
        state_out = backend.empty((b, k - 1, c), torch.int8)
        state_before = dev["conv_state"].cpu().clone()
        p = params(dev, y, state_out, batch=b, seqlen=l, channels=c, k=k)
        for field, value in change.items():
            if isinstance(value, str):  # an address inside another tensor
                name, _, offset = value.partition("+")
                value = dev[name].data_ptr() + int(offset or 0)
            setattr(p, field, value)
        backend.sync()
        assert call(lib, p) == INVALID_VALUE, why
        backend.sync()
        assert (y.cpu() == -77).all() and (state_out.cpu() == -77).all(), f"{why}: an output was written"
        assert torch.equal(dev["conv_state"].cpu(), state_before) and torch.equal(dev["x"].cpu(), inp["x"]), why
