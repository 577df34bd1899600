"""Hostile QuantizedModel directories: quantized.json with any field corrupted, broken JSON, a
model config beyond the bounds, a tensors file that disagrees. Each is a one-line
CheckpointError; nothing is allocated from the manifest before the tensors file's header agrees."""

from __future__ import annotations

import json
import shutil
import struct

import pytest
import torch
from fuzz import bad_json_bytes, corrupted_dict, fuzz
from hypothesis import given
from hypothesis import strategies as st

from jetmamba.calibration.checkpoint import load_model
from jetmamba.calibration.quantize import quantize_model
from jetmamba.calibration.quantized import MANIFEST, TENSORS, QuantizedModel
from jetmamba.calibration.recipes import RECIPES
from jetmamba.errors import CheckpointError


@pytest.fixture(scope="module")
def saved(tmp_path_factory, mamba1_fixture):
    windows = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(0))
    q = quantize_model(load_model(mamba1_fixture), RECIPES["w8a8-quamba"], windows, show_progress=False)
    out = tmp_path_factory.mktemp("q") / "model"
    q.save(out)
    return out


def _copy(saved, tmp_path_factory, manifest: bytes | dict | None = None):
    d = tmp_path_factory.mktemp("qc") / "model"
    shutil.copytree(saved, d)
    if manifest is not None:
        data = manifest if isinstance(manifest, bytes) else json.dumps(manifest, allow_nan=True).encode()
        (d / MANIFEST).write_bytes(data)
    return d


def _load_or_refuse(d):
    try:
        model = QuantizedModel.load(d)
    except CheckpointError as exc:
        assert str(d) in str(exc) and "\n" not in str(exc), str(exc)
        return None
    return model


def test_saved_model_loads(saved):
    assert QuantizedModel.load(saved).config.arch == "mamba1"


@fuzz(120)
@given(data=st.data())
def test_manifest_fields_corrupted(saved, tmp_path_factory, data):
    base = json.loads((saved / MANIFEST).read_text())
    keys = (
        sorted(base)
        + [f"config.{k}" for k in base["config"]]
        + ["recipe.name", "recipe.act_bits", "recipe.weight_bits", "recipe.percentile"]
    )
    manifest = data.draw(corrupted_dict(base, keys))
    model = _load_or_refuse(_copy(saved, tmp_path_factory, manifest))
    if model is not None:  # a change the tensors do not depend on (provenance, versions, tie_embeddings...)
        want = QuantizedModel.load(saved).state_dict()
        assert {k: (v.dtype, v.shape) for k, v in model.state_dict().items()} == {
            k: (v.dtype, v.shape) for k, v in want.items()
        }


@fuzz(40)
@given(raw=bad_json_bytes)
def test_manifest_not_json(saved, tmp_path_factory, raw):
    with pytest.raises(CheckpointError, match="quantized.json"):
        QuantizedModel.load(_copy(saved, tmp_path_factory, raw))


@fuzz(40)
@given(cut=st.integers(0, 10**7), flip=st.integers(0, 10**6))
def test_tensors_file_corrupted(saved, tmp_path_factory, cut, flip):
    """The tensors file cut short or with a header byte changed."""
    d = _copy(saved, tmp_path_factory)
    raw = bytearray((d / TENSORS).read_bytes())
    n = struct.unpack("<Q", raw[:8])[0]
    raw[8 + flip % n] ^= 0x21
    (d / TENSORS).write_bytes(bytes(raw[: cut % len(raw)]))
    with pytest.raises(CheckpointError, match=TENSORS):
        QuantizedModel.load(d)


@pytest.mark.parametrize(
    "field,value,expect",
    [
        ("vocab_size", 2**40, "vocab_size = 1099511627776 is beyond"),
        ("d_model", 10**9, "d_model = 1000000000 is beyond"),
        ("n_layer", 10**7, "n_layer = 10000000 is beyond"),
        ("d_state", 0, "d_state must be a positive integer"),
        ("d_inner", -384, "d_inner must be a positive integer"),
        ("d_inner", 384.0, "d_inner must be a positive integer"),
        ("norm_eps", "small", "norm_eps must be a finite number"),
        ("arch", 7, "'arch' must be a string"),
    ],
)
def test_config_hand_cases(saved, tmp_path_factory, field, value, expect):
    manifest = json.loads((saved / MANIFEST).read_text())
    manifest["config"][field] = value
    with pytest.raises(CheckpointError, match=expect):
        QuantizedModel.load(_copy(saved, tmp_path_factory, manifest))


@pytest.mark.parametrize("act_dtype", ["zeros", "nn", "int8", 16, None])
def test_act_dtype_is_a_known_name(saved, tmp_path_factory, act_dtype):
    manifest = json.loads((saved / MANIFEST).read_text())
    manifest["act_dtype"] = act_dtype
    with pytest.raises(CheckpointError, match="act_dtype|not a valid"):
        QuantizedModel.load(_copy(saved, tmp_path_factory, manifest))


def test_nothing_is_allocated_before_the_header_agrees(saved, tmp_path_factory, monkeypatch):
    """A manifest within the bounds but far larger than its tensors file (a vocabulary of 2^21 rows:
    1.5 GB of tables): the model is built on the meta device only, then refused."""
    manifest = json.loads((saved / MANIFEST).read_text())
    manifest["config"]["vocab_size"] = 1 << 21
    devices = []
    init = QuantizedModel.__init__

    def recording(self, *args, device=None, **kwargs):
        devices.append(str(device))
        init(self, *args, device=device, **kwargs)

    monkeypatch.setattr(QuantizedModel, "__init__", recording)
    with pytest.raises(CheckpointError, match="tensors do not match the manifest's model"):
        QuantizedModel.load(_copy(saved, tmp_path_factory, manifest))
    assert devices == ["meta"]
