"""RMS normalisations of the Mamba family, with transformers' dtype behaviour."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """RMSNorm over the last dimension.

    x: [..., d]; weight: [d] or None (FalconMamba's weightless norm of B, C and dt).
    The statistics are computed in fp32, the normalised value is cast back to ``x.dtype`` and then
    scaled, as transformers' MambaRMSNorm does.
    """
    xf = x.float()
    y = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    return y if weight is None else weight * y


def gated_rms_norm(
    x: torch.Tensor, gate: torch.Tensor, weight: torch.Tensor, eps: float, group_size: int
) -> torch.Tensor:
    """Mamba2's gated RMSNorm: ``norm(x * silu(gate))`` per group of ``group_size`` channels.

    x, gate: [..., d]; weight: [d]; d a multiple of group_size (d / n_groups in Mamba2, the
    normalisation does not cross SSD groups). Gate and normalisation in fp32, the result is
    cast to ``x.dtype`` before the weight, as in transformers and mamba_ssm (norm_before_gate=False).
    """
    h = x.float() * F.silu(gate.float())
    *lead, d = h.shape
    hg = h.view(*lead, d // group_size, group_size)
    hg = hg * torch.rsqrt(hg.pow(2).mean(-1, keepdim=True) + eps)
    return weight * hg.view(*lead, d).to(x.dtype)
