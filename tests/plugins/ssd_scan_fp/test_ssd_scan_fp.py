"""jetmamba::SSDScanFp's CUDA kernels (plugins/ssd_scan_fp) against the op reference.

The kernels are SSDScan's templates with fp16 / fp32 inputs (y in the inputs' dtype, no scales);
the same test bodies run them emulated on the CPU and, where there is a GPU, on the GPU. Outputs are
compared with ``reference.ssd_scan_fp`` computed in fp32 (the inputs widened, so y and the state come
back unrounded), each tensor divided by its largest reference magnitude ("kernel.scan.fp16" /
"kernel.scan.fp32" in tolerances.py, by the dtype the kernel writes).
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
SOURCES = ["ssd_scan_fp/ssd_scan_fp.cu"]
TENSORS = ("x", "dt", "A", "B", "C", "D", "dt_bias", "ssm_state")
SEQ = ("x", "dt", "B", "C")
INF = float("inf")


class Params(ctypes.Structure):
    _fields_ = [
        *((name, VP) for name in (*TENSORS, "y", "ssm_state_out")),
        *((name, I32) for name in ("batch", "seqlen", "heads", "head_dim", "groups", "d_state")),
        ("dt_min", F32),
        ("dt_max", F32),
        ("dtype", I32),
        ("state_dtype", I32),
    ]


def launch(lib, p: Params) -> int:
    fn = lib.jm_ssd_scan_fp
    fn.argtypes = [ctypes.POINTER(Params), VP]
    fn.restype = ctypes.c_int
    return fn(ctypes.byref(p), None)


def ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def make_inputs(b, l, H, P, G, N, *, seed=0, dtype=torch.float16, state_dtype=torch.float16, large=False,
                dt_min=0.0, dt_max=INF):  # fmt: skip
    """Unit-scale inputs in ``dtype`` (as tests/support/scan_inputs.ssd_inputs), dt before its bias;
    ``large``: dt far past softplus's threshold or far below zero (the state is reset or kept), x
    scaled down so that y stays inside fp16's range."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    x, dt = r(b, l, H * P), r(b, l, H)
    if large:
        dt = dt + torch.where(torch.rand(b, l, H, generator=g) < 0.5, 40.0, -40.0)
        x = x * 0.05
    return dict(
        x=x.to(dtype), dt=dt.to(dtype), A=-(torch.rand(H, generator=g) * 15 + 1), B=r(b, l, G, N).to(dtype),
        C=r(b, l, G, N).to(dtype), D=r(H), dt_bias=r(H) * 0.5 - 1.5, ssm_state=r(b, H, P, N).to(state_dtype),
        heads=H, dt_min=dt_min, dt_max=dt_max,
    )  # fmt: skip


def reference(inp, ssm_state=None):
    """fp32 y and fp32 state: the reference on the inputs widened to fp32 (its maths are fp32 anyway)."""
    state = (inp["ssm_state"] if ssm_state is None else ssm_state).float()
    f = {k: inp[k].float() for k in SEQ}
    return ref.ssd_scan_fp(
        f["x"], f["dt"], inp["A"], f["B"], f["C"], inp["D"], inp["dt_bias"], state, heads=inp["heads"],
        dt_min=inp["dt_min"], dt_max=inp["dt_max"],
    )  # fmt: skip


def make_params(inp, dev, out, state_out, /, **override) -> Params:
    b, l, channels = inp["x"].shape
    H = inp["heads"]
    G, N = inp["B"].shape[2:]
    p = Params(
        **{k: ptr(dev[k]) for k in TENSORS}, y=ptr(out), ssm_state_out=ptr(state_out), batch=b, seqlen=l, heads=H,
        head_dim=channels // H, groups=G, d_state=N, dt_min=inp["dt_min"], dt_max=inp["dt_max"],
        dtype=CODES[inp["x"].dtype], state_dtype=CODES[dev["ssm_state"].dtype],
    )  # fmt: skip
    for k, v in override.items():
        setattr(p, k, v)
    return p


def run(be, lib, inp, *, ssm_state=None, in_place=False):
    """The kernel on the backend; (y, state_out) on the CPU."""
    dev = {k: be.tensor(inp[k]) for k in TENSORS}
    if ssm_state is not None:
        dev["ssm_state"] = be.tensor(ssm_state)
    if in_place:  # the backend's copy may be the caller's own tensor (emulated: the same memory)
        dev["ssm_state"] = dev["ssm_state"].clone()
    b, l, channels = inp["x"].shape
    H = inp["heads"]
    y = be.empty((b, l, H, channels // H), inp["x"].dtype)
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
    assert lib.jm_ssd_scan_fp_params_size() == ctypes.sizeof(Params)
    if backend.kind == "emu":
        lib.emu_set_mode("forward")
    yield lib
    if backend.kind == "emu":
        lib.emu_set_mode(None)


# (batch, seqlen, H, P, G, N). Prefill blocks are (P / 4) x (N / 8) threads, chunks N / 4 steps.
SHAPES = [
    (1, 1, 4, 16, 1, 16),  # decode
    (2, 1, 6, 32, 3, 32),  # decode, batch 2, three groups
    (1, 1, 2, 64, 2, 128),  # decode, one group per head
    (1, 9, 4, 16, 2, 16),  # odd L: chunks of 4 + 4 + 1
    (2, 19, 4, 16, 4, 16),  # G = H
    (2, 13, 6, 32, 1, 32),  # G = 1, chunks of 8 + 5
    (1, 37, 2, 64, 1, 64),  # chunks of 16 + 16 + 5
    (1, 21, 12, 32, 2, 32),  # the mamba2-tiny fixture's head shape
    (1, 45, 2, 64, 2, 128),  # N = 128: chunks of 32 + 13
    (2, 64, 4, 64, 1, 128),  # a Mamba2 head shape, two whole chunks
    (1, 17, 2, 128, 1, 64),  # P = 128: 256 threads
]
# (dtype, dt_min, dt_max)
VARIANTS = [(torch.float16, 0.0, INF), (torch.float16, 0.0, 0.3), (torch.float32, 0.05, INF), (torch.float32, 0.0, 0.3)]


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("state_dtype", [torch.float16, torch.float32], ids=["state16", "state32"])
def test_matches_reference(backend, lib, shape, state_dtype):  # noqa: F811
    """fp16 and fp32 inputs, finite and infinite dt_max (dt_min > 0 once) on each shape."""
    for i, (dtype, lo, hi) in enumerate(VARIANTS):
        inp = make_inputs(*shape, seed=i, dtype=dtype, state_dtype=state_dtype, dt_min=lo, dt_max=hi)
        y, state = run(backend, lib, inp)
        y_ref, h_ref = reference(inp)
        assert y.dtype == dtype and state.dtype == state_dtype
        check(y, y_ref)
        check(state, h_ref)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("seqlen", [1, 30])
def test_large_dt(backend, lib, seqlen):  # noqa: F811
    """dt' ~40 (past softplus's threshold; exp(dt' A) underflows: the state is reset) or ~e^-40 (kept),
    so that a chunk's log-decays sum to thousands; with dt_max = 2 the clamp limits them."""
    for dtype in (torch.float16, torch.float32):
        for dt_max in (INF, 2.0):
            inp = make_inputs(2, seqlen, 4, 16, 2, 32, seed=3, dtype=dtype, large=True, dt_max=dt_max)
            y, state = run(backend, lib, inp)
            y_ref, h_ref = reference(inp)
            check(y, y_ref)
            check(state, h_ref)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("seqlen", [1, 23])
def test_in_place_state(backend, lib, seqlen):  # noqa: F811
    """ssm_state_out == ssm_state: each thread reads its states before writing them."""
    for state_dtype in (torch.float16, torch.float32):
        inp = make_inputs(2, seqlen, 4, 32, 2, 32, seed=5, state_dtype=state_dtype)
        y, state = run(backend, lib, inp, in_place=True)
        y_ref, h_ref = reference(inp)
        check(y, y_ref)
        check(state, h_ref)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("seqlen", [1, 10])
def test_misaligned_tensors_take_the_scalar_paths(backend, lib, seqlen):  # noqa: F811
    """Tensors one element past an aligned boundary: the element-wise loads and stores."""
    for dtype in (torch.float16, torch.float32):
        inp = make_inputs(2, seqlen, 4, 16, 2, 16, seed=6, dtype=dtype)
        dev = {}
        for k in TENSORS:  # a view one element into a larger buffer
            v = inp[k]
            buf = backend.tensor(torch.zeros(v.numel() + 1, dtype=v.dtype))
            dev[k] = buf[1:].view(v.shape).copy_(v.to(backend.device))
        y_buf = backend.empty(2 * seqlen * 64 + 1, dtype)
        s_buf = backend.empty(2 * 64 * 16 + 1, torch.float16)
        backend.check(lib, launch(lib, make_params(inp, dev, y_buf[1:], s_buf[1:])))
        backend.sync()
        y_ref, h_ref = reference(inp)
        check(y_buf[1:].cpu().view(2, seqlen, 4, 16), y_ref)
        check(s_buf[1:].cpu().view(2, 4, 16, 16), h_ref)


@pytest.mark.parametrize("backend", ["emu"], indirect=True)
def test_fiber_schedules_agree(backend, lib):  # noqa: F811
    """forward / reverse / random thread orders: bit-identical results, equal to the reference."""
    for seqlen, P, N in ((19, 16, 64), (1, 32, 32)):
        inp = make_inputs(2, seqlen, 4, P, 2, N, seed=7, dtype=torch.float32)
        y_ref, h_ref = reference(inp)
        results = []
        for mode in ("forward", "reverse", "random"):
            lib.emu_set_mode(mode)
            lib.emu_set_seed(5)
            results.append(run(backend, lib, inp))
        for y, state in results:
            check(y, y_ref)
            check(state, h_ref)
            assert torch.equal(y, results[0][0]) and torch.equal(state, results[0][1])


def segments(prompt: int, l: int):
    return [(0, prompt), *((t, t + 1) for t in range(prompt, l))]


def chain(be, lib, inp, prompt: int):
    """Prefill of the first ``prompt`` steps, then one decode call per step, feeding the state back."""
    ys, state = [], None
    for a, b in segments(prompt, inp["x"].shape[1]):
        y, state = run(be, lib, {**inp, **{k: inp[k][:, a:b].contiguous() for k in SEQ}}, ssm_state=state)
        ys.append(y)
    return torch.cat(ys, dim=1), state


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_prefill_then_decode_equals_one_call(backend, lib):  # noqa: F811
    """fp32 inputs: a prompt of 29 steps (chunks of 16: 16 + 13), then 10 single-step calls, against
    one call over all 39 steps. fp32 state: the same to fp32 rounding; fp16 state: off by at most
    k 2^-11 max|h| after k calls (see test_ssd_scan.py), y by that times sum_n |C|."""
    prompt, l = 29, 39
    calls = l - prompt + 1
    for state_dtype in (torch.float32, torch.float16):
        inp = make_inputs(1, l, 4, 16, 1, 64, seed=8, dtype=torch.float32, state_dtype=state_dtype)
        y_chain, h_chain = chain(backend, lib, inp, prompt)
        y_full, h_full = run(backend, lib, inp)
        if state_dtype == torch.float32:
            print(f"fp32 state: y {check(y_chain, y_full):.2e}, state {check(h_chain, h_full):.2e} of max")
            continue
        hmax = float(inp["ssm_state"].abs().max())
        state = inp["ssm_state"]
        for a, b in segments(prompt, l):  # the largest state a call hands on
            _, h = reference({**inp, **{k: inp[k][:, a:b] for k in SEQ}}, ssm_state=state)
            state = h.to(torch.float16)
            hmax = max(hmax, float(h.abs().max()))
        state_err = float((h_chain.float() - h_full.float()).abs().max())
        c_sum = inp["C"].float().abs().sum(-1).repeat_interleave(4, dim=2).unsqueeze(-1)  # [b, l, H, 1]
        y_bound = calls * 2.0**-11 * hmax * c_sum + 1e-6 * y_full.abs().max()
        y_err = (y_chain - y_full).abs()
        print(f"fp16 state, {calls} calls: state {state_err / hmax:.2e} of max|h| (bound {calls * 2.0**-11:.2e}), "
              f"y {float((y_err / y_bound).max()):.2f} of its bound")  # fmt: skip
        assert state_err <= calls * 2.0**-11 * hmax
        assert (y_err <= y_bound).all()


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_bad_arguments_write_nothing(backend, lib):  # noqa: F811
    """Null pointers, unsupported N or P, H not a multiple of G, empty or oversized shapes, unknown
    dtypes, bad dt limits and a partially overlapping state return cudaErrorInvalidValue; y and the
    state output stay as they were."""
    inp = make_inputs(2, 5, 4, 16, 2, 16, seed=9)
    dev = {k: backend.tensor(inp[k]) for k in TENSORS}
    y = backend.empty((2, 5, 4, 16), torch.float16)
    state_out = backend.empty((2, 4, 16, 16), torch.float16)
    state_before = dev["ssm_state"].clone()
    overlap = backend.tensor(torch.zeros(2 * 4 * 16 * 16 * 2, dtype=torch.float16))
    cases = [
        *({k: None} for k in (*TENSORS, "y", "ssm_state_out")),
        dict(d_state=8), dict(d_state=48), dict(d_state=256), dict(head_dim=4), dict(head_dim=30),
        dict(head_dim=256), dict(groups=3), dict(groups=0), dict(heads=0), dict(seqlen=0), dict(seqlen=-1),
        dict(batch=0), dict(batch=65536), dict(dtype=2), dict(state_dtype=-1), dict(dt_min=-1e-3),
        dict(dt_min=float("nan")), dict(dt_max=-0.5), dict(dt_max=float("nan")),
        dict(ssm_state=ptr(overlap), ssm_state_out=ptr(overlap) + 2),  # one half apart: partial overlap
    ]  # fmt: skip
    for case in cases:
        assert launch(lib, make_params(inp, dev, y, state_out, **case)) == INVALID_VALUE, case
    assert lib.jm_ssd_scan_fp(None, None) == INVALID_VALUE
    backend.sync()
    assert torch.isnan(y).all() and torch.isnan(state_out).all()
    assert torch.equal(dev["ssm_state"], state_before)


@pytest.mark.nvcc
def test_compiles_without_spills():
    """nvcc for sm_87 (Orin) and, where the toolkit knows it, sm_110 (Thor), and NVRTC + ptxas 12.6
    (JetPack 6.2): every instantiation without register spills or stack (pytest -s prints them)."""
    from jetmamba.plugins import emulation, nvcc, nvrtc

    reports = []
    if emulation.find_nvcc() is not None:
        archs = subprocess.run([emulation.find_nvcc(), "--list-gpu-arch"], capture_output=True, text=True).stdout
        for arch in ("sm_87", "sm_110") if "compute_110" in archs else ("sm_87",):
            kernels, report = nvcc.compile_report(nvcc.PLUGINS_DIR / SOURCES[0], arch)
            assert "warning" not in report.lower(), report
            reports.append(("nvcc", arch, kernels))
    if nvrtc.find_toolchain() is not None:
        reports.append(("nvrtc", "sm_87", nvrtc.compile_report(nvrtc.PLUGINS_DIR / SOURCES[0], "sm_87")[0]))
    if not reports:
        pytest.skip("neither nvcc (CUDA toolkit) nor NVRTC 12.6 is installed: the compile check needs one")
    for tool, arch, kernels in reports:
        assert len(kernels) == 8, (tool, arch, kernels)
        for k in kernels:
            print(f"{tool} {arch} {k.function}: {k.registers} registers, spills {k.spill_stores}/{k.spill_loads} B")
            assert k.spill_stores == k.spill_loads == k.stack_bytes == 0, k
