"""Hostile config.json files: wrong types, missing keys, huge, zero, negative or non-integer
sizes, broken JSON, binary. Each one is refused with one line naming the file (and the field),
before any model is built; a config that passes is a model within jetmamba.limits."""

from __future__ import annotations

import json

import pytest
from fuzz import bad_json_bytes, corrupted_dict, fuzz
from hypothesis import given
from hypothesis import strategies as st

from jetmamba.calibration.arch import adapter_for, config_from_dict
from jetmamba.calibration.checkpoint import expected_tensors, read_config
from jetmamba.errors import CheckpointError, JetmambaError
from jetmamba.limits import LIMITS, implied_parameters


def _hf(fixture) -> dict:
    text = (fixture / "config.json").read_text()
    return json.loads(text)


def _write(tmp_path_factory, raw: bytes | dict):
    d = tmp_path_factory.mktemp("cfg")
    data = raw if isinstance(raw, bytes) else json.dumps(raw, allow_nan=True).encode()
    (d / "config.json").write_bytes(data)
    return d


def _read_or_refuse(d):
    """read_config's two outcomes: a config within the bounds, or one line naming the file."""
    try:
        config, _, _ = read_config(d)
    except JetmambaError as exc:
        message = str(exc)
        assert message.startswith(str(d / "config.json")), message
        assert "\n" not in message
        return None
    for name, value in config.to_dict().items():
        if isinstance(value, int) and not isinstance(value, bool):
            assert 1 <= value <= LIMITS.config_field(name) or name == "arch"
    c = config
    assert implied_parameters(c.d_model, c.n_layer, c.vocab_size, c.d_inner, c.tie_embeddings) <= LIMITS.parameters
    expected_tensors(config)  # the meta model builds
    return config


@pytest.mark.parametrize("arch", ["mamba1", "mamba2"])
def test_fixture_configs_read(arch, mamba1_fixture, mamba2_fixture):
    fixture = mamba1_fixture if arch == "mamba1" else mamba2_fixture
    assert read_config(fixture)[0].arch == arch


@fuzz(150)
@given(data=st.data(), arch=st.sampled_from(["mamba1", "mamba2"]))
def test_hf_config_fields_corrupted(tmp_path_factory, mamba1_fixture, mamba2_fixture, data, arch):
    base = _hf(mamba1_fixture if arch == "mamba1" else mamba2_fixture)
    _read_or_refuse(_write(tmp_path_factory, data.draw(corrupted_dict(base))))


@fuzz(100)
@given(data=st.data(), arch=st.sampled_from(["mamba1", "mamba2"]))
def test_mamba_ssm_config_fields_corrupted(tmp_path_factory, mamba1_fixture, mamba2_fixture, data, arch):
    config = read_config(mamba1_fixture if arch == "mamba1" else mamba2_fixture)[0]
    base = json.loads(json.dumps(adapter_for(config).mamba_ssm_config(config)))
    keys = sorted(base) + [f"ssm_cfg.{k}" for k in base["ssm_cfg"]]
    _read_or_refuse(_write(tmp_path_factory, data.draw(corrupted_dict(base, keys))))


@fuzz(60)
@given(raw=bad_json_bytes)
def test_config_json_not_json(tmp_path_factory, raw):
    _read_or_refuse(_write(tmp_path_factory, raw))


@pytest.mark.parametrize(
    "field,value,expect",
    [
        ("hidden_size", 10**9, "d_model = 1000000000 is beyond"),
        ("num_hidden_layers", 10**7, "n_layer = 10000000 is beyond"),
        ("vocab_size", 2**40, "vocab_size = 1099511627776 is beyond"),
        ("hidden_size", 0, "'hidden_size' must be an integer >= 1, got 0"),
        ("num_hidden_layers", -3, "'num_hidden_layers' must be an integer >= 1, got -3"),
        ("hidden_size", 191.5, "'hidden_size' must be an integer >= 1, got 191.5"),
        ("hidden_size", "192", "'hidden_size' must be an integer >= 1, got '192'"),
        ("state_size", True, "'state_size' must be an integer >= 1, got True"),
        ("layer_norm_epsilon", "1e-5", "'layer_norm_epsilon' must be a number"),
        ("layer_norm_epsilon", float("nan"), "'layer_norm_epsilon' must be a number"),
        ("use_conv_bias", "yes", "'use_conv_bias' must be true or false"),
        ("model_type", ["mamba"], "model_type must be a string"),
        ("model_type", "llama", "model_type 'llama' is not a Mamba model"),
        ("expand", 10**6, "d_inner = 192000000 is beyond"),
    ],
)
def test_hand_cases(tmp_path_factory, mamba1_fixture, field, value, expect):
    raw = _hf(mamba1_fixture)
    raw[field] = value
    d = _write(tmp_path_factory, raw)
    with pytest.raises(JetmambaError) as info:
        read_config(d)
    assert str(info.value).startswith(str(d / "config.json")) and expect in str(info.value)


def test_parameter_bound(tmp_path_factory, mamba1_fixture):
    """Each size within its own bound, together beyond the parameters a model may have."""
    raw = _hf(mamba1_fixture)
    raw.update(hidden_size=LIMITS.d_model, expand=2, num_hidden_layers=LIMITS.n_layer)
    d = _write(tmp_path_factory, raw)
    with pytest.raises(CheckpointError, match="parameters, beyond jetmamba's bound"):
        read_config(d)


def test_missing_key_is_named(tmp_path_factory, mamba2_fixture):
    raw = _hf(mamba2_fixture)
    del raw["num_heads"]
    d = _write(tmp_path_factory, raw)
    with pytest.raises(CheckpointError, match=r"config.json: missing 'num_heads'"):
        read_config(d)


def test_oversized_config_is_not_read(tmp_path_factory):
    d = tmp_path_factory.mktemp("cfg")
    with open(d / "config.json", "wb") as f:
        f.truncate(LIMITS.config_json_bytes + 1)  # sparse: costs no disk
    with pytest.raises(CheckpointError, match="is not a model config"):
        read_config(d)


@fuzz(100)
@given(data=st.data(), arch=st.sampled_from(["mamba1", "mamba2"]))
def test_saved_model_config_corrupted(mamba1_fixture, mamba2_fixture, data, arch):
    """jetmamba's own saved config (in quantized.json and bundle manifests) through config_from_dict."""
    config = read_config(mamba1_fixture if arch == "mamba1" else mamba2_fixture)[0]
    d = data.draw(corrupted_dict(config.to_dict()))
    try:
        c = config_from_dict(d)
    except JetmambaError as exc:
        assert "\n" not in str(exc)
        return
    assert implied_parameters(c.d_model, c.n_layer, c.vocab_size, c.d_inner, c.tie_embeddings) <= LIMITS.parameters
    expected_tensors(c)
