"""Building blocks of quantized mixers: int8 weights with their scales, static activation scales."""

from __future__ import annotations

import torch
from torch import nn

from jetmamba.compiler.ops.quant import quantize, scale_for
from jetmamba.compiler.ops.reference import qlinear


def rtn_int8(w: torch.Tensor, per_channel: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric round-to-nearest int8 of a [out, in] weight: (codes, scales [out]).

    Per output channel by default; ``per_channel=False`` gives one scale (repeated per row, so
    every layer has the same storage layout)."""
    w = w.detach().float()
    absmax = w.abs().amax(dim=1) if per_channel else w.abs().amax().expand(w.shape[0])
    s = scale_for(absmax)
    return quantize(w, s, axis=0), s.contiguous()


class QuantLinear(nn.Module):
    """An int8 weight with per-output-channel scales and an optional fp32 bias.

    ``forward(x_q, x_scale)`` is the Q/DQ GEMM (``jetmamba.compiler.ops.reference.qlinear``)."""

    def __init__(self, in_features: int, out_features: int, bias: bool, device=None):
        super().__init__()
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("weight_scale", torch.ones(out_features, device=device))
        self.register_buffer("bias", torch.zeros(out_features, device=device) if bias else None)

    @classmethod
    def from_weight(cls, w: torch.Tensor, bias: torch.Tensor | None, per_channel: bool = True) -> QuantLinear:
        q = cls(w.shape[1], w.shape[0], bias is not None, device=w.device)
        q.weight, q.weight_scale = rtn_int8(w, per_channel)
        if bias is not None:
            q.bias = bias.detach().float().clone()
        return q

    def forward(self, x_q: torch.Tensor, x_scale: torch.Tensor) -> torch.Tensor:
        return qlinear(x_q, x_scale, self.weight, self.weight_scale, self.bias)


def scale_buffer(module: nn.Module, name: str, value=1.0) -> None:
    """A static activation scale (fp32 scalar) saved with the module."""
    module.register_buffer(name, torch.tensor(float(value), dtype=torch.float32))


def fit_scale(value, target: torch.Tensor) -> None:
    """Copy a calibrated scale into a scale buffer: one value fills it; a vector of the buffer's
    length is copied; a longer per-channel vector whose channels come in contiguous groups (one
    group per buffer element, equal scales inside) gives one value per group."""
    v = torch.as_tensor(value, dtype=torch.float32).reshape(-1).to(target.device)
    n = target.numel()
    if v.numel() == 1:
        target.fill_(float(v))
    elif v.numel() == n:
        target.copy_(v.view_as(target))
    elif v.numel() % n == 0:
        rows = v.view(n, -1)
        if not bool((rows == rows[:, :1]).all()):
            raise ValueError(f"a per-channel scale of {v.numel()} values does not reduce to {n} groups")
        target.copy_(rows[:, 0].view_as(target))
    elif n == 1:
        target.fill_(float(v.max()))
    else:
        raise ValueError(f"a scale of {v.numel()} values does not fit a buffer of {n}")
