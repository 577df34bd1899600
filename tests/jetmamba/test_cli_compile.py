"""jetmamba compile, and eval of the bundle it writes; its refusals."""

from __future__ import annotations

import json

import pytest

from jetmamba.cli import main


def run(capsys, *argv):
    code = main([*argv, "-q"])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def qdir(tmp_path_factory, mamba1_fixture):
    from shared import shared_path

    out = tmp_path_factory.mktemp("q") / "q"
    calib = str(shared_path("data", "wikitext2-valid.txt"))
    argv = ["quantize", "--model", str(mamba1_fixture), "--recipe", "w8a8-mambaquant", "--calib", calib]
    assert main([*argv, "--samples", "8", "--out", str(out), "-q"]) == 0
    return out


def test_compile_then_eval_the_bundle(capsys, tmp_path, qdir, wikitext_test):
    bundle = tmp_path / "b"
    code, out, err = run(capsys, "compile", "--model", str(qdir), "--board", "thor", "--out", str(bundle), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["board"] == {"name": "thor", "gpu_arch": "sm_110"} and "model.trt.onnx" in report["files"]
    assert main(["inspect", "--model", str(bundle), "--json"]) == 0
    out = capsys.readouterr().out
    info = json.loads(out)
    assert info["ops"]["jetmamba::SelectiveScan"] == 4 and info["recipe"] == "w8a8-mambaquant"
    assert info["io"]["inputs"][0] == {"name": "input_ids", "dtype": "int64", "shape": ["batch", "seq"]}
    ppl = {}
    for name, model in (("bundle", bundle), ("simulation", qdir)):
        code, out, err = run(capsys, "eval", "--model", str(model), "--data", str(wikitext_test), "--seq-len", "256",
                             "--max-tokens", "4096", "--json")  # fmt: skip
        assert code == 0, err
        ppl[name] = json.loads(out)["perplexity"]
    assert abs(ppl["bundle"] / ppl["simulation"] - 1) <= 1e-3, ppl


@pytest.mark.parametrize("case,expect", [("fp", "not a QuantizedModel"), ("board", "unknown board"),
                                         ("exists", "pass --force")])  # fmt: skip
def test_compile_refusals(capsys, tmp_path, qdir, mamba1_fixture, case, expect):
    out = tmp_path / "b"
    if case == "exists":
        out.mkdir()
        (out / "keep").write_text("x")
    model = str(mamba1_fixture if case == "fp" else qdir)
    board = "orin-mega" if case == "board" else "orin-nano-8gb"
    code, _, err = run(capsys, "compile", "--model", model, "--board", board, "--out", str(out))
    assert code != 0 and expect in err and len(err.strip().splitlines()) == 1
    assert (out / "keep").exists() if case == "exists" else not out.exists()


def test_eval_refuses_a_tampered_bundle(capsys, tmp_path, qdir, wikitext_test):
    bundle = tmp_path / "b"
    assert run(capsys, "compile", "--model", str(qdir), "--board", "orin-nano-8gb", "--out", str(bundle))[0] == 0
    data = bytearray((bundle / "weights.bin").read_bytes())
    data[100] ^= 1
    (bundle / "weights.bin").write_bytes(bytes(data))
    code, _, err = run(capsys, "eval", "--model", str(bundle), "--data", str(wikitext_test), "--max-tokens", "512")
    assert code != 0 and "sha256" in err and len(err.strip().splitlines()) == 1
