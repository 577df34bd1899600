"""``jetmamba doctor``: what this machine has for running bundles, and the fix for each missing piece.

Every check reports a status — ``ok``, ``missing`` (needed for something, with the fix),
``warning`` (works, but not as well as it could), ``unknown`` (could not be determined, and why)
or ``n/a`` (does not apply here, e.g. nvpmodel on a workstation) — what it found, and a fix.
The checks never raise: a machine with nothing installed gets an honest list, and the command
exits 0 whenever the checks ran.

The filesystem root and the command runner are parameters, so the tests run the doctor on a fake
Jetson tree.
"""

from __future__ import annotations

import ctypes.util
import glob
import importlib
import importlib.util
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jetmamba.runtime.jetson import JetsonInfo, Runner, board_power_mode, probe_jetson, run_command

STATUSES = ("ok", "missing", "warning", "unknown", "n/a")


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    found: str
    fix: str | None = None

    def __post_init__(self):
        assert self.status in STATUSES, self.status


@dataclass(frozen=True)
class Environment:
    """What the checks look at; the defaults are this machine."""

    root: Path = Path("/")
    run: Runner = run_command
    which: Callable[[str], str | None] = shutil.which


def _module_version(name: str) -> tuple[bool, str | None, str | None]:
    """(importable, version, error) without letting a broken install raise."""
    try:
        if importlib.util.find_spec(name) is None:
            return False, None, None
    except (ImportError, ValueError):
        return False, None, None
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # a half-installed binary module raises anything
        return False, None, f"{type(exc).__name__}: {exc}"
    if getattr(module, "__file__", None) is None:
        # a namespace package: a folder of type stubs (tensorrt-stubs installs one), not the library
        return False, None, f"only a namespace package named {name} (type stubs?), not the library"
    return True, getattr(module, "__version__", None), None


# ---------------------------------------------------------------- the checks


def check_jetson(info: JetsonInfo) -> list[Check]:
    if not info.is_jetson:
        return [
            Check(
                "Jetson / L4T",
                "n/a",
                "not a Jetson (no /etc/nv_tegra_release, no Jetson device-tree model)",
                "bench and run use ONNX Runtime here; TensorRT engines are built on the device",
            )
        ]
    checks = []
    if info.l4t:
        jp = f", JetPack {info.jetpack}" if info.jetpack else ", JetPack unknown for this L4T"
        pkg = f" (nvidia-l4t-core {info.l4t_core_package})" if info.l4t_core_package else ""
        status = "ok" if info.l4t.split(".")[0] in ("36", "38", "39") else "warning"
        fix = None if status == "ok" else "jetmamba targets JetPack 6.2 (L4T 36.4) and 7.x: reflash with SDK Manager"
        checks.append(Check("Jetson / L4T", status, f"L4T {info.l4t}{jp}{pkg}", fix))
    else:
        checks.append(
            Check(
                "Jetson / L4T",
                "unknown",
                f"{info.model}: no /etc/nv_tegra_release",
                "install JetPack (sudo apt install nvidia-jetpack) or reflash with SDK Manager",
            )
        )
    if info.board:
        checks.append(Check("board", "ok", f"{info.board} ({info.model}, {(info.memory_bytes or 0) / 2**30:.1f} GiB)"))
    else:
        checks.append(
            Check(
                "board",
                "unknown",
                f"{info.model!r} is not in jetmamba's board files",
                "jetmamba plan --list-boards lists the boards; pass --board explicitly",
            )
        )
    checks.append(_power_check(info))
    if info.clocks is None:
        checks.append(
            Check(
                "clocks",
                "unknown",
                "jetson_clocks --show gave no clock state",
                "run jetmamba doctor with sudo to read it",
            )
        )
    elif info.clocks.locked:
        checks.append(Check("clocks", "ok", "locked at the power mode's maximum (jetson_clocks)"))
    else:
        checks.append(
            Check(
                "clocks",
                "warning",
                "not locked: clocks scale with load, benchmarks vary",
                "sudo jetson_clocks (until reboot) before benchmarking",
            )
        )
    return checks


def _power_check(info: JetsonInfo) -> Check:
    if info.power_mode is None:
        return Check("power mode", "unknown", "nvpmodel -q gave no mode", "sudo nvpmodel -q")
    found = f"{info.power_mode.name}" + (f" (nvpmodel {info.power_mode.id})" if info.power_mode.id is not None else "")
    if info.board is None:
        return Check("power mode", "ok", found)
    from jetmamba.boards import load_board

    board = load_board(info.board)
    mode = board_power_mode(board, info.power_mode)
    if mode is None:
        return Check(
            "power mode",
            "warning",
            f"{found}: not in the {board.name} board file, plans use {board.default_power_mode}",
            f"sudo nvpmodel -m <id of {board.default_power_mode}>",
        )
    if mode.name != board.default_power_mode:
        return Check(
            "power mode",
            "warning",
            f"{found}, not the board's fastest ({board.default_power_mode})",
            f"sudo nvpmodel -m <id of {board.default_power_mode}> for the fastest decode",
        )
    return Check("power mode", "ok", found)


def _version_line(env: Environment, argv: list[str], pattern: str) -> str | None:
    out = env.run(argv)
    if out is None:
        return None
    m = re.search(pattern, out[1])
    return m.group(1) if m else None


def check_cuda(env: Environment) -> list[Check]:
    checks = []
    nvcc = env.which("nvcc") or next((p for p in ("usr/local/cuda/bin/nvcc",) if (env.root / p).exists()), None)
    if nvcc:
        argv = [nvcc if Path(nvcc).is_absolute() else str(env.root / nvcc), "--version"]
        version = _version_line(env, argv, r"release (\d+\.\d+)")
        checks.append(Check("CUDA compiler (nvcc)", "ok", f"{nvcc}" + (f", CUDA {version}" if version else "")))
    else:
        checks.append(
            Check(
                "CUDA compiler (nvcc)",
                "missing",
                "no nvcc on PATH or in /usr/local/cuda/bin",
                "Jetson: sudo apt install cuda-toolkit-12-6 (part of nvidia-jetpack) and add "
                "/usr/local/cuda/bin to PATH; needed to build the plugin library",
            )
        )
    cudart = ctypes.util.find_library("cudart")
    if cudart is None:
        hits = sorted(glob.glob(str(env.root / "usr/local/cuda*/lib*/libcudart.so*")))
        cudart = hits[0] if hits else None
    if cudart:
        checks.append(Check("CUDA runtime (libcudart)", "ok", cudart))
    else:
        checks.append(
            Check(
                "CUDA runtime (libcudart)",
                "missing",
                "libcudart not found",
                "install the CUDA runtime (JetPack: nvidia-jetpack; workstation: the CUDA toolkit)",
            )
        )
    return checks


def check_gpu(env: Environment, info: JetsonInfo) -> tuple[Check, str | None]:
    """(the check, the GPU's arch such as sm_87, or None)."""
    ok, _, _ = _module_version("torch")
    if ok:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            arch = f"sm_{major}{minor}"
            return Check("GPU", "ok", f"{torch.cuda.get_device_name(0)}, {arch} (torch.cuda)"), arch
    if env.which("nvidia-smi"):
        out = env.run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"])
        if out is not None and out[0] == 0:
            m = re.search(r"^(.*?),\s*(\d+)\.(\d+)\s*$", out[1].strip().splitlines()[0] if out[1].strip() else "")
            if m:
                arch = f"sm_{m.group(2)}{m.group(3)}"
                return Check("GPU", "ok", f"{m.group(1)}, {arch} (nvidia-smi)"), arch
    if info.board:
        from jetmamba.boards import board_arch

        arch = board_arch(info.board)
        return Check("GPU", "ok", f"integrated GPU, {arch} (from the board file)"), arch
    return Check(
        "GPU",
        "n/a",
        "no CUDA GPU found (torch.cuda, nvidia-smi)",
        "ONNX Runtime on the CPU runs bundles here; TensorRT needs a Jetson or an NVIDIA GPU",
    ), None


def check_python_modules() -> list[Check]:
    checks = []
    ok, version, error = _module_version("tensorrt")
    if ok:
        checks.append(Check("TensorRT (python)", "ok", f"tensorrt {version}"))
    else:
        checks.append(
            Check(
                "TensorRT (python)",
                "missing",
                "no TensorRT: " + (error or "the tensorrt module is not importable"),
                "Jetson: sudo apt install python3-libnvinfer (JetPack ships it; use the system python or a "
                "venv with --system-site-packages); workstation: pip install tensorrt",
            )
        )
    cuda_python = _module_version("cuda.bindings")
    if not cuda_python[0]:
        cuda_python = _module_version("cuda")
    pycuda = _module_version("pycuda")
    if cuda_python[0] or pycuda[0]:
        found = ", ".join(
            f"{n} {v or ''}".strip() for n, (ok_, v, _) in (("cuda-python", cuda_python), ("pycuda", pycuda)) if ok_
        )
        checks.append(Check("device buffers (cuda-python / pycuda)", "ok", found))
    else:
        checks.append(
            Check(
                "device buffers (cuda-python / pycuda)",
                "missing",
                "neither cuda-python nor pycuda",
                "pip install 'cuda-python>=12.6' (or pycuda); the TensorRT backend needs one",
            )
        )
    ok, version, error = _module_version("onnxruntime")
    if ok:
        import onnxruntime

        providers = list(onnxruntime.get_available_providers())
        status = "ok"
        checks.append(Check("ONNX Runtime", status, f"onnxruntime {version}, providers: {', '.join(providers)}"))
    else:
        checks.append(
            Check(
                "ONNX Runtime",
                "missing",
                error or "onnxruntime is not importable",
                "pip install onnxruntime (CPU) or onnxruntime-gpu: it runs bundles anywhere",
            )
        )
    return checks


def check_cmake(env: Environment) -> Check:
    cmake = env.which("cmake")
    if cmake is None:
        return Check(
            "cmake",
            "missing",
            "no cmake on PATH",
            "sudo apt install cmake (or pip install cmake): the plugin library build needs it",
        )
    version = _version_line(env, [cmake, "--version"], r"cmake version (\S+)")
    return Check("cmake", "ok", f"{cmake}" + (f" {version}" if version else ""))


def check_plugin_library(bundle: Path | None) -> Check:
    try:
        from jetmamba.runtime.build import find_plugin_library
    except ImportError:
        return Check("plugin library", "unknown", "this jetmamba cannot look for it yet (no runtime.build)")
    try:
        path = find_plugin_library(bundle)
    except Exception as exc:  # the build module is another part's; its failure is reported, not raised
        return Check("plugin library", "unknown", f"the lookup failed: {type(exc).__name__}: {exc}")
    if path is None:
        where = f" for {bundle}" if bundle else ""
        return Check("plugin library", "missing", f"not built{where}", "run jetmamba build --bundle B on the device")
    return Check("plugin library", "ok", str(path))


def check_bundle(bundle: Path, arch: str | None) -> list[Check]:
    from jetmamba.compiler.bundle import verify_bundle
    from jetmamba.errors import JetmambaError

    try:
        manifest = verify_bundle(bundle)
    except JetmambaError as exc:
        return [Check("bundle", "missing", f"does not verify: {exc}", "recompile it: jetmamba compile ... --out B")]
    board = manifest.get("board", {})
    recipe = (manifest.get("recipe") or {}).get("name", "fp16")
    checks = [
        Check(
            "bundle",
            "ok",
            f"{bundle}: verified, {manifest['config'].get('arch')} {recipe}, for "
            f"{board.get('name')} ({board.get('gpu_arch')})",
        )
    ]
    if arch is None:
        checks.append(
            Check(
                "bundle arch",
                "n/a",
                f"compiled for {board.get('gpu_arch')}; no GPU here to compare",
                "ONNX Runtime runs it on the CPU",
            )
        )
    elif arch == board.get("gpu_arch"):
        checks.append(Check("bundle arch", "ok", f"compiled for {arch}, this GPU's arch"))
    else:
        checks.append(
            Check(
                "bundle arch",
                "missing",
                f"compiled for {board.get('gpu_arch')}, this GPU is {arch}",
                "recompile with the right --board (jetmamba compile --board ...)",
            )
        )
    return checks


# ---------------------------------------------------------------- the report


def run_doctor(bundle: str | Path | None = None, env: Environment | None = None) -> dict[str, Any]:
    env = env or Environment()
    info = probe_jetson(env.root, env.run)
    checks = check_jetson(info)
    checks += check_cuda(env)
    gpu, arch = check_gpu(env, info)
    checks.append(gpu)
    checks += check_python_modules()
    checks.append(check_cmake(env))
    bundle_path = None if bundle is None else Path(bundle)
    checks.append(check_plugin_library(bundle_path))
    if bundle_path is not None:
        checks += check_bundle(bundle_path, arch)
    counts = {s: sum(c.status == s for c in checks) for s in STATUSES}
    return {"jetson": info.to_dict(), "gpu_arch": arch, "checks": [asdict(c) for c in checks], "counts": counts}


_MARK = {"ok": "ok", "missing": "MISSING", "warning": "warning", "unknown": "unknown", "n/a": "n/a"}


def format_doctor(report: dict[str, Any]) -> str:
    width = max(len(c["name"]) for c in report["checks"])
    lines = []
    for c in report["checks"]:
        lines.append(f"{_MARK[c['status']]:<8} {c['name']:<{width}}  {c['found']}")
        if c["fix"] and c["status"] != "ok":
            lines.append(f"{'':<8} {'':<{width}}  fix: {c['fix']}")
    n = report["counts"]
    lines.append("")
    lines.append(
        f"{n['ok']} ok, {n['missing']} missing, {n['warning']} warnings, {n['unknown']} unknown, "
        f"{n['n/a']} not applicable"
    )
    return "\n".join(lines)


__all__ = ["Check", "Environment", "format_doctor", "run_doctor"]
