"""``jetmamba bench --kernels``: time each kernel's launcher and its achieved memory bandwidth.

Decode is memory-bound, so a kernel is judged by the bytes it must move (its minimum: every input
read once, every output written once) over its time, against the GPU's peak DRAM bandwidth. The
cases are one decode step (and one prefill chunk) of a real layer shape: Mamba-2.8B for the
Mamba1 ops, Mamba2-2.7B for SSDScan. On the GPU (``backend="gpu"``) each case is timed with CUDA
events over ``repeats`` launches after a warm-up; ``backend="emu"`` runs the same launchers on the
CPU emulator with small shapes (``shapes="tiny"``): a smoke test of the benchmark, not a timing.

The ctypes layouts of the params structs mirror the launchers' headers; where a header exports
``jm_<op>_params_size()``, the layout is checked against it before any call.
"""

from __future__ import annotations

import ctypes
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from jetmamba.errors import UsageError
from jetmamba.plugins.emulation import PLUGINS_DIR
from jetmamba.plugins.torch_ops import (
    CausalConv1dParams,
    HadamardQuantParams,
    RmsNormQuantParams,
    SelectiveScanParams,
    SsdScanParams,
    W4A8LinearParams,
    W4A16LinearParams,
)

VP, I32, I64, F32 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_float
FP32, FP16 = 0, 1  # the norm, conv and Hadamard launchers number dtypes as TensorRT does
SCAN_FP16, SCAN_FP32 = 0, 1  # the scan launchers number them fp16 first

# peak DRAM bandwidth by device name, GB/s (vendor datasheets), where torch cannot tell
PEAK_GBS = {"H100 80GB HBM3": 3350.0, "H100 PCIe": 2039.0, "H100 NVL": 3900.0, "H200": 4800.0, "A100-SXM4-80GB": 2039.0,
            "A100-SXM4-40GB": 1555.0, "A100-PCIE-40GB": 1555.0, "Orin": 102.4, "Thor": 273.0}  # fmt: skip


@dataclass(frozen=True)
class Case:
    kernel: str  # plugins folder
    name: str  # what the shape is
    sources: tuple[str, ...]
    setup: Callable  # (device, shapes) -> (launcher name, params struct, kept tensors, bytes moved)


@dataclass
class Result:
    kernel: str
    case: str
    bytes: int
    median_us: float
    gbs: float
    fraction_of_peak: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def _i8(shape, device):
    return torch.randint(-128, 128, shape, dtype=torch.int8, device=device)


def _f(shape, dtype, device, scale=1.0):
    return (torch.randn(shape, device=device) * scale).to(dtype)


def _p(t):
    return None if t is None else t.data_ptr()


# Layer shapes (decode: batch 1, one token; prefill: one chunk of tokens)
SHAPES = {
    "real": {"d_model": 2560, "d_inner": 5120, "d_state": 16, "k": 4, "prefill": 512,
             "heads": 80, "head_dim": 64, "groups": 1, "ssd_state": 128},
    "tiny": {"d_model": 64, "d_inner": 128, "d_state": 16, "k": 4, "prefill": 8,
             "heads": 4, "head_dim": 16, "groups": 1, "ssd_state": 16},
}  # fmt: skip


def _rms_norm_quant(device, s, tokens):
    d = s["d_model"]
    x, r = _f((tokens, d), torch.float16, device), _f((tokens, d), torch.float16, device)
    w = _f((d,), torch.float16, device)
    y, ro = torch.empty((tokens, d), dtype=torch.int8, device=device), torch.empty_like(x)
    p = RmsNormQuantParams(_p(x), _p(r), _p(w), _p(y), _p(ro), tokens, d, FP16, FP16, 1e-5, 0.05)
    return "jm_rms_norm_quant", p, (x, r, w, y, ro), tokens * d * 7 + 2 * d  # x, r, ro fp16 + y int8, + weight


def _causal_conv1d(device, s, tokens):
    c, k = s["d_inner"], s["k"]
    x, w, st = _i8((1, tokens, c), device), _i8((c, k), device), _i8((1, k - 1, c), device)
    b = _f((c,), torch.float32, device)
    y, so = torch.empty_like(x), torch.empty_like(st)
    scales = [torch.full((1,), v, device=device) for v in (0.02, 0.01, 0.05)]
    p = CausalConv1dParams(_p(x), _p(w), _p(b), _p(st), _p(y), _p(so), *(_p(t) for t in scales), 1, 1, 1, 1, tokens,
                           c, k, 0)  # fmt: skip
    return "jm_causal_conv1d", p, (x, w, b, st, y, so, *scales), 2 * tokens * c + 2 * (k - 1) * c + k * c + 4 * c


def _selective_scan(device, s, tokens):
    d, n = s["d_inner"], s["d_state"]
    u, dt, z = _i8((1, tokens, d), device), _i8((1, tokens, d), device), _i8((1, tokens, d), device)
    B, C = _i8((1, tokens, n), device), _i8((1, tokens, n), device)
    A, D, bias = -torch.rand((d, n), device=device) - 0.5, torch.randn(d, device=device), torch.randn(d, device=device)
    h = _f((1, d, n), torch.float16, device, 0.1)
    y, ho = torch.empty((1, tokens, d), dtype=torch.float16, device=device), torch.empty_like(h)
    p = SelectiveScanParams(_p(u), _p(dt), _p(A), _p(B), _p(C), _p(D), _p(z), _p(bias), _p(h), None, _p(y), _p(ho), 1,
                            tokens, d, n, 0.02, 0.03, 0.02, 0.02, 0.03, SCAN_FP16, SCAN_FP16)  # fmt: skip
    moved = tokens * (3 * d + 2 * n + 2 * d) + 4 * d * n + 4 * d * n + 8 * d  # inputs, y; state r+w; A; D, dt_bias
    return "jm_selective_scan", p, (u, dt, z, B, C, A, D, bias, h, y, ho), moved


def _hadamard_quant(device, s, tokens):
    n = s["d_inner"]
    x, y = _f((tokens, n), torch.float16, device), torch.empty((tokens, n), dtype=torch.int8, device=device)
    return "jm_hadamard_quant", HadamardQuantParams(_p(x), _p(y), tokens, n, FP16, 0.05), (x, y), 3 * tokens * n


def _ssd_scan(device, s, tokens):
    H, P, G, N = s["heads"], s["head_dim"], s["groups"], s["ssd_state"]
    x, B, C = _i8((1, tokens, H * P), device), _i8((1, tokens, G, N), device), _i8((1, tokens, G, N), device)
    dt = _f((1, tokens, H), torch.float16, device)
    A, D, bias = -torch.rand(H, device=device) - 0.5, torch.randn(H, device=device), torch.randn(H, device=device) - 1
    h = _f((1, H, P, N), torch.float16, device, 0.1)
    y, ho = torch.empty((1, tokens, H, P), dtype=torch.float16, device=device), torch.empty_like(h)
    scales = [torch.full((1,), 0.02, device=device) for _ in range(3)]
    p = SsdScanParams(_p(x), _p(dt), _p(A), _p(B), _p(C), _p(D), _p(bias), _p(h), *(_p(t) for t in scales), _p(y),
                      _p(ho), 1, tokens, H, P, G, N, 1, 1, 1, 0.0, float("inf"),
                      SCAN_FP16, SCAN_FP16, SCAN_FP16)  # fmt: skip
    moved = tokens * (H * P + 2 * H + 2 * G * N + 2 * H * P) + 4 * H * P * N + 12 * H
    return "jm_ssd_scan", p, (x, B, C, dt, A, D, bias, h, y, ho, *scales), moved


# The 4-bit GEMMs of real layers, (K, N) by shape set: Mamba-2.8B in_proj (d_model -> 2 d_inner) and
# out_proj (d_inner -> d_model); Mamba2-2.7B in_proj (d_model -> 2 d_inner + 2 G N + H = 10576).
W4_LAYERS = {
    "mamba-2.8b in_proj": lambda s: (s["d_model"], 2 * s["d_inner"]),
    "mamba-2.8b out_proj": lambda s: (s["d_inner"], s["d_model"]),
    "mamba2-2.7b in_proj": lambda s: (s["d_model"], 2 * s["d_inner"] + 2 * s["groups"] * s["ssd_state"] + s["heads"]),
}


def _w4_linear(int8_x: bool, layer: str):
    def setup(device, s, tokens):
        from jetmamba.compiler.ops.int4 import group_size_for

        k, n = W4_LAYERS[layer](s)
        g = group_size_for(k)
        x = _i8((tokens, k), device) if int8_x else _f((tokens, k), torch.float16, device)
        qweight = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, device=device)
        scales = _f((n, k // g), torch.float16, device, 0.01)
        y = torch.empty((tokens, n), dtype=torch.float16, device=device)
        common = (_p(x), _p(qweight), _p(scales), None, _p(y), tokens, n, k, g)
        p = W4A8LinearParams(*common, 0.02) if int8_x else W4A16LinearParams(*common)
        # the minimum: every weight byte and scale once, x once, y once
        moved = n * k // 2 + 2 * n * (k // g) + tokens * k * (1 if int8_x else 2) + 2 * tokens * n
        return ("jm_w4a8_linear" if int8_x else "jm_w4a16_linear"), p, (x, qweight, scales, y), moved

    return setup


KERNELS = {
    "rms_norm_quant": (("rms_norm_quant/rms_norm_quant.cu",), _rms_norm_quant),
    "causal_conv1d": (("causal_conv1d/causal_conv1d.cu",), _causal_conv1d),
    "selective_scan": (("selective_scan/selective_scan.cu",), _selective_scan),
    "hadamard_quant": (("hadamard_quant/hadamard_quant.cu",), _hadamard_quant),
    "ssd_scan": (("ssd_scan/ssd_scan.cu",), _ssd_scan),
    **{f"w4a16_linear {layer}": (("w4a16_linear/w4a16_linear.cu",), _w4_linear(False, layer)) for layer in W4_LAYERS},
    **{f"w4a8_linear {layer}": (("w4a8_linear/w4a8_linear.cu",), _w4_linear(True, layer)) for layer in W4_LAYERS},
}


def peak_bandwidth_gbs(device_name: str) -> float | None:
    """The GPU's peak DRAM bandwidth: from torch's device properties where it reports the memory
    clock and bus width, else from the datasheet table by name."""
    try:
        props = torch.cuda.get_device_properties(0)
        clock_khz, bus_bits = getattr(props, "memory_clock_rate", 0), getattr(props, "memory_bus_width", 0)
        if clock_khz and bus_bits:
            return 2 * clock_khz * 1e3 * bus_bits / 8 / 1e9  # double data rate
    except (RuntimeError, AssertionError):
        pass
    for key, gbs in PEAK_GBS.items():
        if key in device_name:
            return gbs
    return None


def _load(backend: str, sources):
    paths = [PLUGINS_DIR / s for s in sources]
    if backend == "gpu":
        from jetmamba.plugins import nvcc

        return nvcc.load(paths)
    from jetmamba.plugins import emulation

    return emulation.load(paths)


def _check_layout(lib, launcher: str, params) -> None:
    size_fn = getattr(lib, f"{launcher}_params_size", None)
    if size_fn is not None:
        size_fn.restype = ctypes.c_size_t
        if size_fn() != ctypes.sizeof(params):
            raise UsageError(f"{launcher}: the benchmark's params layout ({ctypes.sizeof(params)} bytes) does not "
                             f"match the library's ({size_fn()}): update plugins/bench.py")  # fmt: skip


def run(backend: str = "gpu", shapes: str = "real", repeats: int = 50, kernels=None, progress=None) -> dict:
    """Time every case; a dict with the device, its peak bandwidth and one row per case."""
    if backend == "gpu" and not torch.cuda.is_available():
        raise UsageError("--backend gpu needs a CUDA GPU (none here); --backend emu runs the emulator's smoke test")
    device = torch.device("cuda" if backend == "gpu" else "cpu")
    name = torch.cuda.get_device_name(0) if backend == "gpu" else "CPU emulator"
    peak = peak_bandwidth_gbs(name) if backend == "gpu" else None
    s = SHAPES[shapes]
    rows = []
    for kernel in kernels or KERNELS:
        sources, setup = KERNELS[kernel]
        lib = _load(backend, sources)
        for case, tokens in (("decode", 1), (f"prefill {s['prefill']}", s["prefill"])):
            if progress:
                progress(f"{kernel} {case}")
            launcher, params, keep, moved = setup(device, s, tokens)
            _check_layout(lib, launcher, params)
            fn = getattr(lib, launcher)
            fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_void_p], ctypes.c_int
            err = fn(ctypes.byref(params), None)
            if err != 0:
                raise UsageError(f"{launcher} ({case}) failed with CUDA error {err}")
            times = []
            for _ in range(3 if backend == "emu" else repeats):
                if backend == "gpu":
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    fn(ctypes.byref(params), None)
                    end.record()
                    end.synchronize()
                    times.append(start.elapsed_time(end) * 1e3)
                else:
                    t0 = time.perf_counter()
                    fn(ctypes.byref(params), None)
                    times.append((time.perf_counter() - t0) * 1e6)
            med = statistics.median(times)
            gbs = moved / (med * 1e-6) / 1e9 if med > 0 else float("nan")
            rows.append(Result(kernel, case, moved, med, gbs, gbs / peak if peak else None))
            del keep
    return {"device": name, "backend": backend, "shapes": shapes, "peak_gbs": peak, "repeats": repeats,
            "results": [r.to_dict() for r in rows]}  # fmt: skip


def format_report(report: dict) -> str:
    peak = report["peak_gbs"]
    lines = [f"{report['device']} ({report['backend']}, {report['shapes']} shapes)"
             + (f", peak {peak:.0f} GB/s" if peak else ""),
             f"{'kernel':<16} {'case':<12} {'bytes':>12} {'median us':>10} {'GB/s':>9} {'of peak':>8}"]  # fmt: skip
    for r in report["results"]:
        frac = f"{100 * r['fraction_of_peak']:.0f} %" if r["fraction_of_peak"] is not None else "-"
        lines.append(f"{r['kernel']:<16} {r['case']:<12} {r['bytes']:>12,} {r['median_us']:>10.1f} {r['gbs']:>9.2f} "
                     f"{frac:>8}")  # fmt: skip
    if report["backend"] == "emu":
        lines.append("(the CPU emulator: a smoke test of the benchmark, not a timing of the kernels)")
    return "\n".join(lines)
