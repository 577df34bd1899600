"""Numerical guards: NaN/Inf named by layer, site and window in calibration and evaluation;
zero and denormal ranges give a positive normal scale and a warning; int8 saturation counts
are exact."""

from __future__ import annotations

import logging

import pytest
import torch

from jetmamba.calibration.checkpoint import load_model, save_checkpoint
from jetmamba.calibration.evaluate import perplexity
from jetmamba.calibration.observers import AbsMax, NonFiniteActivation
from jetmamba.calibration.quantize import _SiteStats, calibrate, observe, quantize_model, transform
from jetmamba.calibration.recipes import RECIPES
from jetmamba.compiler.ops.quant import quantize, saturation_count, scale_for
from jetmamba.errors import DataError

TINY = torch.finfo(torch.float32).tiny


def _windows(n=6, length=24, poison_window=None, token=7):
    """Windows of tokens 0..5; ``poison_window`` alone holds ``token``."""
    w = torch.randint(0, 6, (n, length), generator=torch.Generator().manual_seed(0))
    if poison_window is not None:
        w[poison_window, length // 2] = token
    return w


def _with_nan_embedding(fixture, token=7):
    model = load_model(fixture)
    with torch.no_grad():
        model.embedding.weight[token] = float("nan")
    return model


# ---------------------------------------------------------------- NaN / Inf


@pytest.mark.parametrize("batch_size", [1, 2, 4])
def test_calibration_names_site_and_window(mamba1_fixture, batch_size):
    model = _with_nan_embedding(mamba1_fixture)
    with pytest.raises(DataError) as info:
        calibrate(model, _windows(poison_window=5), RECIPES["w8a8-quamba"], batch_size=batch_size, show_progress=False)
    assert str(info.value) == "layers.0.mixer.in_proj.input has NaN on calibration window 5 (of 6, counting from 0)"


def test_calibration_names_a_later_layer(mamba2_fixture):
    """A fault inside layer 2's mixer shows first at the next site it reaches in that layer."""
    model = load_model(mamba2_fixture)
    with torch.no_grad():
        model.layers[2].mixer.conv1d.weight[0, 0, -1] = float("nan")
    with pytest.raises(DataError, match=r"^layers\.2\.mixer\.\S+ has NaN on calibration window 0 \(of 6"):
        calibrate(model, _windows(), RECIPES["w8a8-quamba2"], batch_size=2, show_progress=False)


def test_inf_is_told_from_nan():
    obs = AbsMax("layers.1.mixer.x")
    x = torch.zeros(3, 4, 5)
    x[2, 1, 3] = float("inf")
    with pytest.raises(NonFiniteActivation) as info:
        obs.update(x)
    assert (info.value.kind, info.value.row, info.value.rows) == ("Inf", 2, 3)
    assert (
        str(info.value.on_windows(8, 3, 20))
        == "layers.1.mixer.x has Inf on calibration window 10 (of 20, counting from 0)"
    )


def test_quantize_refuses_non_finite_weights_by_name(mamba1_fixture):
    model = load_model(mamba1_fixture)
    with torch.no_grad():
        model.layers[3].mixer.x_proj.weight[1, 1] = float("inf")
    with pytest.raises(DataError, match=r"layers\.3\.mixer\.x_proj\.weight has 1 of"):
        quantize_model(model, RECIPES["w8a8-quamba"], _windows(), show_progress=False)


def test_evaluation_names_window_and_layer(mamba1_fixture):
    model = load_model(mamba1_fixture)
    with torch.no_grad():
        model.layers[2].mixer.out_proj.weight[0, 0] = float("nan")
    with pytest.raises(DataError) as info:
        perplexity(model, _windows().reshape(-1), 24, batch_size=4, show_progress=False)
    assert str(info.value) == (
        "the logits have NaN on evaluation window 0 (of 6, counting from 0); it first appears at layers.2.mixer output"
    )


def test_evaluation_names_the_lm_head(mamba1_fixture):
    """A NaN row of a tied embedding is a NaN logit column for every window: the LM head's fault,
    seen on the first window, whatever tokens the windows hold."""
    model = _with_nan_embedding(mamba1_fixture)
    with pytest.raises(DataError, match=r"window 0 \(of 6.* first appears at the final norm or LM head"):
        perplexity(model, _windows().reshape(-1), 24, batch_size=4, show_progress=False)


def test_evaluation_names_the_window_holding_the_bad_token(mamba1_fixture):
    """A NaN where only one window's tokens lead: an untied head, the bad row in the embedding only."""
    model = load_model(mamba1_fixture)
    model.lm_head = torch.nn.Linear(model.config.d_model, model.config.vocab_size, bias=False)
    with torch.no_grad():
        model.lm_head.weight.copy_(model.embedding.weight)
        model.embedding.weight[7] = float("nan")
    with pytest.raises(DataError, match=r"window 4 \(of 6.* first appears at the embedding or layers.0 norm"):
        perplexity(model, _windows(poison_window=4).reshape(-1), 24, batch_size=4, show_progress=False)


def test_eval_command_reports_non_finite_logits(capsys, tmp_path, mamba1_fixture):
    from fuzz import assert_clean_error

    from jetmamba.cli import main

    model = load_model(mamba1_fixture)
    with torch.no_grad():
        model.layers[1].mixer.in_proj.weight[5] = float("nan")
    save_checkpoint(model, tmp_path / "broken")
    data = tmp_path / "text.txt"
    data.write_text("the quick brown fox jumps over the lazy dog " * 20)
    code = main(["eval", "--model", str(tmp_path / "broken"), "--data", str(data), "--seq-len", "64", "-q"])
    assert_clean_error(code, capsys.readouterr().err, contains="evaluation window 0 (of 13, counting from 0); "
                       "it first appears at layers.1.mixer output")  # fmt: skip


# ---------------------------------------------------------------- zero and denormal ranges


@pytest.mark.parametrize("absmax", [0.0, 1e-45, 1e-39, -0.0])
def test_degenerate_range_gets_a_normal_scale(absmax):
    s = scale_for(absmax)
    assert float(s) == TINY and torch.isfinite(s) and float(s) > 0
    q = quantize(torch.full((4,), absmax), s)
    assert q.dtype == torch.int8 and bool((q.abs() <= 1).all())


def test_zero_site_and_zero_rows_warn_and_stay_finite(mamba1_fixture, caplog):
    """in_proj's z rows zeroed: the z site is all zeros on any data, and in_proj has zero rows."""
    model = load_model(mamba1_fixture)
    d_inner = model.config.d_inner
    with torch.no_grad():
        model.layers[1].mixer.in_proj.weight[d_inner:] = 0
    with caplog.at_level(logging.WARNING, logger="jetmamba"):
        q = quantize_model(model, RECIPES["w8a8-quamba"], _windows(), show_progress=False)
    text = caplog.text
    assert "layers.1.mixer.z is all zeros on the calibration data" in text
    assert f"layers.1.mixer.in_proj.weight has {d_inner} weight row(s) of zeros" in text
    assert "layers.0.mixer.z" not in text
    scales = {k: v for k, v in q.state_dict().items() if "scale" in k}
    assert all(bool(torch.isfinite(v).all()) and bool((v > 0).all()) for v in scales.values())
    assert bool(torch.isfinite(q(_windows())).all())


# ---------------------------------------------------------------- saturation counts


def test_saturation_count_hand_case():
    """1000 values, the 99th percentile exactly 127 (scale 1.0); of the nine larger values, five
    quantize outside [-128, 127] under ONNX's round-half-to-even: 127.5 (-> 128), -128.6, 200,
    -300, 128; -128.4 and -128.45 (-> -128), -127.5 (-> -128) and 127.49 (-> 127) do not."""
    big = [127.5, -128.6, 200.0, -300.0, 128.0, -128.4, -127.5, 127.49, -128.45]
    rest = torch.rand(989, generator=torch.Generator().manual_seed(0)) * 200 - 100
    values = torch.cat([rest, torch.tensor([127.0, -127.0] + big)])
    values = values[torch.randperm(values.numel(), generator=torch.Generator().manual_seed(1))]
    stats = _SiteStats("layers.0.mixer.u", 0.99, windows=2)
    stats.update(values[:500].reshape(1, 500))
    stats.update(values[500:].reshape(1, 500))
    scale, saturated = stats.scale_and_saturation()
    assert float(scale) == 1.0
    assert saturated == 5 == saturation_count(values, scale)


def test_reported_saturation_matches_the_calibration_data(mamba2_fixture):
    """quantize's per-site counts equal a brute-force count over every calibrated value."""
    recipe = RECIPES["w8a8-quamba"]  # clips the SSM input at a percentile
    windows = _windows(n=4, length=32)
    q = quantize_model(load_model(mamba2_fixture), recipe, windows, batch_size=2, show_progress=False)
    fp = transform(load_model(mamba2_fixture), recipe, windows, batch_size=2, show_progress=False)
    stats = calibrate(fp, windows, recipe, batch_size=2, show_progress=False)
    seen = [{} for _ in fp.layers]

    class Keep:
        def __init__(self, store, site):
            self.store, self.site = store, site

        def update(self, t):
            self.store.setdefault(self.site, []).append(t.detach().float().reshape(-1))

    sites = [site for site in fp.adapter.sites if stats[0][site].alpha is not None]
    assert sites, "the recipe clips no site: nothing saturates"
    observe(fp, windows, [{s: Keep(seen[i], s) for s in sites} for i in range(len(fp.layers))], batch_size=2,
            show_progress=False)  # fmt: skip
    for i, layer in enumerate(stats):
        for site in sites:
            scale, count = layer[site].scale_and_saturation()
            assert count == saturation_count(torch.cat(seen[i][site]), scale)
            assert q.provenance.saturation.get(f"layers.{i}.mixer.{site}", 0) == count
    assert sum(q.provenance.saturation.values()) > 0
