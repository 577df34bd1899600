"""jetmamba bench --kernels: the emulator smoke test of the benchmark, its byte counts, and the GPU
run (GPU tier)."""

from __future__ import annotations

import json

import pytest

from jetmamba.cli import main
from jetmamba.plugins import bench, emulation

pytestmark = pytest.mark.skipif(emulation.find_compiler() is None, reason="no C++ compiler for the CUDA emulator")


def test_emulated_bench_runs_every_kernel(capsys):
    assert main(["bench", "--kernels", "--backend", "emu", "--json", "-q"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["backend"] == "emu" and report["peak_gbs"] is None
    cases = {(r["kernel"], r["case"].split()[0]) for r in report["results"]}
    assert cases == {(k, c) for k in bench.KERNELS for c in ("decode", "prefill")}
    assert all(r["bytes"] > 0 and r["median_us"] > 0 for r in report["results"])


def test_decode_bytes_are_the_minimum_the_readmes_state():
    """One decode step of Mamba-2.8B's layer: the kernels' READMEs' minimum traffic."""
    s = bench.SHAPES["real"]
    d, n = s["d_inner"], s["d_state"]
    H, P, G, N = s["heads"], s["head_dim"], s["groups"], s["ssd_state"]
    assert bench._selective_scan("meta", s, 1)[3] == 8 * d * n + 13 * d + 2 * n == 721_952
    assert bench._causal_conv1d("meta", s, 1)[3] == 16 * d  # 16 bytes a channel with a bias, k = 4
    assert bench._hadamard_quant("meta", s, 1)[3] == 3 * d
    assert bench._ssd_scan("meta", s, 1)[3] == 4 * H * P * N + 3 * H * P + 2 * H + 2 * G * N + 12 * H


def test_gpu_backend_without_a_gpu_is_a_clear_error(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["bench", "--kernels", "--backend", "gpu"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs a CUDA GPU" in err[0]
    assert main(["bench", "--kernels", "--backend", "emu", "--only", "conv9d"]) != 0
    assert "unknown kernels" in capsys.readouterr().err


@pytest.mark.gpu
def test_gpu_bench_reaches_a_sane_fraction_of_peak(capsys):
    assert main(["bench", "--kernels", "--json", "-q", "--repeats", "20"]) == 0
    report = json.loads(capsys.readouterr().out)
    decode = {r["kernel"]: r for r in report["results"] if r["case"] == "decode"}
    assert all(r["gbs"] > 0 for r in decode.values())
    if report["peak_gbs"]:
        assert all(r["fraction_of_peak"] <= 1.05 for r in report["results"])  # bytes are a minimum
