"""Building blocks of quantized mixers: int8 weights with their scales, static activation scales."""

from __future__ import annotations

import torch
from torch import nn

from jetmamba.compiler.ops import int4
from jetmamba.compiler.ops.int4 import INT4_MAX, INT4_MIN, pack_int4, unpack_int4  # noqa: F401 - re-exported
from jetmamba.compiler.ops.quant import quantize, scale_for
from jetmamba.compiler.ops.reference import qlinear, w4a8_linear, w4a16_linear


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


# ---------------------------------------------------------------- 4-bit weights
# The packed layout the int4 kernels read (jetmamba.compiler.ops.int4, docs/quantization.md): codes
# q in [-8, 7], two per byte along K (low nibble = even k, two's complement nibbles), fp16 scales
# per output channel and group of G consecutive input channels, w = scale * q. The GEMMs are the
# op references jetmamba::W4A16Linear / W4A8Linear.

INT4_GROUP_SIZES = (128, 64, 32)  # the default group, then the fallbacks for a K it does not divide
_FP16_TINY = torch.finfo(torch.float16).tiny


def int4_group_size(k: int, preferred: int = 128) -> int | None:
    """The group size of a layer with ``k`` input channels: ``preferred`` when it divides k, else the
    largest of 128, 64, 32 below it that does; None when none does (the layer cannot be int4)."""
    for g in (preferred, *(s for s in INT4_GROUP_SIZES if s < preferred)):
        if k % g == 0 and k >= g:
            return g
    return None


def int4_scales(w: torch.Tensor, group: int) -> torch.Tensor:
    """fp16 [N, K/G]: max |w| of each (output channel, group) / 7, as stored (fp16); an all-zero
    group gets the smallest normal fp16 instead of a zero that codes would divide by."""
    absmax = w.detach().float().reshape(w.shape[0], -1, group).abs().amax(dim=-1)
    return (absmax / INT4_MAX).clamp(min=_FP16_TINY).to(torch.float16)


def quantize_int4(w: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Codes of w [N, K] on the grid of ``scales`` [N, K/G]: round half to even, clamp to [-8, 7]."""
    s = scales.float().repeat_interleave(w.shape[1] // scales.shape[1], dim=1)
    return torch.round(w.float() / s).clamp_(INT4_MIN, INT4_MAX).to(torch.int8)


def dequantize_int4(qweight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """fp32 [N, K] = float(scales[n, k // G]) * q[n, k] of a packed weight (G from the shapes)."""
    return int4.dequantize_int4(qweight, scales, 2 * qweight.shape[1] // scales.shape[1])


def rtn_int4(w: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Round-to-nearest int4 of a [N, K] weight: (codes int8 [N, K], scales fp16 [N, K/G])."""
    scales = int4_scales(w, group)
    return quantize_int4(w, scales), scales


class QuantLinear4(nn.Module):
    """A 4-bit weight in the packed layout: ``qweight`` uint8 [N, K/2], ``scales`` fp16 [N, K/G],
    an optional fp32 ``bias``. ``forward(x)`` with a float x is the W4A16 GEMM, ``forward(x_q,
    x_scale)`` with an int8 x the W4A8 one (one module serves both, so W4AX can switch a layer)."""

    def __init__(self, in_features: int, out_features: int, bias: bool, group_size: int = 128, device=None,
                 out_dtype=torch.float16):  # fmt: skip
        super().__init__()
        group = int4_group_size(in_features, group_size)
        if group is None or in_features % 2:
            raise ValueError(f"{in_features} input channels cannot hold int4 groups of 128, 64 or 32")
        self.group_size, self.out_dtype = group, out_dtype
        self.register_buffer("qweight", torch.zeros(out_features, in_features // 2, dtype=torch.uint8, device=device))
        self.register_buffer(
            "scales", torch.ones(out_features, in_features // group, dtype=torch.float16, device=device)
        )
        self.register_buffer("bias", torch.zeros(out_features, device=device) if bias else None)

    @classmethod
    def from_codes(cls, codes: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None,
                   out_dtype=torch.float16) -> QuantLinear4:  # fmt: skip
        n, k = codes.shape
        q = cls(k, n, bias is not None, k // scales.shape[1], device=codes.device, out_dtype=out_dtype)
        if q.group_size != k // scales.shape[1]:
            raise ValueError(f"group size {k // scales.shape[1]} is not the layout's {q.group_size} for K={k}")
        q.qweight = pack_int4(codes)
        q.scales = scales.to(torch.float16).contiguous()
        if bias is not None:
            q.bias = bias.detach().float().clone()
        return q

    def dequantized(self) -> torch.Tensor:
        return dequantize_int4(self.qweight, self.scales)

    def forward(self, x: torch.Tensor, x_scale=None) -> torch.Tensor:
        """The kernels write fp16; the result is handed on in ``out_dtype``."""
        if x.dtype == torch.int8:
            if x_scale is None:
                raise ValueError("an int8 input needs its scale")
            y = w4a8_linear(x, self.qweight, self.scales, self.bias, x_scale=x_scale, group_size=self.group_size)
        else:
            y = w4a16_linear(x.to(torch.float16), self.qweight, self.scales, self.bias, group_size=self.group_size)
        return y.to(self.out_dtype)


def linear_layout(in_features: int, out_features: int, bias: bool, *, weight_bits: int, group_size: int = 128,
                  device=None, out_dtype=torch.float16) -> nn.Module:  # fmt: skip
    """An empty int8 (:class:`QuantLinear`) or 4-bit (:class:`QuantLinear4`) layer of this shape."""
    if weight_bits == 4:
        return QuantLinear4(in_features, out_features, bias, group_size, device=device, out_dtype=out_dtype)
    return QuantLinear(in_features, out_features, bias, device)


def quant_linear(
    w: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    weight_bits: int,
    group_size: int = 128,
    per_channel: bool = True,
    out_dtype=torch.float16,
    given: nn.Module | None = None,
) -> nn.Module:
    """``given`` (weights the quantizer chose, e.g. by GPTQ) or round-to-nearest of ``w``: int8 per
    output channel, or int4 on the packed layout's grid."""
    if given is not None:
        return given
    if weight_bits == 4:
        group = int4_group_size(w.shape[1], group_size)
        if group is None:
            raise ValueError(f"{w.shape[1]} input channels cannot hold int4 groups")
        codes, scales = rtn_int4(w, group)
        return QuantLinear4.from_codes(codes, scales, bias, out_dtype=out_dtype)
    return QuantLinear.from_weight(w, bias, per_channel)
