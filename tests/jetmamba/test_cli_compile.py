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


@pytest.fixture(scope="module")
def wide_conv_qdir(tmp_path_factory):
    """A QuantizedModel of a random Mamba1 with d_conv = 5: quantizable, not lowerable (the conv
    kernels take widths 2..4)."""
    import torch

    from jetmamba.calibration.arch.mamba1 import Mamba1Config
    from jetmamba.calibration.model import MambaLM
    from jetmamba.calibration.quantize import quantize_model
    from jetmamba.calibration.recipes import RECIPES

    cfg = Mamba1Config(d_model=32, n_layer=2, vocab_size=256, d_inner=64, d_state=8, dt_rank=2, d_conv=5)
    model = MambaLM(cfg).init_weights(0)
    windows = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(0))
    out = tmp_path_factory.mktemp("wide") / "q"
    quantize_model(model, RECIPES["w8a8-naive"], windows, show_progress=False).save(out)
    return out


@pytest.mark.parametrize("case,expect", [
    ("neither", "config.json"), ("board", "unknown board"), ("exists", "pass --force"),
    ("bundle", "is already a bundle"), ("dtype", "--dtype applies to an fp checkpoint"),
    ("unlowerable", "jetmamba::CausalConv1d (layers.0.mixer.conv1d) cannot be lowered: kernel width 5 is outside 2..4"),
])  # fmt: skip
def test_compile_refusals(capsys, tmp_path, qdir, wide_conv_qdir, case, expect):
    out = tmp_path / "b"
    if case == "exists":
        out.mkdir()
        (out / "keep").write_text("x")
    model = {"neither": tmp_path, "unlowerable": wide_conv_qdir}.get(case, qdir)
    if case == "bundle":
        model = tmp_path / "made"
        assert run(capsys, "compile", "--model", str(qdir), "--board", "thor", "--out", str(model))[0] == 0
    board = "orin-mega" if case == "board" else "orin-nano-8gb"
    extra = ["--dtype", "fp16"] if case == "dtype" else []
    code, _, err = run(capsys, "compile", "--model", str(model), "--board", board, "--out", str(out), *extra)
    assert code != 0 and expect in err and len(err.strip().splitlines()) == 1, err
    assert (out / "keep").exists() if case == "exists" else not out.exists()
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no hidden temporary left behind


def test_compile_an_fp_checkpoint(capsys, tmp_path, mamba2_fixture, wikitext_test):
    """The unquantized baseline: an fp16 bundle whose perplexity is the fp model's."""
    bundle = tmp_path / "fp16"
    code, out, err = run(capsys, "compile", "--model", str(mamba2_fixture), "--board", "orin-nano-8gb",
                         "--out", str(bundle), "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["recipe"] == "fp16"
    assert main(["inspect", "--model", str(bundle), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["ops"]["jetmamba::SSDScanFp"] == 4 and "QuantizeLinear" not in info["ops"]
    assert info["io"]["inputs"][1]["dtype"] == "float16"  # conv state in the float type
    ppl = {}
    for name, model in (("bundle", bundle), ("fp32", mamba2_fixture)):
        code, out, err = run(capsys, "eval", "--model", str(model), "--data", str(wikitext_test), "--seq-len", "256",
                             "--max-tokens", "4096", "--json")  # fmt: skip
        assert code == 0, err
        ppl[name] = json.loads(out)["perplexity"]
    assert abs(ppl["bundle"] / ppl["fp32"] - 1) <= 1e-3, ppl


def test_eval_refuses_a_tampered_bundle(capsys, tmp_path, qdir, wikitext_test):
    bundle = tmp_path / "b"
    assert run(capsys, "compile", "--model", str(qdir), "--board", "orin-nano-8gb", "--out", str(bundle))[0] == 0
    data = bytearray((bundle / "weights.bin").read_bytes())
    data[100] ^= 1
    (bundle / "weights.bin").write_bytes(bytes(data))
    code, _, err = run(capsys, "eval", "--model", str(bundle), "--data", str(wikitext_test), "--max-tokens", "512")
    assert code != 0 and "sha256" in err and len(err.strip().splitlines()) == 1


def test_compile_and_plan_a_4bit_model(capsys, tmp_path, mamba2_fixture):
    """A W4AX QuantizedModel compiles (W4A8Linear and W4A16Linear plugins in one graph) and `plan`
    costs the bundle with its real weights.bin bytes."""
    q4, bundle = tmp_path / "q4", tmp_path / "b4"
    argv = ["quantize", "--model", str(mamba2_fixture), "--recipe", "w4ax-quamba2", "--calib", "self"]
    assert main([*argv, "--samples", "2", "--calib-seq-len", "64", "--out", str(q4), "-q"]) == 0
    code, _, err = run(capsys, "compile", "--model", str(q4), "--board", "orin-nano-8gb", "--out", str(bundle))
    assert code == 0, err
    assert main(["inspect", "--model", str(bundle), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["recipe"] == "w4ax-quamba2" and info["ops"]["jetmamba::W4A16Linear"] == 2  # one W4A16 layer
    assert info["ops"]["jetmamba::W4A8Linear"] == 6
    assert main(["plan", "--model", str(bundle), "--board", "orin-nano-8gb", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)[0]
    assert (first["recipe"], first["weight_source"]) == ("w4ax-quamba2", "bundle")
    assert first["weight_bytes"] == (bundle / "weights.bin").stat().st_size
