"""jetmamba::SelectiveScan's CUDA kernels (plugins/selective_scan) against the op reference.

The same test bodies run the kernels emulated on the CPU and, where there is a GPU, on the GPU.
Outputs are compared with ``reference.selective_scan_quant`` computed in fp32 (y in fp32, the state
from the same fp32 values before any rounding), each tensor divided by its largest reference magnitude
("kernel.scan.fp16" / "kernel.scan.fp32" in tolerances.py, by the dtype the kernel writes).
"""

from __future__ import annotations

import ctypes
import subprocess

import pytest
import torch
from kernels import BACKENDS, backend  # noqa: F401
from tolerances import assert_close

from jetmamba.compiler.ops import reference as ref

VP, I32, F32 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_float
FLOAT16, FLOAT32 = 0, 1
CODES = {torch.float16: FLOAT16, torch.float32: FLOAT32}
SUCCESS, INVALID_VALUE = 0, 1
SOURCES = ["selective_scan/selective_scan.cu"]
SCALES = dict(u_scale=1 / 64, dt_scale=1 / 48, B_scale=1 / 64, C_scale=1 / 64, z_scale=1 / 40)


class Params(ctypes.Structure):
    _fields_ = [
        *((name, VP) for name in ("u", "dt", "A", "B", "C", "D", "z", "dt_bias", "ssm_state", "gate_smooth", "y")),
        ("ssm_state_out", VP),
        *((name, I32) for name in ("batch", "seqlen", "d", "n")),
        *((name, F32) for name in SCALES),
        ("state_dtype", I32),
        ("out_dtype", I32),
        ("ssm_state_scale", VP),
        ("ssm_state_scale_out", VP),
    ]


def launch(lib, p: Params) -> int:
    fn = lib.jm_selective_scan
    fn.argtypes = [ctypes.POINTER(Params), VP]
    fn.restype = ctypes.c_int
    return fn(ctypes.byref(p), None)


def ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def make_inputs(b, l, d, n, *, seed=0, state_dtype=torch.float16, smooth=False, saturate=False):
    """Random int8 codes (all of them -128 or 127 with ``saturate``), Mamba-like A, D, dt_bias."""
    g = torch.Generator().manual_seed(seed)

    def codes(*shape):
        if saturate:
            return torch.where(torch.rand(*shape, generator=g) < 0.5, -128, 127).to(torch.int8)
        return torch.randint(-128, 128, shape, generator=g, dtype=torch.int8)

    scales = dict(SCALES)
    if saturate:  # dt' of 95.25 + bias (past softplus's threshold, where exp would overflow) or ~e^-96
        scales = dict(u_scale=0.01, dt_scale=0.75, B_scale=0.01, C_scale=0.005, z_scale=0.1)
    return dict(
        u=codes(b, l, d), dt=codes(b, l, d), A=-(torch.rand(d, n, generator=g) * 8 + 0.05), B=codes(b, l, n),
        C=codes(b, l, n), D=torch.randn(d, generator=g), z=codes(b, l, d),
        dt_bias=torch.randn(d, generator=g) * 0.5 - 1.0,
        ssm_state=torch.randn(b, d, n, generator=g).to(state_dtype),
        gate_smooth=torch.rand(d, generator=g) * 1.9 + 0.1 if smooth else None, scales=scales,
    )  # fmt: skip


def reference(inp, ssm_state=None):
    """fp32 y and fp32 state (the state input read as the kernel reads it: its own dtype, widened)."""
    state = (inp["ssm_state"] if ssm_state is None else ssm_state).float()
    return ref.selective_scan_quant(
        inp["u"], inp["dt"], inp["A"], inp["B"], inp["C"], inp["D"], inp["z"], inp["dt_bias"], state,
        inp["gate_smooth"], **inp["scales"], out_dtype=torch.float32,
    )  # fmt: skip


def run(be, lib, inp, *, out_dtype=torch.float16, ssm_state=None, in_place=False, **override):
    """The kernel on the backend; (y, state_out) on the CPU. ``override`` replaces Params fields."""
    dev = {k: be.tensor(v) for k, v in inp.items() if isinstance(v, torch.Tensor)}
    if ssm_state is not None:
        dev["ssm_state"] = be.tensor(ssm_state)
    b, l, d = inp["u"].shape
    n = inp["A"].shape[1]
    if in_place:  # the backend's copy may be the caller's own tensor (emulated: the same memory)
        dev["ssm_state"] = dev["ssm_state"].clone()
    state = dev["ssm_state"]
    y = be.empty((b, l, d), out_dtype)
    state_out = state if in_place else be.empty(state.shape, state.dtype)
    p = Params(
        **{k: ptr(dev.get(k)) for k in ("u", "dt", "A", "B", "C", "D", "z", "dt_bias", "ssm_state", "gate_smooth")},
        y=ptr(y), ssm_state_out=ptr(state_out), batch=b, seqlen=l, d=d, n=n, **inp["scales"],
        state_dtype=CODES[state.dtype], out_dtype=CODES[out_dtype],
    )  # fmt: skip
    for k, v in override.items():
        setattr(p, k, v)
    err = launch(lib, p)
    be.check(lib, err)
    be.sync()
    return y.cpu(), state_out.cpu()


def check(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """assert_close on tensors divided by the reference's largest magnitude; the normalised max error."""
    key = "kernel.scan.fp16" if actual.dtype == torch.float16 else "kernel.scan.fp32"
    scale = expected.abs().max().clamp_min(1e-30)
    assert_close(actual.float() / scale, expected / scale, key)
    return float((actual.double() - expected.double()).abs().max() / scale)


@pytest.fixture
def lib(backend):  # noqa: F811
    lib = backend.load(SOURCES)
    assert lib.jm_selective_scan_params_size() == ctypes.sizeof(Params)
    if backend.kind == "emu":
        lib.emu_set_mode("forward")
    yield lib
    if backend.kind == "emu":
        lib.emu_set_mode(None)


# (batch, seqlen, d, n). With 16-byte aligned tensors, d a multiple of 16 takes the vector staging;
# prefill blocks hold 64 / (n / 16) channels and chunks of 64 (n 16), 58 (32), 36 (64), 19 (128) steps
SHAPES = [
    (1, 1, 64, 16),  # decode
    (3, 1, 77, 16),  # decode, odd d, batch 3
    (2, 1, 33, 32),
    (1, 1, 20, 64),
    (2, 1, 9, 128),
    (1, 7, 64, 16),  # odd L
    (3, 5, 77, 16),  # odd d across two blocks (64 + 13)
    (2, 150, 70, 16),  # three chunks of 64, 64, 22
    (1, 130, 50, 32),  # three chunks, two lanes per channel
    (2, 45, 40, 64),  # two chunks, four lanes, a tail block of 8 channels
    (1, 30, 12, 128),  # two chunks, eight lanes, d below one block
]


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("state_dtype", [torch.float16, torch.float32], ids=["state16", "state32"])
def test_matches_reference(backend, lib, shape, state_dtype):  # noqa: F811
    """Every combination of state dtype, output dtype and gate (SiLU / S-SiLU) on each shape."""
    for i, (out_dtype, smooth) in enumerate([(torch.float16, False), (torch.float16, True), (torch.float32, False),
                                             (torch.float32, True)]):  # fmt: skip
        inp = make_inputs(*shape, seed=i, state_dtype=state_dtype, smooth=smooth)
        y, state = run(backend, lib, inp, out_dtype=out_dtype)
        y_ref, h_ref = reference(inp)
        assert y.dtype == out_dtype and state.dtype == state_dtype
        check(y, y_ref)
        check(state, h_ref)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("seqlen", [1, 40])
def test_saturating_codes(backend, lib, seqlen):  # noqa: F811
    """Every code -128 or 127: dt' past softplus's threshold (returned as is: exp would overflow) or
    vanishing, so that the state is reset or kept at each step; |g z| up to 25.6 with S-SiLU."""
    for smooth in (False, True):
        inp = make_inputs(2, seqlen, 48, 16, seed=3, smooth=smooth, saturate=True)
        y, state = run(backend, lib, inp)
        y_ref, h_ref = reference(inp)
        check(y, y_ref)
        check(state, h_ref)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("seqlen", [1, 70])
def test_in_place_state(backend, lib, seqlen):  # noqa: F811
    """ssm_state_out == ssm_state: each thread reads its states before writing them."""
    for state_dtype in (torch.float16, torch.float32):
        inp = make_inputs(2, seqlen, 70, 32, seed=5, state_dtype=state_dtype)
        y, state = run(backend, lib, inp, in_place=True)
        y_ref, h_ref = reference(inp)
        check(y, y_ref)
        check(state, h_ref)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("seqlen", [1, 50])
def test_misaligned_tensors_take_the_scalar_paths(backend, lib, seqlen):  # noqa: F811
    """Tensors one element past a 16-byte boundary: the element-wise loads and stores."""
    inp = make_inputs(2, seqlen, 64, 16, seed=6, smooth=True)
    dev = {}
    for k, v in inp.items():
        if isinstance(v, torch.Tensor):  # a view one element into a larger buffer
            buf = backend.tensor(torch.zeros(v.numel() + 1, dtype=v.dtype))
            dev[k] = buf[1:].view(v.shape).copy_(v.to(backend.device))
    y_buf = backend.empty(2 * seqlen * 64 + 1, torch.float16)
    s_buf = backend.empty(2 * 64 * 16 + 1, torch.float16)
    p = Params(
        **{k: ptr(dev.get(k)) for k in ("u", "dt", "A", "B", "C", "D", "z", "dt_bias", "ssm_state", "gate_smooth")},
        y=ptr(y_buf[1:]), ssm_state_out=ptr(s_buf[1:]), batch=2, seqlen=seqlen, d=64, n=16, **inp["scales"],
        state_dtype=FLOAT16, out_dtype=FLOAT16,
    )  # fmt: skip
    backend.check(lib, launch(lib, p))
    backend.sync()
    y_ref, h_ref = reference(inp)
    check(y_buf[1:].cpu().view(2, seqlen, 64), y_ref)
    check(s_buf[1:].cpu().view(2, 64, 16), h_ref)


@pytest.mark.parametrize("backend", ["emu"], indirect=True)
def test_fiber_schedules_agree(backend, lib):  # noqa: F811
    """forward / reverse / random thread orders (a missing barrier or a shuffle race would show as a
    difference): bit-identical results, equal to the reference, for prefill with shuffles and decode."""
    for seqlen, n in ((90, 32), (1, 16)):
        inp = make_inputs(2, seqlen, 45, n, seed=7, smooth=True)
        y_ref, h_ref = reference(inp)
        results = []
        for mode in ("forward", "reverse", "random"):
            lib.emu_set_mode(mode)
            lib.emu_set_seed(11)
            results.append(run(backend, lib, inp))
        for y, state in results:
            check(y, y_ref)
            check(state, h_ref)
            assert torch.equal(y, results[0][0]) and torch.equal(state, results[0][1])


def chain(be, lib, inp, prompt: int):
    """Prefill of the first ``prompt`` steps, then one decode call per step, feeding the state back."""
    l = inp["u"].shape[1]
    seq = ("u", "dt", "B", "C", "z")
    part = lambda a, b: {**inp, **{k: inp[k][:, a:b].contiguous() for k in seq}}  # noqa: E731
    y, state = run(be, lib, part(0, prompt), out_dtype=torch.float32)
    ys = [y]
    for t in range(prompt, l):
        y, state = run(be, lib, part(t, t + 1), out_dtype=torch.float32, ssm_state=state)
        ys.append(y)
    return torch.cat(ys, dim=1), state


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_prefill_then_decode_equals_one_call(backend, lib):  # noqa: F811
    """A prompt of 37 steps, then 12 single-step calls, against one call over all 49 steps.

    fp32 state: the same state to fp32 rounding (measured: identical, or a few ulps on a GPU), y to
    the summation order (decode reduces a channel's states over lanes). fp16 state: every call rounds
    the state once, by at most 2^-11 of its magnitude; the decays are at most 1, so after k calls the
    state is off by at most k 2^-11 max|h|, and y by that times sum|C| |gate| (checked below); the
    chain is also compared with the reference run the same way (rounding at each call)."""
    prompt, l = 37, 49
    calls = l - prompt + 1
    for state_dtype in (torch.float32, torch.float16):
        inp = make_inputs(2, l, 40, 16, seed=8, state_dtype=state_dtype, smooth=True)
        y_chain, h_chain = chain(backend, lib, inp, prompt)
        y_full, h_full = run(backend, lib, inp, out_dtype=torch.float32)
        if state_dtype == torch.float32:
            check(y_chain, y_full)
            check(h_chain, h_full)
            continue
        y_ref_full, h_ref_full = reference(inp)
        hmax = float(h_ref_full.abs().max())
        state_err = float((h_chain.float() - h_full.float()).abs().max())
        # per step: sum_s |C| |z sigmoid(g z)| of the reference's dequantized inputs
        cs, zs = inp["scales"]["C_scale"], inp["scales"]["z_scale"]
        zf = inp["z"].float() * zs
        gate = (zf * torch.sigmoid(inp["gate_smooth"] * zf)).abs()
        c_sum = (inp["C"].float() * cs).abs().sum(-1, keepdim=True)
        y_bound = calls * 2.0**-11 * hmax * c_sum * gate + 1e-6 * y_ref_full.abs().max()
        y_err = (y_chain - y_full).abs()
        y_ratio = float((y_err / y_bound).max())
        print(f"fp16 state, {calls} calls: state {state_err / hmax:.2e} of max|h| (bound {calls * 2.0**-11:.2e}), "
              f"y {y_ratio:.2f} of its bound")  # fmt: skip
        assert state_err <= calls * 2.0**-11 * hmax
        assert (y_err <= y_bound).all()
        # the reference run as the same chain of calls matches to the kernels' usual tolerance
        state = inp["ssm_state"]
        ys = []
        for a, b in [(0, prompt), *((t, t + 1) for t in range(prompt, l))]:
            sl = {**inp, **{k: inp[k][:, a:b] for k in ("u", "dt", "B", "C", "z")}}
            y, h = reference(sl, ssm_state=state)
            state = h.to(torch.float16)
            ys.append(y)
        check(y_chain, torch.cat(ys, dim=1))
        check(h_chain, h.float())


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_bad_arguments_write_nothing(backend, lib):  # noqa: F811
    """Null pointers, an unsupported n, empty or oversized shapes, unknown dtypes, bad scales and a
    partially overlapping state return cudaErrorInvalidValue; y and the state output stay as they were."""
    inp = make_inputs(2, 5, 32, 16, seed=9)
    dev = {k: backend.tensor(v) for k, v in inp.items() if isinstance(v, torch.Tensor)}
    y = backend.empty((2, 5, 32), torch.float16)
    state_out = backend.empty((2, 32, 16), torch.float16)
    state_before = dev["ssm_state"].clone()
    overlap = backend.tensor(torch.zeros(2 * 32 * 16 * 2, dtype=torch.float16))
    cases = [
        dict(u=None), dict(dt=None), dict(A=None), dict(B=None), dict(C=None), dict(D=None), dict(z=None),
        dict(dt_bias=None), dict(ssm_state=None), dict(y=None), dict(ssm_state_out=None),
        dict(n=8), dict(n=24), dict(n=256), dict(n=0), dict(seqlen=0), dict(batch=0), dict(batch=70000), dict(d=0),
        dict(d=-3), dict(state_dtype=2), dict(out_dtype=-1), dict(u_scale=0.0), dict(dt_scale=float("nan")),
        dict(B_scale=float("inf")), dict(C_scale=-1.0), dict(z_scale=0.0),
        dict(ssm_state=ptr(overlap), ssm_state_out=ptr(overlap) + 64),  # 32 halves apart: partial overlap
    ]  # fmt: skip
    for case in cases:
        p = Params(
            **{k: ptr(dev.get(k)) for k in ("u", "dt", "A", "B", "C", "D", "z", "dt_bias", "ssm_state")},
            y=ptr(y), ssm_state_out=ptr(state_out), batch=2, seqlen=5, d=32, n=16, **inp["scales"],
            state_dtype=FLOAT16, out_dtype=FLOAT16,
        )  # fmt: skip
        for k, v in case.items():
            setattr(p, k, v)
        assert launch(lib, p) == INVALID_VALUE, case
    fn = lib.jm_selective_scan
    assert fn(None, None) == INVALID_VALUE
    backend.sync()
    assert torch.isnan(y).all() and torch.isnan(state_out).all()
    assert torch.equal(dev["ssm_state"], state_before)
    assert [n for n in (8, 16, 24, 32, 64, 128, 256) if lib.jm_selective_scan_supports_n(n)] == [16, 32, 64, 128]


# ---------------------------------------------------------------- int8 state (JM_SCAN_INT8)

INT8 = 2
# Kernel vs reference with an int8 state, both from the same dequantized input state. The kernel's
# fp32 h differs from the reference's by its fp32 tolerance (a few 1e-7 of max |h|), so a scale
# (max |h| / 127 of its channel) may differ by that, relative; a code by one where the reference's
# h / scale lies that close to a half-integer tie (measured, emulated: scales within 5.7e-7, 8
# ulps; no code off in 51 264).
INT8_STATE = dict(scale_rel=1e-5, tie=1e-3, min_exact=0.999)


def int8_state(b, d, n, *, seed):
    """Random codes and scales of an int8 state; channel 0 of row 0 all zero (scale 0)."""
    g = torch.Generator().manual_seed(seed + 100)
    codes = torch.randint(-127, 128, (b, d, n), generator=g, dtype=torch.int8)
    scale = torch.rand(b, d, generator=g) * 0.05 + 1e-3
    codes[0, 0], scale[0, 0] = 0, 0.0
    return codes, scale


def run_int8(be, lib, inp, codes, scale, *, out_dtype=torch.float16, in_place=False, **override):
    """The kernel with an int8 state on the backend; (y, codes, scales) on the CPU."""
    dev = {k: be.tensor(v) for k, v in inp.items() if isinstance(v, torch.Tensor) and k != "ssm_state"}
    state, state_scale = be.tensor(codes).clone(), be.tensor(scale).clone()
    b, l, d = inp["u"].shape
    n = inp["A"].shape[1]
    y = be.empty((b, l, d), out_dtype)
    state_out = state if in_place else be.empty(state.shape, torch.int8)
    scale_out = state_scale if in_place else be.empty(state_scale.shape, torch.float32)
    p = Params(
        **{k: ptr(dev.get(k)) for k in ("u", "dt", "A", "B", "C", "D", "z", "dt_bias", "gate_smooth")},
        ssm_state=ptr(state), ssm_state_scale=ptr(state_scale), y=ptr(y), ssm_state_out=ptr(state_out),
        ssm_state_scale_out=ptr(scale_out), batch=b, seqlen=l, d=d, n=n, **inp["scales"], state_dtype=INT8,
        out_dtype=CODES[out_dtype],
    )  # fmt: skip
    for k, v in override.items():
        setattr(p, k, v)
    be.check(lib, launch(lib, p))
    be.sync()
    return y.cpu(), state_out.cpu(), scale_out.cpu()


def reference_int8(inp, codes, scale):
    """fp32 y, the fp32 final state and its int8 codes and scales."""
    y, h = reference(inp, ssm_state=ref.dequantize_ssm_state(codes, scale))
    return y, h, *ref.quantize_ssm_state(h)


def check_int8_state(codes, scale, h_ref, codes_ref, scale_ref) -> int:
    """Scales within INT8_STATE["scale_rel"]; codes equal, or one apart at a near-tie of the
    reference; returns how many codes differ."""
    tol = INT8_STATE
    assert scale.dtype == torch.float32 and codes.dtype == torch.int8
    assert torch.equal(scale == 0, scale_ref == 0)  # zero channels: scale 0 and zero codes
    assert (codes[scale == 0] == 0).all()
    assert ((scale - scale_ref).abs() <= tol["scale_rel"] * scale_ref).all(), (scale - scale_ref).abs().max()
    diff = (codes.int() - codes_ref.int()).abs()
    assert diff.max() <= 1
    safe = torch.where(scale_ref > 0, scale_ref, 1.0).unsqueeze(-1)
    frac = (h_ref / safe).abs() % 1.0
    assert ((frac[diff == 1] - 0.5).abs() <= tol["tie"]).all(), "a code one apart away from a rounding tie"
    assert (diff == 0).float().mean() >= tol["min_exact"]
    return int((diff != 0).sum())


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_int8_state_matches_reference(backend, lib, shape):  # noqa: F811
    """An int8 state in and out on every shape (decode, odd L, several chunks, batch > 1, n 16..128),
    fp16 y with S-SiLU and fp32 y with SiLU; channel 0 of row 0 starts at zero and has u = 0, so it
    stays zero: scale 0 and zero codes out."""
    b, _, d, n = shape
    for i, (out_dtype, smooth) in enumerate([(torch.float16, True), (torch.float32, False)]):
        inp = make_inputs(*shape, seed=i, smooth=smooth)
        inp["u"][0, :, 0] = 0
        codes, scale = int8_state(b, d, n, seed=i)
        y, codes_out, scale_out = run_int8(backend, lib, inp, codes, scale, out_dtype=out_dtype)
        y_ref, h_ref, codes_ref, scale_ref = reference_int8(inp, codes, scale)
        assert y.dtype == out_dtype
        check(y, y_ref)
        check_int8_state(codes_out, scale_out, h_ref, codes_ref, scale_ref)
        assert scale_out[0, 0] == 0 and (codes_out[0, 0] == 0).all()


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("seqlen", [1, 70])
def test_int8_state_in_place(backend, lib, seqlen):  # noqa: F811
    """Codes and scales updated in place (ssm_state_out == ssm_state, scale_out == scale): the lanes
    of a channel read its scale before the first lane writes it."""
    inp = make_inputs(2, seqlen, 70, 32, seed=5)
    codes, scale = int8_state(2, 70, 32, seed=5)
    y, codes_out, scale_out = run_int8(backend, lib, inp, codes, scale, in_place=True)
    y_ref, h_ref, codes_ref, scale_ref = reference_int8(inp, codes, scale)
    check(y, y_ref)
    check_int8_state(codes_out, scale_out, h_ref, codes_ref, scale_ref)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_int8_state_chain(backend, lib):  # noqa: F811
    """A 37-step prefill, then 12 decode calls, the int8 state fed back each time.

    Call by call the kernel matches the reference run from the kernel's own input state (as
    test_int8_state_matches_reference). Against one fp32-state call over all 49 steps: each call
    rounds every state to within half a step of its channel, max_s |h| / 254, and the decays are at
    most 1, so after k calls h is off by at most k max|h| / 254 and y by that times
    sum_s |C| |gate| (checked; the measured ratio is printed)."""
    prompt, l, d, n = 37, 49, 40, 16
    calls = l - prompt + 1
    inp = make_inputs(2, l, d, n, seed=8, state_dtype=torch.float32, smooth=True)
    codes, scale = ref.quantize_ssm_state(inp["ssm_state"])
    h0 = ref.dequantize_ssm_state(codes, scale)  # the chain's start, exactly
    seq = ("u", "dt", "B", "C", "z")
    ys = []
    for a, b in [(0, prompt), *((t, t + 1) for t in range(prompt, l))]:
        part = {**inp, **{k: inp[k][:, a:b].contiguous() for k in seq}}
        y, codes_next, scale_next = run_int8(backend, lib, part, codes, scale, out_dtype=torch.float32)
        y_ref, h_ref, codes_ref, scale_ref = reference_int8(part, codes, scale)
        check(y, y_ref)
        check_int8_state(codes_next, scale_next, h_ref, codes_ref, scale_ref)
        ys.append(y)
        codes, scale = codes_next, scale_next
    y_chain = torch.cat(ys, dim=1)
    y_full, h_full = reference({**inp, "ssm_state": h0})
    hmax = float(h_full.abs().max())
    state_err = float((ref.dequantize_ssm_state(codes, scale) - h_full).abs().max())
    cs, zs = inp["scales"]["C_scale"], inp["scales"]["z_scale"]
    zf = inp["z"].float() * zs
    gate = (zf * torch.sigmoid(inp["gate_smooth"] * zf)).abs()
    c_sum = (inp["C"].float() * cs).abs().sum(-1, keepdim=True)
    # the chain's first call starts from the same quantized state as y_full: no rounding before it
    y_bound = (calls - 1) * hmax / 254 * c_sum * gate + 1e-5 * y_full.abs().max()
    y_err = (y_chain - y_full).abs()
    print(f"int8 state, {calls} calls: state {state_err / hmax:.2e} of max|h| (bound {calls / 254:.2e}), "
          f"y {float((y_err / y_bound).max()):.2f} of its bound")  # fmt: skip
    assert state_err <= calls * hmax / 254
    assert (y_err <= y_bound).all()


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_int8_state_bad_arguments_write_nothing(backend, lib):  # noqa: F811
    """An int8 state without either scale pointer, an fp state with one, and partially overlapping
    scale buffers return cudaErrorInvalidValue; y, the codes and the scales stay as they were."""
    inp = make_inputs(2, 5, 32, 16, seed=9)
    dev = {k: backend.tensor(v) for k, v in inp.items() if isinstance(v, torch.Tensor) and k != "ssm_state"}
    codes, scale = (backend.tensor(t) for t in int8_state(2, 32, 16, seed=9))
    y = backend.empty((2, 5, 32), torch.float16)
    codes_out = backend.tensor(torch.full((2, 32, 16), 7, dtype=torch.int8))
    scale_out = backend.empty((2, 32), torch.float32)
    overlap = backend.tensor(torch.zeros(2 * 32 * 2, dtype=torch.float32))
    fp_state = backend.tensor(inp["ssm_state"])
    cases = [
        dict(ssm_state_scale=None), dict(ssm_state_scale_out=None),
        dict(ssm_state_scale=None, ssm_state_scale_out=None),
        dict(state_dtype=FLOAT16, ssm_state=ptr(fp_state)),  # an fp state with scale pointers
        dict(ssm_state_scale=ptr(overlap), ssm_state_scale_out=ptr(overlap) + 8),
    ]  # fmt: skip
    for case in cases:
        p = Params(
            **{k: ptr(dev.get(k)) for k in ("u", "dt", "A", "B", "C", "D", "z", "dt_bias")},
            ssm_state=ptr(codes), ssm_state_scale=ptr(scale), y=ptr(y), ssm_state_out=ptr(codes_out),
            ssm_state_scale_out=ptr(scale_out), batch=2, seqlen=5, d=32, n=16, **inp["scales"], state_dtype=INT8,
            out_dtype=FLOAT16,
        )  # fmt: skip
        for k, v in case.items():
            setattr(p, k, v)
        assert launch(lib, p) == INVALID_VALUE, case
    backend.sync()
    assert torch.isnan(y).all() and torch.isnan(scale_out).all() and (codes_out == 7).all()


@pytest.mark.nvcc
def test_compiles_without_spills():
    """nvcc for sm_87 (Orin) and, where the toolkit knows it, sm_110 (Thor): every instantiation
    without register spills or stack; ptxas's figures are printed (pytest -s)."""
    from jetmamba.plugins import emulation, nvcc

    if emulation.find_nvcc() is None:
        pytest.skip("nvcc is not installed (CUDA toolkit): the compile check needs it")
    archs = subprocess.run([emulation.find_nvcc(), "--list-gpu-arch"], capture_output=True, text=True).stdout
    for arch in ("sm_87", "sm_110") if "compute_110" in archs else ("sm_87",):
        kernels, report = nvcc.compile_report(nvcc.PLUGINS_DIR / SOURCES[0], arch)
        assert len(kernels) == 12 and "warning" not in report.lower(), report
        for k in kernels:
            print(f"{arch} {k.function}: {k.registers} registers, {k.spill_stores}/{k.spill_loads} bytes spilled")
            assert k.spill_stores == k.spill_loads == k.stack_bytes == 0, k
