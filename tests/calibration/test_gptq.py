"""GPTQ: the known answers (identity Hessian = RTN, dead inputs) and a measured gain over RTN on
the fixtures' real calibration activations."""

from __future__ import annotations

import pytest
import torch

from jetmamba.calibration.gptq import GPTQConfig, Hessian, gptq_int4, layer_error
from jetmamba.calibration.qlayers import dequantize_int4, pack_int4, rtn_int4


def _deq(codes, scales):
    return dequantize_int4(pack_int4(codes), scales)


@pytest.mark.parametrize("act_order", [False, True])
def test_identity_hessian_gives_rtn(act_order):
    """No correlation between inputs: no error to push onto other columns, GPTQ is RTN."""
    w = torch.randn(16, 256, generator=torch.Generator().manual_seed(0))
    codes, scales = gptq_int4(w, torch.eye(256, dtype=torch.float64), 128, GPTQConfig(act_order=act_order))
    rtn_codes, rtn_scales = rtn_int4(w, 128)
    assert torch.equal(scales, rtn_scales) and torch.equal(codes, rtn_codes)


def test_dead_input_gets_a_zero_weight():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(500, 64, generator=g)
    x[:, 5] = 0
    h = Hessian(64)
    h.update(x)
    codes, _ = gptq_int4(torch.randn(8, 64, generator=g), h.result(), 32)
    assert not codes[:, 5].any()


def test_correlated_inputs_gptq_beats_rtn():
    """Strongly correlated inputs: RTN's errors add up in the output, GPTQ compensates them."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2048, 8, generator=g) @ torch.randn(8, 128, generator=g) + 0.05 * torch.randn(
        2048, 128, generator=g
    )
    h = Hessian(128)
    for chunk in x.split(512):
        h.update(chunk)
    w = torch.randn(32, 128, generator=g)
    H = h.result()
    rtn = layer_error(w, _deq(*rtn_int4(w, 128)), H)
    assert layer_error(w, _deq(*gptq_int4(w, H, 128)), H) < 0.5 * rtn


def test_hessian_is_two_xtx_over_rows():
    x = torch.randn(3, 7, 5, generator=torch.Generator().manual_seed(3))
    h = Hessian(5)
    h.update(x[:1])
    h.update(x[1:])
    flat = x.reshape(-1, 5).double()
    torch.testing.assert_close(h.result(), 2 * flat.T @ flat / 21)


@pytest.fixture(scope="module")
def real_hessians(mamba2_fixture):
    """Layer 1's in_proj and out_proj inputs of the Mamba2 fixture after Quamba2's transforms."""
    from shared import shared_path

    from jetmamba.calibration.checkpoint import load_model
    from jetmamba.calibration.data import read_text, sample_windows, tokenize
    from jetmamba.calibration.quantize import observe, transform
    from jetmamba.calibration.recipes import RECIPES
    from jetmamba.calibration.tokenizer import ByteTokenizer

    tokens = tokenize(read_text(shared_path("data", "wikitext2-valid.txt")), ByteTokenizer())
    windows = sample_windows(tokens, 8, 256, seed=0)
    model = transform(load_model(mamba2_fixture), RECIPES["w4a16-quamba2"], windows, show_progress=False)
    mixer = model.layers[1].mixer
    hessians = {
        "in_proj.input": Hessian(mixer.in_proj.in_features),
        "out_proj.input": Hessian(mixer.out_proj.in_features),
    }
    observers = [{} for _ in model.layers]
    observers[1] = hessians
    observe(model, windows, observers, show_progress=False)
    return {"in_proj": (mixer.in_proj.weight.detach(), hessians["in_proj.input"].result()),
            "out_proj": (mixer.out_proj.weight.detach(), hessians["out_proj.input"].result())}  # fmt: skip


@pytest.mark.parametrize("name", ["in_proj", "out_proj"])
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_reconstructs_real_layers_better_than_rtn(real_hessians, name, act_order):
    w, h = real_hessians[name]
    group = 128 if w.shape[1] % 128 == 0 else 64
    rtn = layer_error(w, _deq(*rtn_int4(w, group)), h)
    gptq = layer_error(w, _deq(*gptq_int4(w, h, group, GPTQConfig(act_order=act_order))), h)
    assert gptq < 0.7 * rtn, (gptq, rtn)
