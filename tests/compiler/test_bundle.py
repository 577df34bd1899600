"""Bundles: written whole, verified before use, refused when tampered with; ORT runs them."""

from __future__ import annotations

import json

import pytest
import torch

from jetmamba.calibration.checkpoint import load_model
from jetmamba.calibration.quantize import quantize_model
from jetmamba.calibration.recipes import RECIPES
from jetmamba.compiler.bundle import MANIFEST, BundleError, load_bundle, verify_bundle, write_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, mamba2_fixture):
    windows = torch.randint(0, 256, (4, 128), generator=torch.Generator().manual_seed(0))
    q = quantize_model(load_model(mamba2_fixture), RECIPES["w8a8-quamba2"], windows, show_progress=False)
    out = tmp_path_factory.mktemp("b") / "bundle"
    write_bundle(q, out, board="orin-nano-8gb")  # a byte-level model: no tokenizer file
    return q, out


def test_bundle_runs_like_the_simulation(bundle):
    q, out = bundle
    manifest, model = load_bundle(out)
    assert manifest["board"] == {"name": "orin-nano-8gb", "gpu_arch": "sm_87"}
    assert {"model.onnx", "model.trt.onnx", "weights.bin"} <= set(manifest["files"]) and manifest["tokenizer"] is None
    assert any(name.startswith("plugins/common/") for name in manifest["files"])
    ids = torch.randint(0, 256, (1, 48), generator=torch.Generator().manual_seed(5))
    got, want = model(ids), q(ids)
    assert float(((got - want) ** 2).sum() / (want**2).sum()) <= 1e-4


def test_tensorrt_graph_shares_the_weights(bundle):
    import onnx

    _, out = bundle
    trt = onnx.load(str(out / "model.trt.onnx"), load_external_data=False)
    assert not trt.functions
    locations = {e.value for i in trt.graph.initializer for e in i.external_data if e.key == "location"}
    assert locations == {"weights.bin"}
    assert (out / "model.trt.onnx").stat().st_size < (out / "weights.bin").stat().st_size


def _copy(out, tmp_path):
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(out, dst)
    return dst


@pytest.mark.parametrize("damage,expect", [
    ("flip_weights", "does not match its sha256"),
    ("truncate_graph", "bytes"),
    ("escape_path", "not a path inside the bundle"),
    ("absolute_path", "not a path inside the bundle"),
    ("drop_file", "is missing"),
    ("bad_json", "not valid JSON"),
    ("future_version", "format_version"),
])  # fmt: skip
def test_tampered_bundles_are_refused(bundle, tmp_path, damage, expect):
    _, out = bundle
    d = _copy(out, tmp_path)
    manifest = json.loads((d / MANIFEST).read_text())
    if damage == "flip_weights":
        data = bytearray((d / "weights.bin").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (d / "weights.bin").write_bytes(bytes(data))
    elif damage == "truncate_graph":
        (d / "model.onnx").write_bytes((d / "model.onnx").read_bytes()[:-10])
    elif damage in ("escape_path", "absolute_path"):
        manifest["files"]["../outside" if damage == "escape_path" else "/etc/passwd"] = {"bytes": 1, "sha256": "0"}
    elif damage == "drop_file":
        (d / "model.trt.onnx").unlink()
    elif damage == "future_version":
        manifest["format_version"] = 99
    if damage in ("escape_path", "absolute_path", "future_version"):
        (d / MANIFEST).write_text(json.dumps(manifest))
    if damage == "bad_json":
        (d / MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match=expect):
        verify_bundle(d)


def test_unknown_board_writes_nothing(bundle, tmp_path):
    from jetmamba.errors import UsageError

    q, _ = bundle
    with pytest.raises(UsageError, match="unknown board"):
        write_bundle(q, tmp_path / "b", board="orin-mega")
    assert not (tmp_path / "b").exists()
