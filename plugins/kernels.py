"""``jetmamba kernels build``: compile every kernel for the target archs and report ptxas's figures.

One row per kernel instantiation and arch (registers, spills, stack, static shared memory); the
build fails on a compile error, and on spills for Orin (sm_87), the first target, where a spill
is a round trip to DRAM in the inner loop. ``toolchain="nvcc"`` uses the local CUDA toolkit;
``"nvrtc"`` the CUDA 12.6 NVRTC + ptxas of JetPack 6.2 (:mod:`jetmamba.plugins.nvrtc`).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from jetmamba.plugins import nvcc, nvrtc
from jetmamba.plugins.emulation import PLUGINS_DIR, KernelBuildError

NO_SPILL_ARCHS = ("sm_87",)
ARCH_NAMES = {"sm_87": "Orin", "sm_110": "Thor", "sm_90": "H100"}


@dataclass
class BuildReport:
    toolchain: str
    archs: list[str]
    kernels: list[dict] = field(default_factory=list)  # KernelResources.to_dict() + "name"
    errors: list[str] = field(default_factory=list)

    @property
    def spilling(self) -> list[dict]:
        return [k for k in self.kernels if k["arch"] in NO_SPILL_ARCHS and (k["spill_stores"] or k["spill_loads"])]

    @property
    def ok(self) -> bool:
        return not self.errors and not self.spilling

    def to_dict(self) -> dict:
        return {"toolchain": self.toolchain, "archs": self.archs, "ok": self.ok, "kernels": self.kernels,
                "errors": self.errors, "spilling": [k["name"] for k in self.spilling]}  # fmt: skip


def demangle(names: Sequence[str]) -> list[str]:
    """Readable kernel names (``hadamard_quant_kernel<__half, 4>``) via c++filt, else as given."""
    tool = shutil.which("c++filt")
    if tool is None or not names:
        return list(names)
    proc = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True)
    out = proc.stdout.splitlines() if proc.returncode == 0 else list(names)
    short = []
    for full in out:
        name = full.removeprefix("void ")
        depth, cut = 0, len(name)
        for i, ch in enumerate(name):  # drop the parameter list: the first '(' outside template brackets
            depth += ch == "<"
            depth -= ch == ">"
            if ch == "(" and depth == 0:
                cut = i
                break
        short.append(name[:cut])
    return short if len(short) == len(names) else list(names)


def build(archs: Sequence[str], toolchain: str = "nvcc", sources: Sequence[Path] | None = None,
          progress: Callable[[str], None] | None = None) -> BuildReport:  # fmt: skip
    """Compile ``sources`` (default: every ``plugins/<op>/*.cu``) for each arch."""
    compile_one = {"nvcc": nvcc.compile_report, "nvrtc": nvrtc.compile_report}[toolchain]
    report = BuildReport(toolchain, list(archs))
    sources = list(sources) if sources is not None else nvcc.kernel_sources()
    if not sources:
        report.errors.append(f"no kernel sources (plugins/<op>/*.cu) under {PLUGINS_DIR}")
    for src in sources:
        for arch in archs:
            if progress:
                progress(f"{arch} {src.relative_to(PLUGINS_DIR) if src.is_relative_to(PLUGINS_DIR) else src}")
            try:
                resources, _ = compile_one(src, arch)
            except KernelBuildError as exc:
                report.errors.append(str(exc))
                continue
            for r, name in zip(resources, demangle([r.function for r in resources]), strict=True):
                report.kernels.append({**r.to_dict(), "name": name})
    return report


def format_report(report: BuildReport) -> str:
    lines = [f"{'arch':<7} {'kernel':<64} {'regs':>5} {'spill st/ld':>12} {'stack':>6} {'smem':>7}"]
    for k in sorted(report.kernels, key=lambda k: (k["source"], k["name"], k["arch"])):
        name = k["name"] if len(k["name"]) <= 64 else k["name"][:61] + "..."
        spill = f"{k['spill_stores']}/{k['spill_loads']}"
        lines.append(f"{k['arch']:<7} {name:<64} {k['registers']:>5} {spill:>12} {k['stack_bytes']:>6} "
                     f"{k['static_smem_bytes']:>7}")  # fmt: skip
    lines += [f"error: {e.splitlines()[0]}" for e in report.errors]
    lines += [f"spills on {k['arch']}: {k['name']}" for k in report.spilling]
    n = len({(k["source"], k["name"]) for k in report.kernels})
    lines.append(f"{n} kernels x {len(report.archs)} archs ({report.toolchain}): " + ("ok" if report.ok else "FAILED"))
    return "\n".join(lines)
