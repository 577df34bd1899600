"""Every transform leaves the fp model's logits unchanged (fp32, max relative error <= 1e-4)."""

from __future__ import annotations

import pytest
import torch

from jetmamba.calibration.checkpoint import load_model
from jetmamba.calibration.hadamard import random_hadamard
from jetmamba.calibration.transforms import (
    fuse_norms,
    hadamard_before_out_proj,
    klt_rotation,
    norms_are_fused,
    rotate_dt_rank,
    rotate_residual,
    smooth_out_proj,
    smooth_ssm_state,
)
from jetmamba.errors import UnsupportedError

REL = 1e-4  # the bound: max |delta logit| / max |logit|


def _check_same(a, b, ids):
    with torch.no_grad():
        la, lb = a(ids), b(ids)
    assert float((la - lb).abs().max()) <= REL * float(la.abs().max())


@pytest.fixture(params=["mamba1_fixture", "mamba2_fixture"])
def model(request):
    return load_model(request.getfixturevalue(request.param))


IDS = torch.randint(0, 256, (2, 70), generator=torch.Generator().manual_seed(0))


def test_fuse_norms(model):
    fused = fuse_norms(model)
    assert norms_are_fused(fused) and not norms_are_fused(model)
    assert fused.lm_head is not None and not fused.config.tie_embeddings
    _check_same(model, fused, IDS)


@pytest.mark.parametrize("kind", ["hadamard", "random_orthogonal"])
def test_rotate_residual(model, kind):
    d = model.config.d_model
    if kind == "hadamard":
        R = random_hadamard(d, seed=0)
    else:
        R = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))[0]
    rotated = rotate_residual(fuse_norms(model), R)
    _check_same(model, rotated, IDS)
    # the stream really is rotated: the embedding changed
    assert not torch.allclose(rotated.embedding.weight, model.embedding.weight)


def test_rotation_needs_fused_norms_and_orthogonal_matrix(model):
    d = model.config.d_model
    with pytest.raises(UnsupportedError, match="fuse_norms first"):
        rotate_residual(model, torch.eye(d))
    with pytest.raises(UnsupportedError, match="orthogonal"):
        rotate_residual(fuse_norms(model), 2 * torch.eye(d))


def test_transforms_do_not_modify_their_input(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rotate_residual(fuse_norms(model), random_hadamard(model.config.d_model, seed=2))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_inplace_rewrites_the_model_itself(model):
    """inplace=True (the quantizer's memory-bounded path) gives the same model as a copy would."""
    d = model.config.d_model
    expected = hadamard_before_out_proj(rotate_residual(fuse_norms(model), random_hadamard(d, seed=2)))
    m = fuse_norms(model, inplace=True)
    assert m is model
    m = hadamard_before_out_proj(rotate_residual(m, random_hadamard(d, seed=2), inplace=True), inplace=True)
    assert m is model
    assert all(torch.equal(v, expected.state_dict()[k]) for k, v in m.state_dict().items())


def test_hadamard_before_out_proj(model):
    had = hadamard_before_out_proj(model)
    assert all(b.mixer.out_hadamard for b in had.layers) and not model.layers[0].mixer.out_hadamard
    _check_same(model, had, IDS)
    # and the decode path applies it too
    with torch.no_grad():
        full = had(IDS[:, :9])
        _, state = had.prefill(IDS[:, :8])
        step, _ = had.step(IDS[:, 8], state)
    torch.testing.assert_close(step, full[:, 8], atol=1e-4, rtol=0)
    with pytest.raises(UnsupportedError, match="already"):
        hadamard_before_out_proj(had)


def test_all_transforms_compose(model):
    d = model.config.d_model
    out = hadamard_before_out_proj(rotate_residual(fuse_norms(model), random_hadamard(d, seed=5)))
    _check_same(model, out, IDS)


def test_checkpoint_formats_refuse_online_hadamard(model, tmp_path):
    from jetmamba.calibration.checkpoint import save_checkpoint

    with pytest.raises(UnsupportedError, match="online Hadamard or a smoothed gate"):
        save_checkpoint(hadamard_before_out_proj(model), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_klt_rotation_is_orthogonal_and_decorrelates():
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(12, 12, generator=g, dtype=torch.float64)
    x = torch.randn(4000, 12, generator=g, dtype=torch.float64) @ mix
    cov = torch.cov(x.t(), correction=0)
    R = klt_rotation(cov, seed=1)
    torch.testing.assert_close(R @ R.t(), torch.eye(12, dtype=torch.float64))
    K = R @ random_hadamard(12, seed=1).t()  # undo the (orthogonal) Hadamard part
    d = K.t() @ cov @ K  # the KLT part alone diagonalises the covariance
    assert float((d - torch.diag(torch.diag(d))).abs().max()) < 1e-8 * float(d.abs().max())
    assert bool((torch.diag(d)[:-1] >= torch.diag(d)[1:]).all())  # largest variance first


def test_rotate_dt_rank(request):
    model = load_model(request.getfixturevalue("mamba1_fixture"))
    r = model.config.dt_rank
    Qs = [torch.linalg.qr(torch.randn(r, r, dtype=torch.float64))[0] for _ in model.layers]
    _check_same(model, rotate_dt_rank(model, Qs), IDS)
    with pytest.raises(UnsupportedError, match="no dt_rank space"):
        rotate_dt_rank(load_model(request.getfixturevalue("mamba2_fixture")), Qs)


def test_smooth_out_proj(model):
    g = torch.Generator().manual_seed(3)
    act = [torch.rand(model.config.d_inner, generator=g, dtype=torch.float64) * 10 for _ in model.layers]
    smoothed = smooth_out_proj(model, act)
    _check_same(model, smoothed, IDS)
    with torch.no_grad():  # decode path too (Mamba1 gates with S-SiLU there as well)
        full = smoothed(IDS[:, :9])
        _, state = smoothed.prefill(IDS[:, :8])
        step, _ = smoothed.step(IDS[:, 8], state)
    torch.testing.assert_close(step, full[:, 8], atol=1e-4, rtol=0)
    with pytest.raises(UnsupportedError, match="before the Hadamard"):
        smooth_out_proj(hadamard_before_out_proj(model), act)


def test_smooth_ssm_state_with_state_boundary_correction(mamba1_fixture, mamba2_fixture):
    model = load_model(mamba1_fixture)
    n = model.config.d_state
    g = torch.Generator().manual_seed(4)
    scales = [torch.rand(n, generator=g, dtype=torch.float64) * 4 + 0.1 for _ in model.layers]
    smoothed = smooth_ssm_state(model, scales)
    _check_same(model, smoothed, IDS)
    with torch.no_grad():  # states handed between calls keep the original basis: chunked prefill and decode exact
        _, st_ref = model.prefill(IDS[:, :30])
        _, st = smoothed.prefill(IDS[:, :30])
        torch.testing.assert_close(st.layers[0].ssm, st_ref.layers[0].ssm, atol=1e-4, rtol=1e-4)
        full = smoothed(IDS[:, :41])
        second, st = smoothed.prefill(IDS[:, 30:40], st)
        step, _ = smoothed.step(IDS[:, 40], st)
    torch.testing.assert_close(second, full[:, 30:40], atol=2e-4, rtol=0)
    torch.testing.assert_close(step, full[:, 40], atol=2e-4, rtol=0)
    with pytest.raises(UnsupportedError, match="Mamba1"):
        smooth_ssm_state(load_model(mamba2_fixture), scales)
