"""Packed int4 weights: the one layout the quantizer writes and the W4A16 / W4A8 kernels read.

A 4-bit GEMM weight W [N, K] (PyTorch Linear layout: N output channels, K input channels) is

- ``qweight`` uint8 [N, K/2]: symmetric int4 codes q in [-8, 7], two per byte along K,
  byte (n, j) = (q[n, 2j] & 0xF) | ((q[n, 2j+1] & 0xF) << 4): the low nibble is the even k, and
  nibbles are two's complement (0x8 = -8, 0xF = -1). K is even.
- ``scales`` fp16 [N, K/G]: one scale per output channel and group of G consecutive input channels
  (G = 128 by default; a layer whose K is not a multiple of 128 uses the largest of 64, 32 that
  divides it: :func:`group_size_for`).
- w[n, k] = float(scales[n, k // G]) * q[n, k]. The product of an fp16 scale (11 significant
  bits) and a 4-bit code is exact in fp32, so every executor dequantizes to the same fp32 weight.

RTN (:func:`quantize_rtn`): s = max |w[n, group]| / 7 rounded to fp16, q = round_half_to_even(w / s)
clamped to [-8, 7] (the codes are computed with the stored fp16 scale, so dequantization
reproduces what was chosen).
"""

from __future__ import annotations

import torch

INT4_MIN, INT4_MAX = -8, 7
GROUP_SIZES = (128, 64, 32)  # in order of preference; the kernels need a multiple of 32
FP16_TINY = 6.103515625e-05  # the smallest normal fp16: the scale of an all-zero group


def group_size_for(k: int) -> int:
    """The largest of 128, 64, 32 that divides ``k`` (the input channels of a layer)."""
    for g in GROUP_SIZES:
        if k % g == 0:
            return g
    raise ValueError(f"{k} input channels: no int4 group size among {GROUP_SIZES} divides it")


def check_layout(n: int, k: int, group_size: int) -> None:
    """ValueError unless [n, k] can be stored with ``group_size``: K even, G >= 1 dividing K."""
    if n < 1 or k < 2 or k % 2:
        raise ValueError(f"an int4 weight [{n}, {k}] needs N >= 1 and an even K")
    if group_size < 1 or k % group_size:
        raise ValueError(f"group size {group_size} does not divide K = {k}")


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """int codes [N, K] in [-8, 7] -> uint8 [N, K/2], the low nibble the even k."""
    if q.ndim != 2 or q.shape[1] % 2:
        raise ValueError(f"pack_int4 takes codes [N, K] with K even, got {tuple(q.shape)}")
    if q.numel() and (int(q.min()) < INT4_MIN or int(q.max()) > INT4_MAX):
        raise ValueError("int4 codes must lie in [-8, 7]")
    nib = q.to(torch.int16) & 0xF
    return (nib[:, 0::2] | (nib[:, 1::2] << 4)).to(torch.uint8)


def unpack_int4(qweight: torch.Tensor) -> torch.Tensor:
    """uint8 [N, K/2] -> int8 codes [N, K] in [-8, 7]."""
    if qweight.dtype != torch.uint8 or qweight.ndim != 2:
        raise ValueError(f"unpack_int4 takes uint8 [N, K/2], got {qweight.dtype} {tuple(qweight.shape)}")
    b = qweight.to(torch.int16)
    nib = torch.stack([b & 0xF, b >> 4], dim=-1).reshape(qweight.shape[0], -1)
    return torch.where(nib >= 8, nib - 16, nib).to(torch.int8)


def dequantize_int4(qweight: torch.Tensor, scales: torch.Tensor, group_size: int) -> torch.Tensor:
    """The fp32 weight [N, K] a packed int4 weight carries (exact: see the module docstring)."""
    q = unpack_int4(qweight)
    n, k = q.shape
    check_layout(n, k, group_size)
    if tuple(scales.shape) != (n, k // group_size):
        raise ValueError(f"scales {tuple(scales.shape)} do not match [N, K/G] = [{n}, {k // group_size}]")
    w = q.float().reshape(n, k // group_size, group_size) * scales.float().unsqueeze(-1)
    return w.reshape(n, k)


def quantize_rtn(w: torch.Tensor, group_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Round-to-nearest int4 of w [N, K] -> (qweight uint8 [N, K/2], scales fp16 [N, K/G]);
    ``group_size`` defaults to :func:`group_size_for` K."""
    n, k = w.shape
    g = group_size_for(k) if group_size is None else group_size
    check_layout(n, k, g)
    grouped = w.detach().float().reshape(n, k // g, g)
    scales = (grouped.abs().amax(-1) / INT4_MAX).clamp_min(FP16_TINY).half()
    q = torch.round(grouped / scales.float().unsqueeze(-1)).clamp_(INT4_MIN, INT4_MAX)
    return pack_int4(q.reshape(n, k).to(torch.int8)), scales
