"""nvcc builds of the kernel sources: ptxas reports for a target arch, and shared libraries for the
local GPU (the GPU tier calls the same C launchers the emulated tests call).

Every kernel is a ``plugins/<op>/<op>.cu`` translation unit with plain C launchers (see
``common/README.md``); :func:`kernel_sources` lists them. :func:`compile_report` compiles one for
an arch (``sm_87`` Orin, ``sm_110`` Thor) and parses ptxas's resource lines; :func:`load` builds a
shared library for the GPU of this machine and loads it with :mod:`ctypes`.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from jetmamba import native
from jetmamba.plugins.emulation import PLUGINS_DIR, KernelBuildError, find_nvcc

_FUNCTION_RE = re.compile(r"Compiling entry function '([^']+)' for '(sm_\w+)'")
_USED_RE = re.compile(r"Used (\d+) registers(?:, used \d+ barriers)?(?:, (\d+) bytes smem)?")
_SPILL_RE = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_SMEM_RE = re.compile(r"(\d+) bytes smem")


@dataclass(frozen=True)
class KernelResources:
    """ptxas's figures for one compiled entry function (a kernel instantiation) on one arch."""

    source: str  # plugins-relative path of the .cu
    function: str  # the mangled entry name as ptxas prints it
    arch: str
    registers: int
    spill_stores: int
    spill_loads: int
    stack_bytes: int
    static_smem_bytes: int

    def to_dict(self) -> dict:
        return asdict(self)


def kernel_sources(root: Path = PLUGINS_DIR) -> list[Path]:
    """Every kernel translation unit: ``<root>/<op>/*.cu`` outside ``common/``."""
    return sorted(p for p in root.glob("*/*.cu") if p.parent.name != "common")


def parse_ptxas(report: str, source: str) -> list[KernelResources]:
    """The per-function resource lines of ``nvcc -Xptxas -v`` output."""
    out, current = [], None
    for line in report.splitlines():
        m = _FUNCTION_RE.search(line)
        if m:
            current = {"function": m.group(1), "arch": m.group(2), "stack": 0, "stores": 0, "loads": 0}
            continue
        if current is None:
            continue
        m = _SPILL_RE.search(line)
        if m:
            current.update(stack=int(m.group(1)), stores=int(m.group(2)), loads=int(m.group(3)))
            continue
        m = _USED_RE.search(line)
        if m:
            smem = _SMEM_RE.search(line)
            smem_bytes = int(smem.group(1)) if smem else 0
            out.append(KernelResources(source, current["function"], current["arch"], int(m.group(1)),
                                       current["stores"], current["loads"], current["stack"], smem_bytes))  # fmt: skip
            current = None
    return out


def _nvcc() -> str:
    nvcc = find_nvcc()
    if nvcc is None:
        raise KernelBuildError("nvcc is not installed (CUDA toolkit): set CUDA_HOME or put nvcc on PATH")
    return nvcc


def compile_report(
    source: str | os.PathLike, arch: str, *, extra: Sequence[str] = ()
) -> tuple[list[KernelResources], str]:
    """Compile one ``.cu`` for ``arch`` (``sm_87``...) to an object; (resources per entry
    function, nvcc's whole output). KernelBuildError with the compiler's output on failure."""
    src = Path(source).resolve()
    number = arch.removeprefix("sm_")
    with tempfile.TemporaryDirectory(prefix="jm-nvcc-") as tmp:
        cmd = [_nvcc(), "-std=c++17", "-O3", "-gencode", f"arch=compute_{number},code=sm_{number}",
               f"-I{PLUGINS_DIR}", "-Xptxas", "-v", *extra, "-c", str(src), "-o", str(Path(tmp) / "k.o")]  # fmt: skip
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.SubprocessError) as exc:
            raise KernelBuildError(f"could not run nvcc: {exc}") from exc
    report = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise KernelBuildError(f"nvcc {arch} failed on {src.name}:\n{report.strip()[-6000:]}")
    rel = src.relative_to(PLUGINS_DIR).as_posix() if src.is_relative_to(PLUGINS_DIR) else str(src)
    return parse_ptxas(report, rel), report


def local_arch() -> str | None:
    """The compute capability of GPU 0 as ``sm_XY`` (through torch), or None without a GPU."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    return f"sm_{major}{minor}"


_loaded: dict[Path, ctypes.CDLL] = {}


def load(sources: Sequence[str | os.PathLike], arch: str | None = None) -> ctypes.CDLL:
    """Build ``sources`` with nvcc into a shared library for ``arch`` (default: the local GPU),
    cached under ``native.cache_dir() / "nvcc"`` by the sources' content, and load it."""
    arch = arch or local_arch()
    if arch is None:
        raise KernelBuildError("no CUDA GPU here: the GPU tier needs one (the emulated tests run without)")
    srcs = [Path(s).resolve() for s in sources]
    digest = hashlib.sha256(arch.encode())
    for f in sorted({*srcs, *PLUGINS_DIR.rglob("*.cuh"), *PLUGINS_DIR.rglob("*.h")}):
        digest.update(str(f).encode() + b"\0" + f.read_bytes())
    out = native.cache_dir() / "nvcc" / f"{srcs[0].stem}-{arch}-{digest.hexdigest()[:20]}.so"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        number = arch.removeprefix("sm_")
        with tempfile.TemporaryDirectory(prefix="jm-nvcc-", dir=out.parent) as tmp:
            target = Path(tmp) / "lib.so"
            cmd = [_nvcc(), "-std=c++17", "-O3", "-gencode", f"arch=compute_{number},code=sm_{number}", "-shared",
                   "-Xcompiler", "-fPIC", f"-I{PLUGINS_DIR}", *map(str, srcs), "-o", str(target)]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            if proc.returncode != 0:
                raise KernelBuildError(f"nvcc build for {arch} failed:\n{(proc.stdout + proc.stderr).strip()[-6000:]}")
            os.replace(target, out)
    if out not in _loaded:
        _loaded[out] = ctypes.CDLL(str(out))
    return _loaded[out]
