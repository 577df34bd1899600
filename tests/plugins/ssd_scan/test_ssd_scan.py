"""jetmamba::SSDScan's CUDA kernels (plugins/ssd_scan) against the op reference.

The same test bodies run the kernels emulated on the CPU and, where there is a GPU, on the GPU.
Outputs are compared with ``reference.ssd_scan_quant`` computed in fp32 (y in fp32, the state from
the same fp32 values before any rounding), each tensor divided by its largest reference magnitude
("kernel.scan.fp16" / "kernel.scan.fp32" in tolerances.py, by the dtype the kernel writes).

The prefill kernel walks chunks of N / 4 steps (4, 8, 16, 32 for N = 16, 32, 64, 128), so the
sequence lengths below cover one partial chunk, whole chunks and ragged tails.
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
SOURCES = ["ssd_scan/ssd_scan.cu"]
TENSORS = ("x", "dt", "A", "B", "C", "D", "dt_bias", "ssm_state", "x_scale", "B_scale", "C_scale")
INF = float("inf")


class Params(ctypes.Structure):
    _fields_ = [
        *((name, VP) for name in (*TENSORS, "y", "ssm_state_out")),
        *((name, I32) for name in ("batch", "seqlen", "heads", "head_dim", "groups", "d_state")),
        *((name, I32) for name in ("x_scale_count", "B_scale_count", "C_scale_count")),
        ("dt_min", F32),
        ("dt_max", F32),
        *((name, I32) for name in ("dt_dtype", "state_dtype", "out_dtype")),
    ]


def launch(lib, p: Params) -> int:
    fn = lib.jm_ssd_scan
    fn.argtypes = [ctypes.POINTER(Params), VP]
    fn.restype = ctypes.c_int
    return fn(ctypes.byref(p), None)


def ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def make_inputs(b, l, H, P, G, N, *, seed=0, state_dtype=torch.float16, dt_dtype=torch.float16, per_channel=False,
                saturate=False, dt_min=0.0, dt_max=INF):  # fmt: skip
    """Random int8 codes (all of them -128 or 127 with ``saturate``), Mamba2-like A (-1 .. -16), D,
    dt_bias; one scale per tensor, or one per channel of x and per group of B and C."""
    g = torch.Generator().manual_seed(seed)

    def codes(*shape):
        if saturate:
            return torch.where(torch.rand(*shape, generator=g) < 0.5, -128, 127).to(torch.int8)
        return torch.randint(-128, 128, shape, generator=g, dtype=torch.int8)

    def scales(count, base):
        return torch.rand(count, generator=g) * base + base / 4 if per_channel else torch.tensor([base])

    dt = torch.randn(b, l, H, generator=g)
    if saturate:  # dt' of ~40 (softplus returns it as is; exp(dt' A) underflows to 0) or ~e^-40
        dt = dt + torch.where(torch.rand(b, l, H, generator=g) < 0.5, 40.0, -40.0)
    return dict(
        x=codes(b, l, H * P), dt=dt.to(dt_dtype), A=-(torch.rand(H, generator=g) * 15 + 1), B=codes(b, l, G, N),
        C=codes(b, l, G, N), D=torch.randn(H, generator=g), dt_bias=torch.randn(H, generator=g) * 0.5 - 1.5,
        ssm_state=torch.randn(b, H, P, N, generator=g).to(state_dtype),
        x_scale=scales(H * P, 1 / 64), B_scale=scales(G, 1 / 64 if not saturate else 1 / 256),
        C_scale=scales(G, 1 / 64 if not saturate else 1 / 256), heads=H, dt_min=dt_min, dt_max=dt_max,
    )  # fmt: skip


def reference(inp, ssm_state=None):
    """fp32 y and fp32 state (the state input read as the kernel reads it: its own dtype, widened)."""
    state = (inp["ssm_state"] if ssm_state is None else ssm_state).float()
    return ref.ssd_scan_quant(
        inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], inp["D"], inp["dt_bias"], state, heads=inp["heads"],
        x_scale=inp["x_scale"], B_scale=inp["B_scale"], C_scale=inp["C_scale"], dt_min=inp["dt_min"],
        dt_max=inp["dt_max"], out_dtype=torch.float32,
    )  # fmt: skip


def make_params(inp, dev, out, state_out, /, **override) -> Params:
    b, l, channels = inp["x"].shape
    H = inp["heads"]
    G, N = inp["B"].shape[2:]
    p = Params(
        **{k: ptr(dev[k]) for k in TENSORS}, y=ptr(out), ssm_state_out=ptr(state_out), batch=b, seqlen=l, heads=H,
        head_dim=channels // H, groups=G, d_state=N, x_scale_count=inp["x_scale"].numel(),
        B_scale_count=inp["B_scale"].numel(), C_scale_count=inp["C_scale"].numel(), dt_min=inp["dt_min"],
        dt_max=inp["dt_max"], dt_dtype=CODES[inp["dt"].dtype], state_dtype=CODES[dev["ssm_state"].dtype],
        out_dtype=CODES[out.dtype],
    )  # fmt: skip
    for k, v in override.items():
        setattr(p, k, v)
    return p


def run(be, lib, inp, *, out_dtype=torch.float16, ssm_state=None, in_place=False):
    """The kernel on the backend; (y, state_out) on the CPU."""
    dev = {k: be.tensor(inp[k]) for k in TENSORS}
    if ssm_state is not None:
        dev["ssm_state"] = be.tensor(ssm_state)
    if in_place:  # the backend's copy may be the caller's own tensor (emulated: the same memory)
        dev["ssm_state"] = dev["ssm_state"].clone()
    b, l, channels = inp["x"].shape
    H = inp["heads"]
    y = be.empty((b, l, H, channels // H), out_dtype)
    state = dev["ssm_state"]
    state_out = state if in_place else be.empty(state.shape, state.dtype)
    be.check(lib, launch(lib, make_params(inp, dev, y, state_out)))
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
    assert lib.jm_ssd_scan_params_size() == ctypes.sizeof(Params)
    if backend.kind == "emu":
        lib.emu_set_mode("forward")
    yield lib
    if backend.kind == "emu":
        lib.emu_set_mode(None)


# (batch, seqlen, H, P, G, N). Prefill blocks are (P / 4) x (N / 8) threads, chunks N / 4 steps.
SHAPES = [
    (1, 1, 4, 16, 1, 16),  # decode
    (2, 1, 6, 32, 2, 32),  # decode, batch 2, two groups
    (1, 1, 3, 64, 3, 128),  # decode, one group per head, 16 lanes per row
    (2, 1, 5, 24, 1, 64),  # decode, P = 24: rows straddle blocks
    (1, 7, 4, 16, 2, 16),  # odd L: chunks of 4 + 3
    (2, 19, 4, 16, 4, 16),  # G = H, five chunks
    (2, 13, 6, 32, 2, 32),  # chunks of 8 + 5
    (1, 37, 2, 64, 1, 64),  # chunks of 16 + 16 + 5, 128 threads
    (1, 21, 12, 32, 2, 32),  # the mamba2-tiny fixture's head shape (d_inner 384 = 12 x 32, 2 groups, N 32)
    (1, 11, 3, 24, 3, 16),  # P = 24: 6 x 2 threads, partial warps
    (1, 70, 2, 64, 1, 128),  # N = 128: chunks of 32 + 32 + 6, 256 threads, 79 KB of shared memory
    (1, 32, 3, 64, 1, 128),  # exactly one chunk
    (2, 65, 8, 64, 2, 128),  # a Mamba2 head shape, two chunks and one step, two groups
    (1, 40, 2, 16, 1, 128),  # P = 16, N = 128: 64 threads, 48 KB (past the default 48 KB)
    (1, 3, 1, 128, 1, 128),  # P = 128, N = 128: 512 threads, 120 KB, one partial chunk
]
# (out dtype, dt dtype, per-channel / per-group scales, dt_min, dt_max)
VARIANTS = [
    (torch.float16, torch.float16, False, 0.0, INF),
    (torch.float16, torch.float32, True, 0.0, 0.3),
    (torch.float32, torch.float16, True, 0.05, INF),
    (torch.float32, torch.float32, False, 0.0, INF),
]


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("state_dtype", [torch.float16, torch.float32], ids=["state16", "state32"])
def test_matches_reference(backend, lib, shape, state_dtype):  # noqa: F811
    """Every output dtype, dt dtype, per-tensor and per-channel / per-group scales, finite and
    infinite dt_max (dt_min > 0 once) on each shape."""
    for i, (out_dtype, dt_dtype, per_channel, lo, hi) in enumerate(VARIANTS):
        inp = make_inputs(*shape, seed=i, state_dtype=state_dtype, dt_dtype=dt_dtype, per_channel=per_channel,
                          dt_min=lo, dt_max=hi)  # fmt: skip
        y, state = run(backend, lib, inp, out_dtype=out_dtype)
        y_ref, h_ref = reference(inp)
        assert y.dtype == out_dtype and state.dtype == state_dtype
        check(y, y_ref)
        check(state, h_ref)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_long_sequence(backend, lib):  # noqa: F811
    """512 steps of a Mamba2 head shape (16 chunks of 32): the state passed from chunk to chunk does
    not drift from the step-by-step reference (fp32 state and y)."""
    inp = make_inputs(1, 512, 4, 64, 1, 128, seed=4, state_dtype=torch.float32, dt_dtype=torch.float32,
                      per_channel=True)  # fmt: skip
    y, state = run(backend, lib, inp, out_dtype=torch.float32)
    y_ref, h_ref = reference(inp)
    check(y, y_ref)
    check(state, h_ref)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("seqlen", [1, 30])
def test_saturating_codes(backend, lib, seqlen):  # noqa: F811
    """Every code -128 or 127 and dt' ~40 or ~e^-40: the state is reset (exp(dt' A) underflows) or
    kept at each step, so a chunk's log-decays sum to thousands; with dt_max = 2 the clamp limits it."""
    for dt_max in (INF, 2.0):
        inp = make_inputs(2, seqlen, 4, 16, 2, 32, seed=3, saturate=True, per_channel=True, dt_max=dt_max)
        y, state = run(backend, lib, inp, out_dtype=torch.float32)
        y_ref, h_ref = reference(inp)
        check(y, y_ref)
        check(state, h_ref.float())


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("seqlen", [1, 23])
def test_in_place_state(backend, lib, seqlen):  # noqa: F811
    """ssm_state_out == ssm_state: each thread reads its states before writing them."""
    for state_dtype in (torch.float16, torch.float32):
        inp = make_inputs(2, seqlen, 4, 32, 2, 32, seed=5, state_dtype=state_dtype, per_channel=True)
        y, state = run(backend, lib, inp, in_place=True)
        y_ref, h_ref = reference(inp)
        check(y, y_ref)
        check(state, h_ref)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("seqlen", [1, 10])
def test_misaligned_tensors_take_the_scalar_paths(backend, lib, seqlen):  # noqa: F811
    """Tensors one element past an aligned boundary: the element-wise loads and stores."""
    inp = make_inputs(2, seqlen, 4, 16, 2, 16, seed=6, per_channel=True)
    dev = {}
    for k in TENSORS:  # a view one element into a larger buffer
        v = inp[k]
        buf = backend.tensor(torch.zeros(v.numel() + 1, dtype=v.dtype))
        dev[k] = buf[1:].view(v.shape).copy_(v.to(backend.device))
    y_buf = backend.empty(2 * seqlen * 64 + 1, torch.float16)
    s_buf = backend.empty(2 * 64 * 16 + 1, torch.float16)
    p = make_params(inp, dev, y_buf[1:], s_buf[1:])
    backend.check(lib, launch(lib, p))
    backend.sync()
    y_ref, h_ref = reference(inp)
    check(y_buf[1:].cpu().view(2, seqlen, 4, 16), y_ref)
    check(s_buf[1:].cpu().view(2, 4, 16, 16), h_ref)


@pytest.mark.parametrize("backend", ["emu"], indirect=True)
def test_fiber_schedules_agree(backend, lib):  # noqa: F811
    """forward / reverse / random thread orders (a missing barrier or a shuffle race would show as a
    difference): bit-identical results, equal to the reference, for prefill and decode."""
    for seqlen, P, N in ((21, 32, 32), (1, 16, 64)):
        inp = make_inputs(2, seqlen, 4, P, 2, N, seed=7, per_channel=True)
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


SEQ = ("x", "dt", "B", "C")


def segments(prompt: int, l: int):
    return [(0, prompt), *((t, t + 1) for t in range(prompt, l))]


def chain(be, lib, inp, prompt: int):
    """Prefill of the first ``prompt`` steps, then one decode call per step, feeding the state back."""
    ys, state = [], None
    for a, b in segments(prompt, inp["x"].shape[1]):
        part = {**inp, **{k: inp[k][:, a:b].contiguous() for k in SEQ}}
        y, state = run(be, lib, part, out_dtype=torch.float32, ssm_state=state)
        ys.append(y)
    return torch.cat(ys, dim=1), state


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_prefill_then_decode_equals_one_call(backend, lib):  # noqa: F811
    """A prompt of 37 steps (chunks of 8: 8 + 8 + 8 + 8 + 5), then 12 single-step calls, against one
    call over all 49 steps.

    fp32 state: the same state and y to fp32 rounding (the chunked and the step-by-step forms add in
    different orders). fp16 state: every call rounds the state once, by at most 2^-11 of its
    magnitude; the decays are at most 1, so after k calls the state is off by at most k 2^-11 max|h|
    (max over the states the calls hand on), and y by that times sum_n |C| (checked below); the
    chain is also compared with the reference run the same way (rounding at each call)."""
    prompt, l = 37, 49
    calls = l - prompt + 1
    for state_dtype in (torch.float32, torch.float16):
        inp = make_inputs(2, l, 4, 16, 2, 32, seed=8, state_dtype=state_dtype, per_channel=True)
        y_chain, h_chain = chain(backend, lib, inp, prompt)
        y_full, h_full = run(backend, lib, inp, out_dtype=torch.float32)
        if state_dtype == torch.float32:
            print(f"fp32 state: y {check(y_chain, y_full):.2e}, state {check(h_chain, h_full):.2e} of max")
            continue
        # the reference as the same chain of calls (rounding the state to fp16 at each call)
        state, ys, hmax = inp["ssm_state"], [], float(inp["ssm_state"].abs().max())
        for a, b in segments(prompt, l):
            y, h = reference({**inp, **{k: inp[k][:, a:b] for k in SEQ}}, ssm_state=state)
            state = h.to(torch.float16)
            hmax = max(hmax, float(h.abs().max()))
            ys.append(y)
        check(y_chain, torch.cat(ys, dim=1))
        check(h_chain, h.float())
        # the fp16-state chain against the one-call result
        y_ref_full, _ = reference(inp)
        state_err = float((h_chain.float() - h_full.float()).abs().max())
        c = inp["C"].float() * inp["C_scale"].view(1, 1, -1, 1)
        c_sum = c.abs().sum(-1).repeat_interleave(2, dim=2).unsqueeze(-1)  # [b, l, H, 1]: 2 heads per group
        y_bound = calls * 2.0**-11 * hmax * c_sum + 1e-6 * y_ref_full.abs().max()
        y_err = (y_chain - y_full).abs()
        print(f"fp16 state, {calls} calls: state {state_err / hmax:.2e} of max|h| (bound {calls * 2.0**-11:.2e}), "
              f"y {float((y_err / y_bound).max()):.2f} of its bound")  # fmt: skip
        assert state_err <= calls * 2.0**-11 * hmax
        assert (y_err <= y_bound).all()


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_bad_arguments_write_nothing(backend, lib):  # noqa: F811
    """Null pointers, unsupported N or P, H not a multiple of G, empty or oversized shapes, unknown
    dtypes, wrong scale counts, bad dt limits and a partially overlapping state return
    cudaErrorInvalidValue; y and the state output stay as they were."""
    inp = make_inputs(2, 5, 4, 16, 2, 16, seed=9, per_channel=True)
    dev = {k: backend.tensor(inp[k]) for k in TENSORS}
    y = backend.empty((2, 5, 4, 16), torch.float16)
    state_out = backend.empty((2, 4, 16, 16), torch.float16)
    state_before = dev["ssm_state"].clone()
    overlap = backend.tensor(torch.zeros(2 * 4 * 16 * 16 * 2, dtype=torch.float16))
    cases = [
        *({k: None} for k in (*TENSORS, "y", "ssm_state_out")),
        dict(d_state=8), dict(d_state=24), dict(d_state=256), dict(d_state=0), dict(head_dim=8), dict(head_dim=18),
        dict(head_dim=132), dict(head_dim=0), dict(groups=3), dict(groups=0), dict(heads=0), dict(heads=-4),
        dict(seqlen=0), dict(batch=0), dict(batch=70000), dict(dt_dtype=2), dict(state_dtype=-1), dict(out_dtype=5),
        dict(x_scale_count=0), dict(x_scale_count=16), dict(B_scale_count=4), dict(C_scale_count=0),
        dict(dt_min=-0.1), dict(dt_min=float("nan")), dict(dt_min=INF), dict(dt_max=-1.0), dict(dt_max=float("nan")),
        dict(ssm_state=ptr(overlap), ssm_state_out=ptr(overlap) + 64),  # 32 halves apart: partial overlap
    ]  # fmt: skip
    for case in cases:
        assert launch(lib, make_params(inp, dev, y, state_out, **case)) == INVALID_VALUE, case
    fn = lib.jm_ssd_scan
    assert fn(None, None) == INVALID_VALUE
    backend.sync()
    assert torch.isnan(y).all() and torch.isnan(state_out).all()
    assert torch.equal(dev["ssm_state"], state_before)
    assert [n for n in (8, 16, 24, 32, 64, 128, 256) if lib.jm_ssd_scan_supports_d_state(n)] == [16, 32, 64, 128]
    assert [p for p in (8, 12, 16, 18, 24, 64, 128, 132) if lib.jm_ssd_scan_supports_head_dim(p)] == [16, 24, 64, 128]


def compile_reports():
    """(toolchain, arch, kernels) for nvcc sm_87 / sm_110 and NVRTC 12.6 sm_87, where installed."""
    from jetmamba.plugins import emulation, nvcc, nvrtc

    out = []
    if emulation.find_nvcc() is not None:
        archs = subprocess.run([emulation.find_nvcc(), "--list-gpu-arch"], capture_output=True, text=True).stdout
        for arch in ("sm_87", "sm_110") if "compute_110" in archs else ("sm_87",):
            kernels, report = nvcc.compile_report(nvcc.PLUGINS_DIR / SOURCES[0], arch)
            assert "warning" not in report.lower(), report
            out.append(("nvcc", arch, kernels))
    if nvrtc.find_toolchain() is not None:
        out.append(("nvrtc", "sm_87", nvrtc.compile_report(nvrtc.PLUGINS_DIR / SOURCES[0], "sm_87")[0]))
    return out


@pytest.mark.nvcc
def test_compiles_without_spills():
    """nvcc for sm_87 (Orin) and, where the toolkit knows it, sm_110 (Thor), and NVRTC + ptxas 12.6
    (JetPack 6.2): every instantiation without register spills or stack; ptxas's figures are
    printed (pytest -s)."""
    reports = compile_reports()
    if not reports:
        pytest.skip("neither nvcc (CUDA toolkit) nor NVRTC 12.6 is installed: the compile check needs one")
    for tool, arch, kernels in reports:
        assert len(kernels) == 8, (tool, arch, kernels)
        for k in kernels:
            print(f"{tool} {arch} {k.function}: {k.registers} registers, spills {k.spill_stores}/{k.spill_loads} B")
            assert k.spill_stores == k.spill_loads == k.stack_bytes == 0, k
