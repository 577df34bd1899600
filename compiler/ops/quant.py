"""int8 quantization, exactly as ONNX QuantizeLinear / DequantizeLinear define it.

Symmetric (zero point 0), ``q = saturate(round_half_to_even(x / scale))`` into [-128, 127];
``x' = q * scale``. Scales are per tensor (a scalar) or per channel along ``axis``.
"""

from __future__ import annotations

import torch

QMIN, QMAX = -128, 127


def _broadcast(scale: torch.Tensor, x: torch.Tensor, axis: int | None) -> torch.Tensor:
    scale = torch.as_tensor(scale, dtype=torch.float32, device=x.device)
    if scale.ndim == 0 or axis is None:
        return scale
    shape = [1] * x.ndim
    shape[axis] = -1
    return scale.reshape(shape)


def quantize(x: torch.Tensor, scale, axis: int | None = None) -> torch.Tensor:
    """x (float) -> int8 codes. torch.round rounds half to even, as ONNX does."""
    s = _broadcast(scale, x, axis)
    return torch.round(x.float() / s).clamp_(QMIN, QMAX).to(torch.int8)


def dequantize(q: torch.Tensor, scale, axis: int | None = None) -> torch.Tensor:
    """int8 codes -> fp32 values."""
    return q.float() * _broadcast(scale, q, axis)


def fake_quantize(x: torch.Tensor, scale, axis: int | None = None) -> torch.Tensor:
    """dequantize(quantize(x)): the value an int8 tensor carries, in x's dtype."""
    return dequantize(quantize(x, scale, axis), scale, axis).to(x.dtype)


def scale_for(absmax, qmax: int = QMAX) -> torch.Tensor:
    """Symmetric scale that maps ``absmax`` to ``qmax``; zero and denormal ranges get the smallest
    normal fp32 scale instead of dividing by zero (an all-zero tensor quantizes to zeros)."""
    a = torch.as_tensor(absmax, dtype=torch.float32)
    return torch.clamp(a / qmax, min=torch.finfo(torch.float32).tiny)


def saturation_count(x: torch.Tensor, scale, axis: int | None = None) -> int:
    """How many elements of x fall outside the representable range (would saturate)."""
    s = _broadcast(scale, x, axis)
    r = torch.round(x.float() / s)
    return int(((r < QMIN) | (r > QMAX)).sum())
