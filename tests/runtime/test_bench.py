"""jetmamba bench --bundle: the report on bundles of both fixtures through ONNX Runtime (its JSON
schema, the floors from the planner, the PNG plot), a run on a fake Jetson with a fake tegrastats,
and the errors for bad input."""

from __future__ import annotations

import json
import struct

import pytest
import torch

from jetmamba.cli import main
from jetmamba.errors import UsageError
from jetmamba.runtime.bench import REPORT_SCHEMA, BenchConfig, format_report, parse_lengths, percentile, run_bench
from jetmamba.runtime.jetson import JetsonInfo, PowerModeReading, TegraStats, parse_jetson_clocks

pytest.importorskip("onnxruntime")
jsonschema = pytest.importorskip("jsonschema")

FIXTURES = [("mamba1_fixture", "w8a8-quamba"), ("mamba2_fixture", "w8a8-quamba2")]
SMALL = ["--backend", "onnxruntime", "--prompt-len", "8,16", "--gen-len", "4", "--warmup", "1", "--repeats", "2"]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, request):
    from jetmamba.calibration.checkpoint import load_model
    from jetmamba.calibration.quantize import quantize_model
    from jetmamba.calibration.recipes import RECIPES
    from jetmamba.compiler.bundle import write_bundle

    cache = {}

    def get(fixture: str, recipe: str):
        if fixture not in cache:
            windows = torch.randint(0, 256, (4, 128), generator=torch.Generator().manual_seed(0))
            q = quantize_model(load_model(request.getfixturevalue(fixture)), RECIPES[recipe], windows,
                               show_progress=False)  # fmt: skip
            out = tmp_path_factory.mktemp(fixture) / "q.bundle"
            write_bundle(q, out, board="orin-nano-8gb")
            cache[fixture] = out
        return cache[fixture]

    return get


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("fixture,recipe", FIXTURES)
def test_bench_json_and_plot(bundles, fixture, recipe, tmp_path, capsys):
    from jetmamba.boards import load_board
    from jetmamba.runtime.plan import make_plan, read_model_source

    bundle = bundles(fixture, recipe)
    png = tmp_path / "plots" / "bench.png"
    assert main(["bench", "--bundle", str(bundle), *SMALL, "--json", "-q", "--plot", str(png)]) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)
    jsonschema.validate(report, REPORT_SCHEMA)
    assert report["model"] == {"arch": "mamba1" if "1" in fixture else "mamba2", "recipe": recipe,
                               "weight_bytes": read_model_source(bundle).weight_bytes}  # fmt: skip
    assert report["backend"]["name"] == "onnxruntime" and report["device"]["is_jetson"] is False
    assert [r["prompt_len"] for r in report["results"]] == [8, 16]
    assert "not a Jetson" in err and "only meaningful" in err  # the floors are the bundle board's
    source, board = read_model_source(bundle), load_board("orin-nano-8gb")
    for r in report["results"]:
        assert len(r["ttft_ms"]["values"]) == 2 and r["tpot_ms"]["steps"] == 2 * 3  # repeats x (gen_len - 1)
        t = r["tpot_ms"]
        assert t["p50"] <= t["p90"] <= t["p99"]
        assert r["decode_tokens_per_s"] == pytest.approx(1e3 / t["mean"], rel=1e-3)
        assert r["prefill_tokens_per_s"] == pytest.approx(r["prompt_len"] / (r["ttft_ms"]["median"] / 1e3), rel=1e-3)
        plan = make_plan(source, board, board.power_mode(), recipe=recipe, ctx=r["prompt_len"]).rows[0]
        assert r["floor"]["ttft_ms"] == pytest.approx(plan.prefill_floor_ms, abs=1e-4)
        assert r["floor"]["tpot_ms"] == pytest.approx(plan.decode_floor_ms, abs=1e-4)
        assert r["floor"]["ttft_ratio"] == pytest.approx(r["ttft_ms"]["median"] / plan.prefill_floor_ms, rel=0.01)
        assert r["memory"]["host_rss_peak_bytes"] > 50e6 and r["memory"]["device_bytes"] is None
        assert r["power"] is None
    assert png_size(png) == (700, 450)
    assert not [p for p in png.parent.iterdir() if p.name != "bench.png"]  # no temporary file left


def test_bench_table(bundles, capsys):
    bundle = bundles("mamba1_fixture", "w8a8-quamba")
    assert main(["bench", "--bundle", str(bundle), *SMALL, "-q"]) == 0
    out = capsys.readouterr().out
    assert "TTFT" in out and "TPOT p50" in out and "orin-nano-8gb in MAXN_SUPER (board default)" in out
    assert [line.split()[0] for line in out.splitlines() if line.strip()[:2] in ("8 ", "16")] == ["8", "16"]


class FakeBackend:
    """Wraps a real backend to stand in for a device one with a prompt limit and device memory."""

    def __init__(self, inner, max_prompt=None):
        self.inner, self.name, self.config, self.provider = inner, "fake", inner.config, None
        self.max_prompt = max_prompt

    def check_shape(self, batch, length):
        if self.max_prompt is not None and length > self.max_prompt:
            raise UsageError(f"the prompt has {length} tokens, more than this backend's maximum of {self.max_prompt}")

    def prefill(self, ids, state=None):
        return self.inner.prefill(ids, state)

    def decode(self, ids, state):
        return self.inner.decode(ids, state)

    def device_memory_bytes(self):
        return 123_456_789


def test_bench_on_a_fake_jetson(bundles, tmp_path):
    """A Jetson in 15W with clocks free and a fake tegrastats: floors in the measured mode, the clock
    warning, power per rail and energy per token."""
    from jetson_outputs import CLOCKS_FREE, ORIN_NANO_JP6, ORIN_NANO_JP6_EMC, fake_tegrastats

    from jetmamba.runtime.backends import open_backend

    bundle = bundles("mamba2_fixture", "w8a8-quamba2")
    info = JetsonInfo(True, "NVIDIA Jetson Orin Nano Developer Kit", "orin-nano-8gb", 7802736 * 1024, "36.4.3", "6.2",
                      None, PowerModeReading("15W", 0), parse_jetson_clocks(CLOCKS_FREE))  # fmt: skip
    command = fake_tegrastats(tmp_path, [ORIN_NANO_JP6, ORIN_NANO_JP6_EMC])
    backend = FakeBackend(open_backend(bundle, "onnxruntime"))
    config = BenchConfig(bundle, prompt_lens=(8,), gen_len=8, warmup=0, repeats=2)
    report = run_bench(config, show_progress=False, probe=info, backend=backend,
                       sampler_factory=lambda ms: TegraStats(ms, command=command))  # fmt: skip
    jsonschema.validate(report, REPORT_SCHEMA)
    assert report["floors"] == {"board": "orin-nano-8gb", "power_mode": "15W", "power_mode_source": "nvpmodel",
                                "on_board": True}  # fmt: skip
    assert any("jetson_clocks is off" in w for w in report["warnings"])
    assert report["device"]["clocks_locked"] is False and report["device"]["l4t"] == "36.4.3"
    (r,) = report["results"]
    assert r["memory"]["device_bytes"] == 123_456_789
    power = r["power"]
    assert power["input_rail"] == "VDD_IN" and set(power["rails_mw"]) == {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}
    assert 2957 <= power["rails_mw"]["VDD_IN"] <= 4968  # between the two lines' readings
    # energy per token = energy over the timed runs / (batch x gen_len x repeats)
    assert power["energy_per_token_j"]["VDD_IN"] == pytest.approx(power["energy_j"]["VDD_IN"] / 16, rel=1e-3)
    text = format_report(report)
    assert "mJ/token (VDD_IN)" in text and "clocks NOT locked" in text


def test_prompt_longer_than_the_backend_allows(bundles):
    from jetmamba.runtime.backends import open_backend

    bundle = bundles("mamba1_fixture", "w8a8-quamba")
    backend = FakeBackend(open_backend(bundle, "onnxruntime"), max_prompt=8)
    with pytest.raises(UsageError, match="more than this backend's maximum of 8"):
        run_bench(BenchConfig(bundle, prompt_lens=(8, 16), gen_len=2), show_progress=False, backend=backend)


def test_bad_input_is_one_line(bundles, tmp_path, capsys):
    bundle = str(bundles("mamba1_fixture", "w8a8-quamba"))
    cases = [
        (["--bundle", bundle, "--prompt-len", "8,0"], "at least 1"),
        (["--bundle", bundle, "--prompt-len", "8,,16"], "comma-separated"),
        (["--bundle", bundle, "--prompt-len", "-4"], "at least 1"),
        (["--bundle", str(tmp_path)], "not a bundle"),
        (["--bundle", bundle, "--backend", "gpu"], "choose from auto, onnxruntime, tensorrt"),
        (["--bundle", bundle, "--only", "rms_norm"], "--only selects kernels"),
    ]
    for args, message in cases:
        assert main(["bench", *args, "-q"]) != 0, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (args, err)


def test_parse_lengths_and_percentile():
    assert parse_lengths("64,512, 2048") == (64, 512, 2048)
    for bad in ("", "64,", "a", "0", "64,-1"):
        with pytest.raises(UsageError):
            parse_lengths(bad)
    with pytest.raises(UsageError, match="gen-len"):
        BenchConfig("b", gen_len=0)
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([5], 99) == 5
    assert percentile(list(range(101)), 90) == 90
