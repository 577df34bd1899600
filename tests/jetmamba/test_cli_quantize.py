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
    by_name = {r["recipe"]: r for r in rows}  # the 4-bit recipes for Mamba1 are compared too, and are smaller
    assert {"w4a16-rtn", "w4a8-rtn", "w4a8-mambaquant"} <= set(by_name)
    assert by_name["w4a8-mambaquant"]["weight_bytes"] < by_name["w8a8-mambaquant"]["weight_bytes"]


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


def test_force_replaces_only_an_earlier_quantized_model(capsys, tmp_path, mamba1_fixture, valid):
    out = tmp_path / "q"
    out.mkdir()
    (out / "keep").write_text("x")  # a directory of the user's, not a QuantizedModel
    argv = ["quantize", "--model", str(mamba1_fixture), "--recipe", "w8a8-naive", "--calib", valid,
            "--samples", "2", "--calib-seq-len", "64", "--out", str(out), "--force"]  # fmt: skip
    code, _, err = run(capsys, *argv)
    assert code == 2 and "is not a QuantizedModel" in err and (out / "keep").read_text() == "x"
    (out / "keep").unlink()  # an empty directory may be filled
    code, _, err = run(capsys, *argv)
    assert code == 0, err
    code, _, err = run(capsys, *argv)  # and an earlier QuantizedModel replaced
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q"]


def test_recipe_for_another_architecture_is_refused(capsys, tmp_path, mamba1_fixture, valid):
    code, _, err = run(capsys, "quantize", "--model", str(mamba1_fixture), "--recipe", "w8a8-quamba2",
                       "--calib", valid, "--samples", "2", "--out", str(tmp_path / "q"))  # fmt: skip
    assert code != 0 and "does not apply to mamba1" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "q").exists()


def test_non_finite_weight_is_named(capsys, tmp_path, mamba1_fixture, valid):
    import shutil

    from safetensors.torch import load_file, save_file

    bad = tmp_path / "bad"
    shutil.copytree(mamba1_fixture, bad)
    weights = next(bad.glob("*.safetensors"))
    tensors = load_file(str(weights))
    key = next(k for k in tensors if "layers.2." in k and "in_proj" in k)
    tensors[key][5, 7] = float("nan")
    save_file(tensors, str(weights), metadata={"format": "pt"})
    code, _, err = run(capsys, "quantize", "--model", str(bad), "--recipe", "w8a8-quamba",
                       "--calib", valid, "--samples", "2", "--out", str(tmp_path / "q"))  # fmt: skip
    assert code != 0 and "non-finite weight" in err and "layers.2.mixer.in_proj" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "q").exists()


def test_non_finite_activation_is_named(tmp_path, mamba1_fixture, valid):
    """Finite weights whose products overflow fp32 inside layer 1: calibration names the site."""
    import torch

    from jetmamba.calibration.checkpoint import load_model
    from jetmamba.calibration.quantize import quantize_model
    from jetmamba.calibration.recipes import get_recipe
    from jetmamba.errors import DataError

    model = load_model(mamba1_fixture)
    with torch.no_grad():
        model.layers[1].mixer.x_proj.weight.mul_(1e30)
    windows = torch.randint(0, model.config.vocab_size, (2, 64))
    with pytest.raises(DataError, match=r"^layers\.1\.mixer\.\S+ has (NaN|Inf) on calibration window [01] \(of 2,"):
        quantize_model(model, get_recipe("w8a8-naive", "mamba1"), windows, show_progress=False)


def test_w4ax_budget_flag(capsys, tmp_path, mamba2_fixture, valid):
    out = tmp_path / "q"
    common = ["quantize", "--model", str(mamba2_fixture), "--recipe", "w4ax-quamba2", "--calib", valid,
              "--samples", "4", "--calib-seq-len", "128", "--out", str(out)]  # fmt: skip
    code, text, err = run(capsys, *common, "--w4a16-layers", "1", "--json")
    assert code == 0, err
    report = json.loads(text)
    assert sorted(report["layer_act_bits"]) == [8, 8, 8, 16]
    chosen = report["calibration"]["w4ax"]
    assert chosen["w4a16_layers"] == [report["layer_act_bits"].index(16)] and len(chosen["sensitivity"]) == 4
    for bad in ("9", "x", "1.5"):
        code, _, err = run(capsys, *common, "--force", "--w4a16-layers", bad)
        assert code != 0 and "--w4a16-layers" in err and "Traceback" not in err
