"""jetmamba quantize / compare / eval of a QuantizedModel, and their refusals."""

from __future__ import annotations

import json

import pytest

from jetmamba.cli import main


def run(capsys, *argv):
    code = main([*argv, "-q"])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def valid():
    from shared import shared_path

    return str(shared_path("data", "wikitext2-valid.txt"))


def test_quantize_then_eval(capsys, tmp_path, mamba1_fixture, valid, wikitext_test):
    out = tmp_path / "q"
    code, text, err = run(
        capsys,
        "quantize",
        "--model",
        str(mamba1_fixture),
        "--recipe",
        "w8a8-quamba",
        "--calib",
        valid,
        "--samples",
        "8",
        "--calib-seq-len",
        "256",
        "--out",
        str(out),
        "--json",
    )
    assert code == 0, err
    report = json.loads(text)
    assert report["weight_bytes"] < report["fp16_weight_bytes"] and report["calibration"]["samples"] == 8
    assert all(k.startswith("layers.") and v > 0 for k, v in report["saturation"].items())
    code, text, err = run(
        capsys,
        "eval",
        "--model",
        str(out),
        "--data",
        str(wikitext_test),
        "--seq-len",
        "256",
        "--max-tokens",
        "2048",
        "--json",
    )
    assert code == 0, err
    result = json.loads(text)
    assert result["precision"] == "w8a8-quamba" and 1 < result["perplexity"] < 10


def test_quantize_self_calibration(capsys, tmp_path, mamba1_fixture):
    code, _, err = run(
        capsys,
        "quantize",
        "--model",
        str(mamba1_fixture),
        "--recipe",
        "w8a8-naive",
        "--calib",
        "self",
        "--samples",
        "4",
        "--calib-seq-len",
        "64",
        "--out",
        str(tmp_path / "q"),
    )
    assert code == 0, err
    manifest = json.loads((tmp_path / "q" / "quantized.json").read_text())
    assert manifest["provenance"]["calibration"]["data"] == "self"


def test_compare_table(capsys, tmp_path, mamba1_fixture, valid, wikitext_test):
    md = tmp_path / "t.md"
    code, text, err = run(
        capsys,
        "compare",
        "--model",
        str(mamba1_fixture),
        "--calib",
        valid,
        "--data",
        str(wikitext_test),
        "--samples",
        "8",
        "--max-tokens",
        "4096",
        "--markdown",
        str(md),
        "--json",
    )
    assert code == 0, err
    rows = json.loads(text)["rows"]
    assert [r["recipe"] for r in rows][:3] == ["fp32", "w8a8-naive", "w8a8-quamba"]
    assert "| w8a8-quamba |" in md.read_text()


@pytest.mark.parametrize(
    "recipe,calib,expect",
    [
        ("w9a9", "{valid}", "unknown recipe"),
        ("w8a8-quamba", "{empty}", "no text"),
        ("w8a8-quamba", "{short}", "fewer than one window"),
    ],
)
def test_quantize_refusals(capsys, tmp_path, mamba1_fixture, valid, recipe, calib, expect):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "short.txt").write_text("too short")
    calib = {"{valid}": valid, "{empty}": str(tmp_path / "empty.txt"), "{short}": str(tmp_path / "short.txt")}[calib]
    code, out, err = run(
        capsys,
        "quantize",
        "--model",
        str(mamba1_fixture),
        "--recipe",
        recipe,
        "--calib",
        calib,
        "--samples",
        "2",
        "--out",
        str(tmp_path / "q"),
    )
    assert code != 0 and expect in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "q").exists()


def test_existing_output_is_refused_without_force(capsys, tmp_path, mamba1_fixture, valid):
    out = tmp_path / "q"
    out.mkdir()
    (out / "keep").write_text("x")
    code, _, err = run(
        capsys,
        "quantize",
        "--model",
        str(mamba1_fixture),
        "--recipe",
        "w8a8-naive",
        "--calib",
        valid,
        "--samples",
        "2",
        "--out",
        str(out),
    )
    assert code == 2 and "pass --force" in err and (out / "keep").exists()
