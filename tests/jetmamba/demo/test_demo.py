"""The built-in demo runs end to end, its model is trained, not random, and quantizes well."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from jetmamba.demo.run import PROMPT, format_report, model_dir, run_demo


@pytest.fixture(scope="module")
def report():
    return run_demo(show_progress=False)


def test_demo_report(report):
    assert all(v == "ok" for v in report["stages"].values())
    # a trained byte model on held-out verse; an untrained one scores about 256
    assert report["perplexity"]["perplexity"] < 12, report["perplexity"]
    assert report["decode_check"]["ok"]
    assert report["generation"]["new_tokens"] > 100
    text = format_report(report)
    assert "perplexity" in text and "ROMEO:" in text and "w8a8-quamba" in text


def test_demo_quantizes_with_every_mamba1_recipe(report):
    rows = {r["recipe"]: r for r in report["quantization"]["recipes"]}
    assert set(rows) == {"w8a8-naive", "w8a8-quamba", "w8a8-mambaquant"}
    fp_bytes = 2 * report["model"]["parameters"]
    for r in rows.values():
        assert r["weight_bytes"] < 0.7 * fp_bytes, r  # int8 blocks, fp16 embedding
    # the methods beat round-to-nearest on the demo model too
    best = min(rows["w8a8-quamba"]["delta_percent"], rows["w8a8-mambaquant"]["delta_percent"])
    assert best < rows["w8a8-naive"]["delta_percent"], rows
    assert best < 1.0, rows


def test_demo_cli_json_is_parseable():
    proc = subprocess.run([sys.executable, "-m", "jetmamba", "demo", "--json", "-q"], capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["stages"]["decode"] == "ok" and out["stages"]["quantize"] == "ok"


def test_same_seed_same_text():
    from jetmamba.calibration.checkpoint import load_model, open_checkpoint
    from jetmamba.runtime.generate import generate

    ckpt = open_checkpoint(model_dir())
    model, prompt = load_model(ckpt), ckpt.tokenizer().encode(PROMPT)
    a, b, c = (generate(model, prompt, max_new_tokens=64, temperature=0.8, seed=s).tokens for s in (3, 3, 4))
    assert a == b and a != c


def test_demo_compiles_and_runs_the_bundles(report):
    rows = {r["bundle"]: r for r in report["compile"]["bundles"]}
    best = min((r for r in report["quantization"]["recipes"]), key=lambda r: r["perplexity"])["recipe"]
    assert set(rows) == {best, "fp16"} and all(r["ok"] for r in rows.values()), rows
    assert abs(rows[best]["delta_percent"]) <= 0.1 and abs(rows["fp16"]["delta_percent"]) <= 0.5
    assert "compile" in format_report(report)


def test_demo_ends_by_deploying_the_bundle(report):
    """Text generated from the compiled bundle, a short bench run and the plan for Orin Nano."""
    d = report["compile"]["deploy"]
    best = report["compile"]["bundles"][0]["bundle"]
    assert report["stages"]["deploy"] == "ok" and d["backend"] == "onnxruntime"  # no TensorRT here
    assert d["new_tokens"] > 0 and d["text"]
    assert d["bench"]["prompt_len"] == 64 and d["bench"]["ttft_ms"] > 0 and d["bench"]["tpot_ms_p50"] > 0
    assert d["plan"]["board"] == "orin-nano-8gb" and d["plan"]["recipe"] == best and d["plan"]["fits"]
    assert 0 < d["plan"]["decode_floor_ms"] < d["bench"]["tpot_ms_p50"]  # a floor, below any measurement
    text = format_report(report)
    assert "deploy" in text and "plan         orin-nano-8gb" in text


def test_demo_on_a_bundle(tmp_path, capsys):
    from jetmamba.cli import main

    bundle = tmp_path / "fp16"
    assert main(["compile", "--model", str(model_dir()), "--board", "orin-nano-8gb", "--out", str(bundle), "-q"]) == 0
    capsys.readouterr()
    assert main(["demo", "--model", str(bundle), "--json", "-q"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bundle"]["recipe"] == "fp16" and out["decode_check"]["ok"] and out["stages"]["generate"] == "ok"
    assert out["perplexity"]["perplexity"] < 12  # the trained model, not noise
    assert main(["demo", "--model", str(tmp_path), "-q"]) != 0
    assert "not a bundle" in capsys.readouterr().err


def test_demo_without_onnxruntime_still_writes_the_bundles(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime raises ImportError
    report = run_demo(show_progress=False)
    assert report["stages"]["compile"] == "ok (not run)" and not report["compile"]["ran"]
    assert report["compile"]["deploy"] is None and report["stages"]["deploy"].startswith("not run")
    assert all(r["perplexity"] is None and r["bytes"] > 0 for r in report["compile"]["bundles"])
    assert "pip install onnxruntime" in format_report(report)
