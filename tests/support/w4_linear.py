"""Shared by the W4A16Linear / W4A8Linear kernel tests: inputs in the packed int4 layout, the
launchers through ctypes, and the error model the outputs are held to.

Error model (the tolerance, stated once). Kernel and reference compute the same fp32 products
(exact: a 4-bit code times an fp16 value or scale, or integer dot products) and add them in
different orders. Each order's fp32 sum is within gamma_K * A of the exact value (A = sum_k |w_k
x_k| + |bias|, gamma_K = K u / (1 - K u), u = 2^-24; Higham, Accuracy and Stability, 3.1), so the
two sums are within 2 gamma_K A of each other (W4A8: A includes x_scale, whose product adds one
rounding, covered by the same K-term bound). Each is then rounded once to fp16; two values that far
apart round at most one fp16 ulp (of the larger) further apart. Per element:

    |y_kernel - y_reference| <= 2 gamma_K A + ulp16(max(|y_kernel|, |y_reference|))

It is a worst-case bound (the tests cannot flake on a summation order); in practice the outputs
agree to an fp16 rounding step, which the NMSE bound below checks for the tensor as a whole
(two fp16 roundings, each at most 2^-11 relative: NMSE <= 2^-20 ~ 1e-6; NMSE_BOUND leaves 2x).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch

from jetmamba.compiler.ops.int4 import quantize_rtn, unpack_int4

U32 = 2.0**-24
NMSE_BOUND = 2e-6
SUCCESS, INVALID_VALUE = 0, 1


@dataclass(frozen=True)
class Case:
    m: int
    n: int
    k: int
    group_size: int = 128
    bias: bool = True
    seed: int = 0

    @property
    def id(self) -> str:
        return f"M{self.m}-N{self.n}-K{self.k}-G{self.group_size}{'-bias' if self.bias else ''}"


def weights(case: Case):
    """(qweight uint8 [N, K/2], scales fp16 [N, K/G], bias fp32 [N] or None, codes int8 [N, K])."""
    g = torch.Generator().manual_seed(case.seed * 7919 + case.k + case.n)
    w = torch.randn(case.n, case.k, generator=g) * 0.05
    w[:, : case.k // 4] *= 8  # groups of different magnitudes: the scales matter
    qweight, scales = quantize_rtn(w, case.group_size)
    bias = torch.randn(case.n, generator=g) if case.bias else None
    return qweight, scales, bias, unpack_int4(qweight)


def ulp16(v: torch.Tensor) -> torch.Tensor:
    """The fp16 unit in the last place at |v| (subnormals: 2^-24)."""
    a = v.double().abs().clamp_min(2.0**-14)
    return torch.exp2(torch.floor(torch.log2(a)) - 10)


def check_outputs(y: torch.Tensor, want: torch.Tensor, abs_terms: torch.Tensor, k: int) -> tuple[float, float]:
    """y (kernel) against want (reference), fp16 [..., N]; abs_terms = sum_k |w x| + |bias| (fp64).
    Returns (worst error / bound, NMSE)."""
    assert y.dtype == torch.float16 and y.shape == want.shape
    assert torch.isfinite(y).all(), "non-finite outputs (an output left unwritten reads NaN)"
    gamma = k * U32 / (1 - k * U32)
    bound = 2 * gamma * abs_terms + ulp16(torch.maximum(y.double().abs(), want.double().abs()))
    err = (y.double() - want.double()).abs()
    worst = float((err / bound).max()) if y.numel() else 0.0
    assert worst <= 1.0, f"an output is {worst:.3g} x the error model's bound off"
    e = want.double()
    nmse = float(((y.double() - e) ** 2).sum() / (e**2).sum().clamp_min(1e-300))
    assert nmse <= NMSE_BOUND, f"NMSE {nmse:.3g} > {NMSE_BOUND:g}"
    return worst, nmse


def bind(fn, params_type) -> None:
    fn.argtypes = [ctypes.POINTER(params_type), ctypes.c_void_p]
    fn.restype = ctypes.c_int


def ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()
