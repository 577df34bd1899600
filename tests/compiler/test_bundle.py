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


def test_int8_ssm_state_bundle(bundle, mamba1_fixture, tmp_path):
    """ssm_state_dtype="int8": the manifest's contract names the scales, the bundle verifies and
    runs (zero codes and scales = a new sequence); a Mamba2 model is refused before anything is
    written, as is an unknown dtype."""
    from jetmamba.errors import UnsupportedError, UsageError

    q2, _ = bundle
    with pytest.raises(UnsupportedError, match="SSDScan has no int8 state"):
        write_bundle(q2, tmp_path / "m2", board="orin-nano-8gb", ssm_state_dtype="int8")
    with pytest.raises(UsageError, match="ssm_state_dtype"):
        write_bundle(q2, tmp_path / "m2", board="orin-nano-8gb", ssm_state_dtype="bfloat16")
    assert not (tmp_path / "m2").exists()
    windows = torch.randint(0, 256, (4, 128), generator=torch.Generator().manual_seed(0))
    q1 = quantize_model(load_model(mamba1_fixture), RECIPES["w8a8-quamba"], windows, show_progress=False)
    manifest = write_bundle(q1, tmp_path / "m1", board="orin-nano-8gb", ssm_state_dtype="int8")
    ins = {t["name"]: t for t in manifest["io"]["inputs"]}
    outs = {t["name"] for t in manifest["io"]["outputs"]}
    assert ins["ssm_state.0"]["dtype"] == "int8"
    assert ins["ssm_state_scale.0"] == {"name": "ssm_state_scale.0", "dtype": "float32",
                                        "shape": ["batch", q1.config.d_inner]}  # fmt: skip
    assert {"ssm_state_out.3", "ssm_state_scale_out.3"} <= outs
    verify_bundle(tmp_path / "m1")
    _, model = load_bundle(tmp_path / "m1")
    ids = torch.randint(0, 256, (1, 48), generator=torch.Generator().manual_seed(5))
    got, want = model(ids), q1(ids)  # one prefill call: the state stays fp32 inside the scan
    assert float(((got - want) ** 2).sum() / (want**2).sum()) <= 1e-4


# ---------------------------------------------------------------- 4-bit bundles


def test_w4ax_bundle_runs_like_the_simulation(mamba2_fixture, tmp_path):
    """A mixed W4A8 / W4A16 model: the manifest's contract has each layer's conv state dtype, and
    the bundle runs like the QuantizedModel."""
    windows = torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(0))
    q = quantize_model(load_model(mamba2_fixture), RECIPES["w4ax-quamba2"], windows, show_progress=False)
    manifest = write_bundle(q, tmp_path / "b", board="orin-nano-8gb")
    conv = [t["dtype"] for t in manifest["io"]["inputs"] if t["name"].startswith("conv_state.")]
    assert conv == ["int8" if bits == 8 else "float16" for bits in q.layer_act_bits] and len(set(conv)) == 2
    assert manifest["recipe"]["weight_bits"] == 4
    _, model = load_bundle(tmp_path / "b")
    ids = torch.randint(0, 256, (1, 48), generator=torch.Generator().manual_seed(5))
    got, want = model(ids), q(ids)
    assert float(((got - want) ** 2).sum() / (want**2).sum()) <= 1e-4


def _layer_weight_bytes(bundle) -> int:
    """Bytes in weights.bin of the per-layer initializers (``layers.*``) of a bundle's graph."""
    import onnx

    graph = onnx.load(str(bundle / "model.onnx"), load_external_data=False).graph
    return sum(
        int(next(e.value for e in t.external_data if e.key == "length"))
        for t in graph.initializer
        if t.name.startswith("layers.") and t.external_data
    )


def test_w4a16_layers_are_a_quarter_of_fp16(tmp_path):
    """mamba-790m's layer shape (d_model 1536, d_inner 3072, dt_rank 96), two layers, random
    weights: the W4A16 bundle's layer weights are about a quarter of the fp16 bundle's (4 bits a
    weight + an fp16 scale per 128, fp16 dt_proj and conv). The whole 48-layer figure is measured
    in docs/benchmarks.md."""
    from jetmamba.calibration.arch.mamba1 import Mamba1Config
    from jetmamba.calibration.model import MambaLM

    config = Mamba1Config(d_model=1536, n_layer=2, vocab_size=256, d_inner=3072, d_state=16, dt_rank=96)
    model = MambaLM(config, dtype=torch.float16).init_weights(0)
    windows = torch.randint(0, 256, (1, 32), generator=torch.Generator().manual_seed(0))
    q = quantize_model(model, RECIPES["w4a16-rtn"], windows, show_progress=False)
    write_bundle(q, tmp_path / "w4", board="orin-nano-8gb")
    write_bundle(model, tmp_path / "fp16", board="orin-nano-8gb", dtype=torch.float16)
    ratio = _layer_weight_bytes(tmp_path / "w4") / _layer_weight_bytes(tmp_path / "fp16")
    assert 0.25 < ratio < 0.285, ratio  # 0.279 measured (and on the 48-layer model)
