"""jetmamba::SelectiveScanFp's CUDA kernels (plugins/selective_scan_fp) against the op reference.

The kernels are SelectiveScan's templates with fp16 / fp32 inputs (y in the inputs' dtype, SiLU
gate); the same test bodies run them emulated on the CPU and, where there is a GPU, on the GPU.
Outputs are compared with ``reference.selective_scan_fp`` computed in fp32 (the inputs widened, so y
and the state come back unrounded), each tensor divided by its largest reference magnitude
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

VP, I32 = ctypes.c_void_p, ctypes.c_int32
FLOAT16, FLOAT32 = 0, 1
CODES = {torch.float16: FLOAT16, torch.float32: FLOAT32}
SUCCESS, INVALID_VALUE = 0, 1
SOURCES = ["selective_scan_fp/selective_scan_fp.cu"]
TENSORS = ("u", "dt", "A", "B", "C", "D", "z", "dt_bias", "ssm_state")


class Params(ctypes.Structure):
    _fields_ = [
        *((name, VP) for name in (*TENSORS, "y", "ssm_state_out")),
        *((name, I32) for name in ("batch", "seqlen", "d", "n", "dtype", "state_dtype")),
    ]


def launch(lib, p: Params) -> int:
    fn = lib.jm_selective_scan_fp
    fn.argtypes = [ctypes.POINTER(Params), VP]
    fn.restype = ctypes.c_int
    return fn(ctypes.byref(p), None)


def ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def make_inputs(b, l, d, n, *, seed=0, dtype=torch.float16, state_dtype=torch.float16, large=False):
    """Unit-scale inputs in ``dtype`` (as tests/support/scan_inputs); ``large``: dt far past softplus's
    threshold (where exp overflows) or far below zero, |z| up to ~130 (the gate's exponential overflows
    to inf for z < -88), u scaled down so that y stays inside fp16's range."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    u, dt, z = r(b, l, d), r(b, l, d) - 1.0, r(b, l, d)
    if large:
        dt = torch.where(torch.rand(b, l, d, generator=g) < 0.5, 100.0, -100.0) + dt
        u, z = u * 0.05, z * 40
    return dict(
        u=u.to(dtype), dt=dt.to(dtype), A=-(torch.rand(d, n, generator=g) * 8 + 0.05), B=r(b, l, n).to(dtype),
        C=r(b, l, n).to(dtype), D=r(d), z=z.to(dtype), dt_bias=r(d) * 0.5, ssm_state=r(b, d, n).to(state_dtype),
    )  # fmt: skip


def reference(inp, ssm_state=None):
    """fp32 y and fp32 state: the reference on the inputs widened to fp32 (its maths are fp32 anyway)."""
    state = (inp["ssm_state"] if ssm_state is None else ssm_state).float()
    f = {k: inp[k].float() for k in ("u", "dt", "B", "C", "z")}
    return ref.selective_scan_fp(f["u"], f["dt"], inp["A"], f["B"], f["C"], inp["D"], f["z"], inp["dt_bias"], state)


def run(be, lib, inp, *, ssm_state=None, in_place=False):
    """The kernel on the backend; (y, state_out) on the CPU."""
    dev = {k: be.tensor(inp[k]) for k in TENSORS}
    if ssm_state is not None:
        dev["ssm_state"] = be.tensor(ssm_state)
    b, l, d = inp["u"].shape
    n = inp["A"].shape[1]
    if in_place:  # the backend's copy may be the caller's own tensor (emulated: the same memory)
        dev["ssm_state"] = dev["ssm_state"].clone()
    state = dev["ssm_state"]
    y = be.empty((b, l, d), inp["u"].dtype)
    state_out = state if in_place else be.empty(state.shape, state.dtype)
    p = Params(
        **{k: ptr(dev[k]) for k in TENSORS}, y=ptr(y), ssm_state_out=ptr(state_out), batch=b, seqlen=l, d=d, n=n,
        dtype=CODES[inp["u"].dtype], state_dtype=CODES[state.dtype],
    )  # fmt: skip
    be.check(lib, launch(lib, p))
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
    assert lib.jm_selective_scan_fp_params_size() == ctypes.sizeof(Params)
    if backend.kind == "emu":
        lib.emu_set_mode("forward")
    yield lib
    if backend.kind == "emu":
        lib.emu_set_mode(None)


# (batch, seqlen, d, n). Prefill chunks: fp16 inputs 40 (n 16), 45 (32), 33 (64), 19 (128) steps; fp32
# inputs 22, 32, 29, 18. With 16-byte aligned tensors, d a multiple of 8 (fp16) / 4 (fp32) takes the
# vector staging
SHAPES = [
    (1, 1, 64, 16),  # decode
    (3, 1, 77, 16),  # decode, odd d, batch 3
    (2, 1, 33, 32),
    (1, 1, 20, 64),
    (2, 1, 9, 128),
    (1, 7, 64, 16),  # odd L
    (3, 5, 77, 16),  # odd d across two blocks (64 + 13)
    (2, 90, 70, 16),  # three chunks (fp32: five)
    (1, 70, 50, 32),  # two (three) chunks, two lanes per channel
    (2, 45, 40, 64),  # two chunks, four lanes, a tail block of 8 channels
    (1, 30, 12, 128),  # two chunks, eight lanes, d below one block
]


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("state_dtype", [torch.float16, torch.float32], ids=["state16", "state32"])
def test_matches_reference(backend, lib, shape, state_dtype):  # noqa: F811
    """fp16 and fp32 inputs (and y) with either state dtype on each shape."""
    for i, dtype in enumerate((torch.float16, torch.float32)):
        inp = make_inputs(*shape, seed=i, dtype=dtype, state_dtype=state_dtype)
        y, state = run(backend, lib, inp)
        y_ref, h_ref = reference(inp)
        assert y.dtype == dtype and state.dtype == state_dtype
        check(y, y_ref)
        check(state, h_ref)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("seqlen", [1, 30])
def test_large_inputs(backend, lib, seqlen):  # noqa: F811
    """dt' past softplus's threshold (returned as is: exp would overflow) or vanishing; gate
    exponentials overflowing to inf (y a signed zero there, as the reference's)."""
    for dtype in (torch.float16, torch.float32):
        inp = make_inputs(2, seqlen, 48, 16, seed=3, dtype=dtype, large=True)
        y, state = run(backend, lib, inp)
        y_ref, h_ref = reference(inp)
        check(y, y_ref)
        check(state, h_ref)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("seqlen", [1, 50])
def test_in_place_state(backend, lib, seqlen):  # noqa: F811
    """ssm_state_out == ssm_state: each thread reads its states before writing them."""
    for state_dtype in (torch.float16, torch.float32):
        inp = make_inputs(2, seqlen, 70, 64, seed=5, state_dtype=state_dtype)
        y, state = run(backend, lib, inp, in_place=True)
        y_ref, h_ref = reference(inp)
        check(y, y_ref)
        check(state, h_ref)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("seqlen", [1, 50])
def test_misaligned_tensors_take_the_scalar_paths(backend, lib, seqlen):  # noqa: F811
    """Tensors one element past a 16-byte boundary: the element-wise loads and stores."""
    inp = make_inputs(2, seqlen, 64, 16, seed=6, dtype=torch.float32, state_dtype=torch.float32)
    dev = {}
    for k in TENSORS:  # a view one element into a larger buffer
        buf = backend.tensor(torch.zeros(inp[k].numel() + 1, dtype=inp[k].dtype))
        dev[k] = buf[1:].view(inp[k].shape).copy_(inp[k].to(backend.device))
    y_buf = backend.empty(2 * seqlen * 64 + 1, torch.float32)
    s_buf = backend.empty(2 * 64 * 16 + 1, torch.float32)
    p = Params(
        **{k: ptr(dev[k]) for k in TENSORS}, y=ptr(y_buf[1:]), ssm_state_out=ptr(s_buf[1:]), batch=2, seqlen=seqlen,
        d=64, n=16, dtype=FLOAT32, state_dtype=FLOAT32,
    )  # fmt: skip
    backend.check(lib, launch(lib, p))
    backend.sync()
    y_ref, h_ref = reference(inp)
    check(y_buf[1:].cpu().view(2, seqlen, 64), y_ref)
    check(s_buf[1:].cpu().view(2, 64, 16), h_ref)


@pytest.mark.parametrize("backend", ["emu"], indirect=True)
def test_fiber_schedules_agree(backend, lib):  # noqa: F811
    """forward / reverse / random thread orders: bit-identical results, equal to the reference."""
    for seqlen, n in ((60, 64), (1, 32)):
        inp = make_inputs(2, seqlen, 45, n, seed=7)
        y_ref, h_ref = reference(inp)
        results = []
        for mode in ("forward", "reverse", "random"):
            lib.emu_set_mode(mode)
            lib.emu_set_seed(12)
            results.append(run(backend, lib, inp))
        for y, state in results:
            check(y, y_ref)
            check(state, h_ref)
            assert torch.equal(y, results[0][0]) and torch.equal(state, results[0][1])


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_prefill_then_decode_equals_one_call(backend, lib):  # noqa: F811
    """fp32 everything: a prompt of 29 steps then 10 single-step calls equal one call over all 39
    steps to fp32 rounding (the state carried between calls is the kernel's fp32 state itself)."""
    prompt, l = 29, 39
    inp = make_inputs(1, l, 40, 16, seed=8, dtype=torch.float32, state_dtype=torch.float32)
    seq = ("u", "dt", "B", "C", "z")
    y, state = run(backend, lib, {**inp, **{k: inp[k][:, :prompt].contiguous() for k in seq}})
    ys = [y]
    for t in range(prompt, l):
        y, state = run(backend, lib, {**inp, **{k: inp[k][:, t : t + 1].contiguous() for k in seq}}, ssm_state=state)
        ys.append(y)
    y_full, h_full = run(backend, lib, inp)
    check(torch.cat(ys, dim=1), y_full)
    check(state, h_full)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_bad_arguments_write_nothing(backend, lib):  # noqa: F811
    """Null pointers, an unsupported n, empty shapes, unknown dtypes and a partially overlapping
    state return cudaErrorInvalidValue; y and the state output stay as they were."""
    inp = make_inputs(2, 5, 32, 16, seed=9)
    dev = {k: backend.tensor(inp[k]) for k in TENSORS}
    y = backend.empty((2, 5, 32), torch.float16)
    state_out = backend.empty((2, 32, 16), torch.float16)
    overlap = backend.tensor(torch.zeros(2 * 32 * 16 * 2, dtype=torch.float16))
    cases = [
        *({k: None} for k in (*TENSORS, "y", "ssm_state_out")),
        dict(n=8), dict(n=48), dict(n=256), dict(seqlen=0), dict(batch=0), dict(batch=65536), dict(d=0),
        dict(dtype=2), dict(state_dtype=-1),
        dict(ssm_state=ptr(overlap), ssm_state_out=ptr(overlap) + 2),  # one half apart: partial overlap
    ]  # fmt: skip
    for case in cases:
        p = Params(
            **{k: ptr(dev[k]) for k in TENSORS}, y=ptr(y), ssm_state_out=ptr(state_out), batch=2, seqlen=5, d=32,
            n=16, dtype=FLOAT16, state_dtype=FLOAT16,
        )  # fmt: skip
        for k, v in case.items():
            setattr(p, k, v)
        assert launch(lib, p) == INVALID_VALUE, case
    assert lib.jm_selective_scan_fp(None, None) == INVALID_VALUE
    backend.sync()
    assert torch.isnan(y).all() and torch.isnan(state_out).all()


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
        assert len(kernels) == 8 and "warning" not in report.lower(), report
        for k in kernels:
            print(f"{arch} {k.function}: {k.registers} registers, {k.spill_stores}/{k.spill_loads} bytes spilled")
            assert k.spill_stores == k.spill_loads == k.stack_bytes == 0, k
