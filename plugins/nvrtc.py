"""The CUDA 12.6 check: every kernel's device code through NVRTC 12.6 and ptxas 12.6.

JetPack 6.2 ships CUDA 12.6; the machines here have nvcc 13. So that no CUDA-13-only feature
slips into the kernels, each ``plugins/<op>/<op>.cu`` is also compiled to PTX by NVRTC 12.6 and
assembled by ptxas 12.6 for the arch (sm_87 for Orin), both from NVIDIA's PyPI wheels
(``pip install 'jetmamba[cuda126]'``: nvidia-cuda-nvrtc-cu12, nvidia-cuda-nvcc-cu12 for ptxas,
nvidia-cuda-runtime-cu12 for cuda_fp16.h / cuda_bf16.h). NVRTC compiles device code only:
``common/emu/rtc.h`` lets the launchers parse (runtime API declarations, a ``JM_LAUNCH`` that
instantiates the kernel without launching it) and ``common/emu/rtc_include/`` stands in for the
C headers NVRTC lacks.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from jetmamba.plugins.emulation import COMMON_DIR, PLUGINS_DIR, KernelBuildError
from jetmamba.plugins.nvcc import KernelResources, parse_ptxas

RTC_INCLUDE_DIR = COMMON_DIR / "emu" / "rtc_include"
WHEELS = (
    "pip install 'nvidia-cuda-nvrtc-cu12==12.6.*' 'nvidia-cuda-nvcc-cu12==12.6.*' 'nvidia-cuda-runtime-cu12==12.6.*'"
)


@dataclass(frozen=True)
class Toolchain:
    nvrtc: Path  # libnvrtc.so.12
    ptxas: Path
    include: Path  # cuda_fp16.h and friends
    version: str  # NVRTC's, e.g. "12.6"


def _package_dir(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def find_toolchain() -> Toolchain | None:
    """NVRTC, ptxas and the CUDA headers from the installed nvidia-*-cu12 wheels, or None."""
    nvrtc_dir, nvcc_dir, rt_dir = (_package_dir(f"nvidia.{n}") for n in ("cuda_nvrtc", "cuda_nvcc", "cuda_runtime"))
    if nvrtc_dir is None or nvcc_dir is None or rt_dir is None:
        return None
    libs = sorted((nvrtc_dir / "lib").glob("libnvrtc.so*"))
    ptxas = nvcc_dir / "bin" / "ptxas"
    include = rt_dir / "include"
    if not libs or not ptxas.is_file() or not (include / "cuda_fp16.h").is_file():
        return None
    lib = ctypes.CDLL(str(libs[0]))
    major, minor = ctypes.c_int(), ctypes.c_int()
    lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    return Toolchain(libs[0], ptxas, include, f"{major.value}.{minor.value}")


def _nvrtc_ptx(tc: Toolchain, source: Path, arch: str) -> str:
    lib = ctypes.CDLL(str(tc.nvrtc))
    lib.nvrtcGetErrorString.restype = ctypes.c_char_p
    prog = ctypes.c_void_p()
    src = f'#include "{source}"\n'.encode()
    rc = lib.nvrtcCreateProgram(ctypes.byref(prog), src, source.name.encode(), 0, None, None)
    if rc != 0:
        raise KernelBuildError(f"NVRTC could not create a program: {lib.nvrtcGetErrorString(rc).decode()}")
    try:
        opts = [f"--gpu-architecture=compute_{arch.removeprefix('sm_')}", "-std=c++17", "-default-device",
                f"-I{PLUGINS_DIR}", f"-I{RTC_INCLUDE_DIR}", f"-I{tc.include}", f"-I{source.parent}"]  # fmt: skip
        arr = (ctypes.c_char_p * len(opts))(*(o.encode() for o in opts))
        rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        if rc != 0:
            text = log.value.decode(errors="replace")[-6000:]
            raise KernelBuildError(f"NVRTC {tc.version} failed on {source.name}:\n{text}")
        lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
        ptx = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetPTX(prog, ptx)
        return ptx.value.decode()
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def compile_report(source: str | os.PathLike, arch: str = "sm_87", toolchain: Toolchain | None = None):
    """(resources per entry function, ptxas output) of one ``.cu`` through NVRTC + ptxas 12.6."""
    tc = toolchain or find_toolchain()
    if tc is None:
        raise KernelBuildError(f"the CUDA 12.6 check needs NVRTC and ptxas 12.6: {WHEELS}")
    src = Path(source).resolve()
    ptx = _nvrtc_ptx(tc, src, arch)
    with tempfile.TemporaryDirectory(prefix="jm-nvrtc-") as tmp:
        (Path(tmp) / "k.ptx").write_text(ptx)
        cmd = [str(tc.ptxas), f"-arch={arch}", "-v", str(Path(tmp) / "k.ptx"), "-o", str(Path(tmp) / "k.cubin")]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    report = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise KernelBuildError(f"ptxas {tc.version} {arch} failed on {src.name}:\n{report.strip()[-6000:]}")
    rel = src.relative_to(PLUGINS_DIR).as_posix() if src.is_relative_to(PLUGINS_DIR) else str(src)
    return parse_ptxas(report, rel), report


__all__ = ["KernelResources", "Toolchain", "compile_report", "find_toolchain"]
