"""jetmamba kernels build: ptxas reports for every kernel, with nvcc and with CUDA 12.6's NVRTC.

The real kernels are compiled here (CI runs this file: the sources must build for sm_87 and
sm_110 with the local nvcc, and for sm_87 with JetPack 6.2's NVRTC + ptxas 12.6, without spills
on sm_87)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jetmamba.cli import main
from jetmamba.plugins import emulation, nvcc, nvrtc
from jetmamba.plugins.kernels import BuildReport, build, demangle

REDUCE = Path(__file__).parent / "common" / "kernels" / "reduce.cu"
PTXAS = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_Z3fooPf' for 'sm_87'
ptxas info    : Function properties for _Z3fooPf
    48 bytes stack frame, 40 bytes spill stores, 36 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 1024 bytes smem, 360 bytes cmem[0]
ptxas info    : Compiling entry function '_Z3barPf' for 'sm_87'
ptxas info    : Function properties for _Z3barPf
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 12 registers, used 0 barriers, 360 bytes cmem[0]
"""
needs_nvcc = pytest.mark.skipif(emulation.find_nvcc() is None, reason="nvcc is not installed (CUDA toolkit)")
needs_nvrtc = pytest.mark.skipif(nvrtc.find_toolchain() is None, reason=f"no CUDA 12.6 NVRTC/ptxas: {nvrtc.WHEELS}")


def test_ptxas_report_is_parsed_and_spills_fail_the_build():
    rows = nvcc.parse_ptxas(PTXAS, "x.cu")
    assert [(r.function, r.registers, r.spill_stores, r.spill_loads, r.stack_bytes, r.static_smem_bytes)
            for r in rows] == [("_Z3fooPf", 255, 40, 36, 48, 1024), ("_Z3barPf", 12, 0, 0, 0, 0)]  # fmt: skip
    report = BuildReport("nvcc", ["sm_87"], [{**r.to_dict(), "name": r.function} for r in rows])
    assert [k["name"] for k in report.spilling] == ["_Z3fooPf"] and not report.ok


def test_demangled_names_drop_the_parameters():
    names = demangle(["_ZN7jm_test14block_sum_smemILb1EEEvPKfPfi", "not_mangled"])
    assert names[1] == "not_mangled"
    assert names[0] in ("jm_test::block_sum_smem<true>", "_ZN7jm_test14block_sum_smemILb1EEEvPKfPfi")


@pytest.mark.parametrize("toolchain", [pytest.param("nvcc", marks=[pytest.mark.nvcc, needs_nvcc]),
                                       pytest.param("nvrtc", marks=needs_nvrtc)])  # fmt: skip
def test_a_compile_error_is_reported(tmp_path, toolchain):
    bad = tmp_path / "bad.cu"
    bad.write_text('#include "common/cuda_emu.h"\n__global__ void k(float* x) { x[0] = undefined_name; }\n')
    report = build(["sm_87"], toolchain, sources=[bad])
    assert not report.ok and "undefined_name" in report.errors[0]


@pytest.mark.nvcc
@needs_nvcc
def test_every_kernel_builds_with_nvcc_for_orin_and_thor(capsys):
    code = main(["kernels", "build", "--arch", "sm_87,sm_110", "--json", "-q"])
    report = json.loads(capsys.readouterr().out)
    assert report["errors"] == [] and report["spilling"] == [], report
    assert code == 0 and {k["arch"] for k in report["kernels"]} == {"sm_87", "sm_110"}
    sources = {k["source"] for k in report["kernels"]}
    assert sources == {p.relative_to(emulation.PLUGINS_DIR).as_posix() for p in nvcc.kernel_sources()}


@needs_nvrtc
def test_every_kernel_builds_with_cuda_12_6_for_orin(capsys):
    """JetPack 6.2's compiler: no CUDA-13-only feature in the kernels."""
    code = main(["kernels", "build", "--toolchain", "nvrtc", "--arch", "sm_87", "--json", "-q"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["errors"] == [] and report["spilling"] == [], report
    assert len(report["kernels"]) >= len(nvcc.kernel_sources())
