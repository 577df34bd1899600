"""RMS norms: definitions, transformers' dtype behaviour, and Mamba2's per-group gated norm."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tolerances import assert_close

from jetmamba.calibration.functional import gated_rms_norm, rms_norm


def test_rms_norm_definition():
    x, w = torch.randn(3, 5, 16), torch.randn(16)
    expected = w * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)
    assert_close(rms_norm(x, w, 1e-5), expected, "norm.fp32")
    assert_close(rms_norm(x, None, 1e-5), expected / w, "norm.fp32")


def test_gated_norm_is_per_group():
    x, z, w = torch.randn(2, 3, 24), torch.randn(2, 3, 24), torch.randn(24)
    out = gated_rms_norm(x, z, w, 1e-6, group_size=8)
    h = (x * F.silu(z)).view(2, 3, 3, 8)
    expected = (h / torch.sqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)).view(2, 3, 24) * w
    assert_close(out, expected, "norm.fp32")
    # one group over everything is a different function when groups differ in scale
    x[..., :8] *= 10
    assert not torch.allclose(gated_rms_norm(x, z, w, 1e-6, 8), gated_rms_norm(x, z, w, 1e-6, 24))


def test_half_input_returns_weight_dtype_like_transformers():
    x = torch.randn(4, 8).half()
    assert rms_norm(x, torch.ones(8, dtype=torch.float16), 1e-5).dtype == torch.float16
    assert rms_norm(x, torch.ones(8), 1e-5).dtype == torch.float32
