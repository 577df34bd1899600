"""Checkpoint loading: every format users have, and a one-line error for everything else."""

from __future__ import annotations

import json
import shutil
import struct

import pytest
import torch
from hf_oracle import hf_logits, random_hf_model, save_random_checkpoint
from tolerances import assert_close

from jetmamba.calibration.checkpoint import load_model, open_checkpoint, save_checkpoint
from jetmamba.errors import CheckpointError, JetmambaError, UnsupportedError

pytest.importorskip("transformers")

IDS = torch.randint(0, 50, (2, 23), generator=torch.Generator().manual_seed(0))


def _same_as(model_dir, hf_model):
    ours = load_model(model_dir)
    with torch.no_grad():
        assert_close(ours(IDS), hf_logits(hf_model, IDS), "logits.vs_transformers")
    return ours


# ---------------------------------------------------------------- formats


@pytest.mark.parametrize(
    "save_kwargs,files",
    [
        ({}, {"model.safetensors"}),
        ({"max_shard_size": "20KB"}, {"model.safetensors.index.json"}),
        ({"weights": "bin"}, {"pytorch_model.bin"}),
    ],
    ids=["safetensors", "sharded-safetensors", "pytorch_model.bin"],
)
def test_hf_weight_formats(tmp_path, save_kwargs, files):
    hf = save_random_checkpoint("mamba1", tmp_path, **save_kwargs)
    present = {p.name for p in tmp_path.iterdir()}
    assert files <= present, present
    _same_as(tmp_path, hf)


def test_sharded_bin_with_index(tmp_path):
    hf = random_hf_model("mamba2-groups")
    sd = {f"backbone.{k}" if not k.startswith(("backbone.", "lm_head")) else k: v for k, v in hf.state_dict().items()}
    names = sorted(sd)
    halves = {"pytorch_model-00001-of-00002.bin": names[::2], "pytorch_model-00002-of-00002.bin": names[1::2]}
    weight_map = {}
    for fname, keys in halves.items():
        torch.save({k: sd[k] for k in keys}, tmp_path / fname)
        weight_map.update({k: fname for k in keys})
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    hf.config.to_json_file(tmp_path / "config.json")
    _same_as(tmp_path, hf)


@pytest.mark.parametrize("name", ["mamba1", "mamba1-bias-untied", "mamba2-groups", "mamba2-g4-untied-limit"])
def test_mamba_ssm_format_roundtrip(tmp_path, name):
    hf = save_random_checkpoint(name, tmp_path / "hf")
    save_checkpoint(load_model(tmp_path / "hf"), tmp_path / "ssm", format="mamba_ssm")
    raw = json.loads((tmp_path / "ssm" / "config.json").read_text())
    assert "d_model" in raw and "model_type" not in raw
    ckpt = open_checkpoint(tmp_path / "ssm")
    assert ckpt.format == "mamba_ssm" and ckpt.weights.kind == "bin"
    _same_as(tmp_path / "ssm", hf)


def test_mamba_ssm_config_as_released(tmp_path):
    """A config written the way state-spaces/mamba-* ships it: few keys, padded vocabulary."""
    hf = random_hf_model("mamba1")  # vocab 97 -> padded to 104 by pad_vocab_size_multiple 8
    sd = hf.state_dict()
    emb = sd["backbone.embeddings.weight"]
    padded = torch.cat([emb, torch.zeros(104 - 97, emb.shape[1])])
    weights = {("backbone.embedding.weight" if k == "backbone.embeddings.weight" else k): v for k, v in sd.items()}
    weights["backbone.embedding.weight"] = padded
    weights["lm_head.weight"] = padded
    torch.save(weights, tmp_path / "pytorch_model.bin")
    c = hf.config
    (tmp_path / "config.json").write_text(json.dumps({
        "d_model": c.hidden_size, "n_layer": c.num_hidden_layers, "vocab_size": 97,
        "ssm_cfg": {"d_state": c.state_size}, "rms_norm": True, "residual_in_fp32": True,
        "fused_add_norm": True, "pad_vocab_size_multiple": 8,
    }))  # fmt: skip
    ours = load_model(tmp_path)
    assert ours.config.vocab_size == 104
    with torch.no_grad():
        assert_close(ours(IDS)[..., :97], hf_logits(hf, IDS), "logits.vs_transformers")


def test_saved_hf_checkpoint_loads_in_transformers(tmp_path):
    from hf_oracle import hf_classes

    ours = load_model(save_random_checkpoint("falcon_mamba", tmp_path / "a") and tmp_path / "a")
    save_checkpoint(ours, tmp_path / "b", format="hf")
    theirs = hf_classes("falcon_mamba")[1].from_pretrained(tmp_path / "b", dtype=torch.float32).eval()
    with torch.no_grad():
        assert_close(ours(IDS), hf_logits(theirs, IDS), "logits.vs_transformers")


def test_save_is_atomic_and_replaces(tmp_path):
    model = load_model(save_random_checkpoint("mamba1", tmp_path / "src") and tmp_path / "src")
    out = tmp_path / "out"
    save_checkpoint(model, out)
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(UnsupportedError):
        save_checkpoint(model, out, format="gguf")
    assert (out / "model.safetensors").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------- the hub cache


def _fake_hub_cache(cache, repo_id, src):
    org, name = repo_id.split("/")
    repo = cache / f"models--{org}--{name}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    shutil.copytree(src, repo / "snapshots" / "abc123")


def test_hub_id_from_local_cache(tmp_path, monkeypatch):
    hf = save_random_checkpoint("mamba1", tmp_path / "src")
    _fake_hub_cache(tmp_path / "cache", "someorg/tiny-mamba", tmp_path / "src")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _same_as("someorg/tiny-mamba", hf)


def test_hub_id_not_cached_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(CheckpointError, match="not in the local Hugging Face cache.*pass its directory"):
        open_checkpoint("state-spaces/mamba-130m")


# ---------------------------------------------------------------- bad input


@pytest.fixture
def good(tmp_path):
    save_random_checkpoint("mamba1", tmp_path / "good")
    return tmp_path / "good"


def _edit_config(path, **changes):
    cfg = json.loads((path / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (path / "config.json").write_text(json.dumps(cfg))


def _error(spec) -> str:
    with pytest.raises(JetmambaError) as info:
        load_model(spec)
    msg = str(info.value)
    assert "\n" not in msg and msg
    return msg


def test_missing_directory(tmp_path):
    assert "no such directory" in _error(tmp_path / "nope")


def test_file_instead_of_directory(good):
    assert "not a directory" in _error(good / "config.json")


def test_missing_config(good):
    (good / "config.json").unlink()
    assert "no config.json" in _error(good)


def test_config_not_json(good):
    (good / "config.json").write_text("{not json")
    assert "not valid JSON" in _error(good)


def test_config_neither_format(good):
    (good / "config.json").write_text(json.dumps({"hidden_size": 4}))
    assert "neither a Hugging Face Mamba config" in _error(good)


def test_not_a_mamba_model(good):
    _edit_config(good, model_type="llama")
    assert "'llama' is not a Mamba model" in _error(good)


@pytest.mark.parametrize(
    "change,expect",
    [
        ({"hidden_act": "gelu"}, "only silu"),
        ({"hidden_size": "big"}, "'hidden_size' must be an integer"),
        ({"num_hidden_layers": 0}, "'num_hidden_layers' must be an integer >= 1"),
        ({"hidden_size": None}, "missing 'hidden_size'"),
        ({"residual_in_fp32": "yes"}, "must be true or false"),
    ],
)
def test_bad_config_values(good, change, expect):
    _edit_config(good, **change)
    assert expect in _error(good)


@pytest.mark.parametrize(
    "raw,expect",
    [
        ({"d_intermediate": 1024}, "MLP blocks"),
        ({"attn_layer_idx": [3]}, "attention layers"),
        ({"rms_norm": False}, "LayerNorm"),
        ({"ssm_cfg": {"layer": "Mamba3"}}, "'Mamba3' is not supported"),
        ({"ssm_cfg": {"layer": "Mamba2", "norm_before_gate": True}}, "norm_before_gate"),
        ({"ssm_cfg": {"layer": "Mamba2", "D_has_hdim": True}}, "D per channel"),
        ({"ssm_cfg": {"layer": "Mamba2", "headdim": 7}}, "headdim 7 does not divide"),
    ],
)
def test_unsupported_mamba_ssm_options(tmp_path, raw, expect):
    tmp_path.joinpath("config.json").write_text(json.dumps({"d_model": 64, "n_layer": 2, "vocab_size": 256, **raw}))
    with pytest.raises(JetmambaError, match=expect):
        open_checkpoint(tmp_path)


def test_mamba2_heads_must_tile_width(tmp_path):
    save_random_checkpoint("mamba2-groups", tmp_path)
    _edit_config(tmp_path, num_heads=5)
    assert "num_heads * head_dim" in _error(tmp_path)


def test_no_weights_file(good):
    (good / "model.safetensors").unlink()
    assert "no weights file" in _error(good)


def test_truncated_safetensors(good):
    f = good / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    assert "truncated" in _error(good)


def test_tiny_truncated_safetensors(good):
    (good / "model.safetensors").write_bytes(b"\x01\x02")
    assert "truncated" in _error(good)


def test_corrupt_safetensors_header(good):
    f = good / "model.safetensors"
    data = f.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    f.write_bytes(data[:8] + b"{" * n + data[8 + n :])
    assert "corrupt safetensors header" in _error(good)


def test_config_disagrees_with_weights_names_the_tensor(good):
    _edit_config(good, state_size=4)
    msg = _error(good)
    assert "A_log" in msg and "[" in msg and "config" in msg, msg


def test_untied_config_with_tied_weights(good):
    _edit_config(good, tie_word_embeddings=False)
    assert "lm_head.weight" in _error(good)


def test_unexpected_tensor(good):
    from safetensors.torch import load_file, save_file

    sd = load_file(good / "model.safetensors")
    sd["backbone.layers.0.mixer.extra.weight"] = torch.zeros(2)
    save_file(sd, good / "model.safetensors")
    assert "does not use" in _error(good)


def test_corrupt_bin(tmp_path):
    save_random_checkpoint("mamba1", tmp_path, weights="bin")
    (tmp_path / "pytorch_model.bin").write_bytes(b"PK\x03\x04 definitely not a zip archive")
    assert "cannot be read as PyTorch weights" in _error(tmp_path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickle_with_code_is_refused(tmp_path):
    """weights_only=True: a pickle that would run code on load is refused, not executed."""
    import os
    import pickle

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    save_random_checkpoint("mamba1", tmp_path, weights="bin")
    with open(tmp_path / "pytorch_model.bin", "wb") as f:
        pickle.dump({"x": Exploit()}, f)
    assert "cannot be read as PyTorch weights" in _error(tmp_path)
    assert not (tmp_path / "pwned").exists()


def test_shard_index_escaping_directory(tmp_path):
    save_random_checkpoint("mamba1", tmp_path / "m", max_shard_size="20KB")
    index = tmp_path / "m" / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    first = next(iter(data["weight_map"]))
    data["weight_map"][first] = "../outside.safetensors"
    (tmp_path / "outside.safetensors").write_bytes(b"x")
    index.write_text(json.dumps(data))
    assert "outside the checkpoint directory" in _error(tmp_path / "m")
