"""QuantizedModel: recipes meet their accuracy bounds, survive a save/load, decode like they prefill."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch

from jetmamba.calibration.checkpoint import load_model
from jetmamba.calibration.data import read_text, sample_windows, tokenize
from jetmamba.calibration.evaluate import perplexity
from jetmamba.calibration.quantize import quantize_model, transform
from jetmamba.calibration.quantized import QuantizedModel
from jetmamba.calibration.recipes import RECIPES, get_recipe
from jetmamba.calibration.tokenizer import ByteTokenizer
from jetmamba.errors import CheckpointError, UnsupportedError, UsageError

BOUND = 0.03  # tests assert every recipe but naive within 3 % of fp32 perplexity (docs record the figures)


@pytest.fixture(scope="module")
def data():
    from shared import shared_path

    tok = ByteTokenizer()
    calib = tokenize(read_text(shared_path("data", "wikitext2-valid.txt")), tok)
    test = tokenize(read_text(shared_path("data", "wikitext2-test.txt")), tok, max_tokens=16384)
    return sample_windows(calib, 24, 512, seed=0), test


@pytest.fixture(scope="module")
def mamba1(mamba1_fixture):
    return load_model(mamba1_fixture)


def _rel(q, fp, test):
    base = perplexity(fp, test, 512, show_progress=False).perplexity
    return perplexity(q, test, 512, show_progress=False).perplexity / base - 1


@pytest.fixture(scope="module")
def quamba(mamba1, data):
    return quantize_model(mamba1, RECIPES["w8a8-quamba"], data[0], show_progress=False)


@pytest.fixture(scope="module")
def mamba2(mamba2_fixture):
    return load_model(mamba2_fixture)


def test_quamba_within_bound(quamba, mamba1, data):
    assert abs(_rel(quamba, mamba1, data[1])) <= BOUND


@pytest.mark.parametrize("name", ["w8a8-naive", "w8a8-quamba", "w8a8-mambaquant", "w8a8-quamba2"])
def test_mamba2_recipes_within_bound(mamba2, data, name, tmp_path):
    q = quantize_model(mamba2, RECIPES[name], data[0], show_progress=False)
    assert abs(_rel(q, mamba2, data[1])) <= BOUND
    q.save(tmp_path / "q")
    ids = torch.randint(0, 256, (1, 40), generator=torch.Generator().manual_seed(4))
    loaded = QuantizedModel.load(tmp_path / "q")
    assert torch.equal(loaded(ids), q(ids))
    full = q(ids)
    _, state = q.prefill(ids[:, :30])
    for t in range(30, 40):
        step, state = q.step(ids[:, t], state)
        assert float((step - full[:, t]).abs().max()) < 0.05 * float(full.abs().max())


def test_naive_runs_and_is_worse_than_quamba(quamba, mamba1, data):
    naive = quantize_model(mamba1, RECIPES["w8a8-naive"], data[0], show_progress=False)
    assert _rel(naive, mamba1, data[1]) > _rel(quamba, mamba1, data[1])


@pytest.mark.parametrize("fixture", ["mamba1", "mamba2"])
def test_transforms_of_every_recipe_preserve_the_function(request, fixture, data):
    model = request.getfixturevalue(fixture)
    ids = torch.randint(0, 256, (1, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(ids)
        for recipe in RECIPES.values():
            if model.config.arch not in recipe.archs:
                with pytest.raises(UnsupportedError):
                    transform(model, recipe, data[0][:4], show_progress=False)
                continue
            out = transform(model, recipe, data[0][:4], show_progress=False)(ids)
            assert float((out - ref).abs().max()) <= 1e-4 * float(ref.abs().max()), recipe.name


@pytest.mark.parametrize("name", ["w8a8-mambaquant"])
def test_mamba1_recipes_within_bound(mamba1, data, name):
    q = quantize_model(mamba1, RECIPES[name], data[0], show_progress=False)
    assert abs(_rel(q, mamba1, data[1])) <= BOUND


@pytest.mark.parametrize("name", ["w8a8-quamba", "w8a8-mambaquant"])
def test_inplace_quantization_is_the_same_model(mamba1, data, name):
    """The CLI's path (the fp model consumed, layers released as they are quantized) gives
    byte-identical tensors to quantizing a copy."""
    recipe = RECIPES[name]
    windows = data[0][:6]
    expected = quantize_model(mamba1, recipe, windows, show_progress=False).state_dict()
    consumed = copy.deepcopy(mamba1)
    got = quantize_model(consumed, recipe, windows, show_progress=False, inplace=True).state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in got)
    assert not any(p.numel() for layer in consumed.layers for p in layer.parameters())  # released


def test_save_load_roundtrip(quamba, tmp_path):
    quamba.save(tmp_path / "q")
    manifest = json.loads((tmp_path / "q" / "quantized.json").read_text())
    assert manifest["recipe"]["name"] == "w8a8-quamba" and manifest["provenance"]["calibration"]["windows"] == 24
    loaded = QuantizedModel.load(tmp_path / "q")
    ids = torch.randint(0, 256, (2, 33), generator=torch.Generator().manual_seed(1))
    assert torch.equal(loaded(ids), quamba(ids))
    assert loaded.layers[0].mixer.x_proj.weight.dtype == torch.int8


def test_load_refuses_what_is_not_a_quantized_model(quamba, tmp_path, mamba1_fixture):
    with pytest.raises(CheckpointError, match="not a QuantizedModel"):
        QuantizedModel.load(mamba1_fixture)
    quamba.save(tmp_path / "q")
    m = json.loads((tmp_path / "q" / "quantized.json").read_text())
    m["config"]["d_state"] = 8
    (tmp_path / "q" / "quantized.json").write_text(json.dumps(m))
    with pytest.raises(CheckpointError, match="do not match"):
        QuantizedModel.load(tmp_path / "q")


def _decode(q, ids, prompt):
    logits, state = q.prefill(ids[:, :prompt])
    got = [logits]
    for t in range(prompt, ids.shape[1]):
        step, state = q.step(ids[:, t], state)
        got.append(step[:, None])
    return torch.cat(got, dim=1)


def test_decode_equals_prefill(quamba):
    """prefill + single steps run the same int8 ops: with an fp32 SSM state they equal the full
    forward exactly; with the default fp16 state, its rounding at every step is the only
    difference, and it costs ~1e-4 of logits NMSE (a rounding can flip an int8 code downstream)."""
    ids = torch.randint(0, 256, (2, 40), generator=torch.Generator().manual_seed(2))
    full = quamba(ids)
    fp16_state = _decode(quamba, ids, 24)
    assert torch.equal(fp16_state[:, :24], full[:, :24])
    nmse = float(((fp16_state - full) ** 2).sum() / (full**2).sum())
    assert nmse <= 2e-3, nmse
    q32 = copy.deepcopy(quamba)
    for block in q32.layers:
        block.mixer.state_dtype = torch.float32
    fp32_state = _decode(q32, ids, 24)
    torch.testing.assert_close(fp32_state, full, atol=1e-4, rtol=0)


def test_recipe_lookup_errors():
    with pytest.raises(UsageError, match="unknown recipe"):
        get_recipe("w3a3-magic", "mamba1")
    with pytest.raises(UsageError, match="does not apply to"):
        get_recipe("w8a8-quamba", "mamba3")


def test_outlier_channels_hard_case(mamba1, data):
    """A function-preserving variant with outlier channels: norm weights x50..x100 on a few channels,
    matching in_proj columns divided. Naive per-tensor int8 must break (> 10 %), Quamba and MambaQuant must not."""
    hard = copy.deepcopy(mamba1)
    factors = torch.tensor([50.0, 70.0, 100.0])
    with torch.no_grad():
        for block in hard.layers:
            ch = torch.tensor([3, 77, 150])
            block.norm.weight[ch] *= factors
            block.mixer.in_proj.weight[:, ch] /= factors
    ids = torch.randint(0, 256, (1, 64))
    with torch.no_grad():
        assert float((hard(ids) - mamba1(ids)).abs().max()) < 1e-3  # the fp model is unchanged
    naive = quantize_model(hard, RECIPES["w8a8-naive"], data[0], show_progress=False)
    assert _rel(naive, hard, data[1]) > 0.10
    for name in ("w8a8-quamba", "w8a8-mambaquant"):
        q = quantize_model(hard, RECIPES[name], data[0], show_progress=False)
        assert abs(_rel(q, hard, data[1])) <= BOUND, name


def test_quamba2_scales_per_cluster_and_group(mamba2, data):
    q = quantize_model(mamba2, RECIPES["w8a8-quamba2"], data[0], show_progress=False)
    m = q.layers[0].mixer
    c = mamba2.config
    assert m.x_scale.unique().numel() > 1  # one scale per cluster, not per tensor
    assert m.x_scale.unique().numel() <= c.n_groups * 4 * 4
    assert m.B_scale.shape == (c.n_groups,)
    with pytest.raises(UsageError, match="does not apply to mamba1"):
        get_recipe("w8a8-quamba2", "mamba1")


# ---------------------------------------------------------------- 4-bit weights

BOUND_W4A16, BOUND_W4A8 = 0.03, 0.05  # issue 9: W4A16 within 3 % of fp32 perplexity, W4A8 (and W4AX) within 5 %


@pytest.fixture(scope="module")
def w4a16_quamba2(mamba2, data):
    return quantize_model(mamba2, RECIPES["w4a16-quamba2"], data[0], show_progress=False)


def _check_reload_and_decode(q, tmp_path):
    q.save(tmp_path / "q")
    loaded = QuantizedModel.load(tmp_path / "q")
    assert loaded.layer_act_bits == q.layer_act_bits
    ids = torch.randint(0, 256, (1, 40), generator=torch.Generator().manual_seed(4))
    full = q(ids)
    assert torch.equal(loaded(ids), full)
    _, state = q.prefill(ids[:, :30])
    for t in range(30, 40):
        step, state = q.step(ids[:, t], state)
        assert float((step - full[:, t]).abs().max()) < 0.05 * float(full.abs().max())


def test_w4a16_quamba2_within_bound(w4a16_quamba2, mamba2, data, tmp_path):
    assert abs(_rel(w4a16_quamba2, mamba2, data[1])) <= BOUND_W4A16
    mixer = w4a16_quamba2.layers[0].mixer
    assert mixer.in_proj.qweight.dtype == torch.uint8 and mixer.in_proj.scales.dtype == torch.float16
    assert mixer.conv_weight.dtype == torch.float16  # fp16 activations through the mixer
    _check_reload_and_decode(w4a16_quamba2, tmp_path)


def test_gptq_beats_rtn_perplexity(w4a16_quamba2, mamba2, data):
    """The same recipe (transforms, grid, group) with round-to-nearest weights: GPTQ is better."""
    rtn = quantize_model(mamba2, dataclasses.replace(RECIPES["w4a16-quamba2"], weight_method="rtn"), data[0],
                         show_progress=False)  # fmt: skip
    assert _rel(w4a16_quamba2, mamba2, data[1]) < _rel(rtn, mamba2, data[1])


@pytest.mark.parametrize(("fixture", "name"), [("mamba2", "w4a8-quamba2"), ("mamba1", "w4a8-mambaquant"),
                                               ("mamba1", "w4a16-rtn")])  # fmt: skip
def test_4bit_recipes_within_bound(request, fixture, name, data, tmp_path):
    model = request.getfixturevalue(fixture)
    q = quantize_model(model, RECIPES[name], data[0], show_progress=False)
    bound = BOUND_W4A16 if RECIPES[name].act_bits == 16 else BOUND_W4A8
    assert abs(_rel(q, model, data[1])) <= bound
    _check_reload_and_decode(q, tmp_path)


def test_w4ax_respects_its_budget_and_records_the_choice(mamba2, data, tmp_path):
    from jetmamba.calibration.quantize import with_w4a16_budget

    recipe = with_w4a16_budget(RECIPES["w4ax-quamba2"], "2")
    q = quantize_model(mamba2, recipe, data[0][:8], show_progress=False)
    chosen = q.provenance.calibration["w4ax"]
    assert q.layer_act_bits.count(16) == 2 and len(chosen["sensitivity"]) == 4
    # the two layers whose W4A8 raised the calibration loss most are the W4A16 ones
    most = sorted(range(4), key=lambda i: -chosen["sensitivity"][i])[:2]
    assert sorted(most) == chosen["w4a16_layers"] == [i for i, b in enumerate(q.layer_act_bits) if b == 16]
    assert {b.mixer.conv_weight.dtype for b in q.layers} == {torch.int8, torch.float16}
    _check_reload_and_decode(q, tmp_path)
    assert with_w4a16_budget(RECIPES["w4ax-quamba2"], "25%").w4a16_fraction == 0.25
    for bad in ("-1", "1.5", "x"):
        with pytest.raises(UsageError):
            with_w4a16_budget(RECIPES["w4ax-quamba2"], bad)
    with pytest.raises(UsageError):
        with_w4a16_budget(RECIPES["w4a8-quamba2"], "1")


def test_4bit_weight_bytes(w4a16_quamba2):
    c = w4a16_quamba2.config
    in_n, in_k = c.d_inner + c.conv_dim + c.n_heads, c.d_model  # K 192: groups of 64
    out_n, out_k = c.d_model, c.d_inner  # K 384: groups of 128
    per_layer = in_n * in_k // 2 + in_n * (in_k // 64) * 2 + out_n * out_k // 2 + out_n * (out_k // 128) * 2
    per_layer += c.conv_dim * c.d_conv * 2  # fp16 conv weights
    head_and_table = 2 * c.vocab_size * c.d_model * 2
    assert w4a16_quamba2.weight_bytes() == c.n_layer * per_layer + head_and_table


def test_format_version_1_still_loads(quamba, tmp_path):
    quamba.save(tmp_path / "q")
    path = tmp_path / "q" / "quantized.json"
    manifest = json.loads(path.read_text())
    assert manifest["format_version"] == 2 and manifest["layer_act_bits"] == [8] * 4
    manifest["format_version"] = 1
    del manifest["layer_act_bits"]
    path.write_text(json.dumps(manifest))
    ids = torch.randint(0, 256, (1, 20), generator=torch.Generator().manual_seed(5))
    assert torch.equal(QuantizedModel.load(tmp_path / "q")(ids), quamba(ids))
    manifest["format_version"] = 3
    path.write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="format_version"):
        QuantizedModel.load(tmp_path / "q")


def test_4bit_recipe_refuses_k_without_int4_groups(data):
    from jetmamba.calibration.arch import Mamba1Config
    from jetmamba.calibration.model import MambaLM

    config = Mamba1Config(d_model=40, n_layer=1, vocab_size=256, d_inner=80, d_state=4, dt_rank=3)
    model = MambaLM(config).init_weights(0)
    with pytest.raises(UnsupportedError, match="multiple of 32"):
        quantize_model(model, RECIPES["w4a16-rtn"], data[0][:2], show_progress=False)
