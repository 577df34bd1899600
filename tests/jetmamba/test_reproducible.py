"""The same inputs and seed give byte-identical QuantizedModels and bundles, and the artifacts
record the versions that made them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jetmamba.cli import main


def _files(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def valid():
    from shared import shared_path

    return str(shared_path("data", "wikitext2-valid.txt"))


def _quantize(model, recipe, calib, out, seed=0):
    argv = ["quantize", "--model", str(model), "--recipe", recipe, "--calib", calib, "--samples", "4",
            "--calib-seq-len", "128", "--seed", str(seed), "--out", str(out), "-q"]  # fmt: skip
    assert main(argv) == 0


def _compile(model, out, *extra):
    assert main(["compile", "--model", str(model), "--board", "orin-nano-8gb", "--out", str(out), "-q", *extra]) == 0


# MambaQuant's KLT and Quamba2's sort-and-cluster are the data-dependent transforms; both recipes
# also draw random rotation signs from the recipe's seed
@pytest.mark.parametrize("fixture, recipe", [("mamba1_fixture", "w8a8-mambaquant"),
                                             ("mamba2_fixture", "w8a8-quamba2")])  # fmt: skip
def test_quantize_and_compile_are_byte_identical(tmp_path, request, valid, fixture, recipe):
    model = request.getfixturevalue(fixture)
    _quantize(model, recipe, valid, tmp_path / "q1")
    _quantize(model, recipe, valid, tmp_path / "q2")
    assert _files(tmp_path / "q1") == _files(tmp_path / "q2")
    _compile(tmp_path / "q1", tmp_path / "b1")
    _compile(tmp_path / "q1", tmp_path / "b2")
    assert _files(tmp_path / "b1") == _files(tmp_path / "b2")

    # the comparison can fail: other calibration windows give another model
    _quantize(model, recipe, valid, tmp_path / "q3", seed=1)
    assert _files(tmp_path / "q3")["tensors.safetensors"] != _files(tmp_path / "q1")["tensors.safetensors"]


def test_unquantized_bundle_is_byte_identical(tmp_path, mamba1_fixture):
    _compile(mamba1_fixture, tmp_path / "b1")
    _compile(mamba1_fixture, tmp_path / "b2")
    assert _files(tmp_path / "b1") == _files(tmp_path / "b2")


def test_artifacts_record_the_versions_and_the_recipe(tmp_path, mamba2_fixture, valid):
    import onnx
    import torch

    from jetmamba import __version__

    _quantize(mamba2_fixture, "w8a8-quamba2", valid, tmp_path / "q")
    _compile(tmp_path / "q", tmp_path / "b")
    q = json.loads((tmp_path / "q" / "quantized.json").read_text())
    assert (q["jetmamba"], q["torch"], q["recipe"]["name"]) == (__version__, torch.__version__, "w8a8-quamba2")
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert m["jetmamba"] == __version__ and m["recipe"]["name"] == "w8a8-quamba2"
    assert (m["versions"]["torch"], m["versions"]["onnx"]) == (torch.__version__, onnx.__version__)
