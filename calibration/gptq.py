"""GPTQ (Frantar et al., arXiv 2210.17323): 4-bit weights that minimise a layer's output error on
calibration activations, on the packed int4 grid of :mod:`jetmamba.calibration.qlayers`.

For a linear layer y = W x with calibration inputs X [m, K], the Hessian of the layer's squared
output error is H = 2 X^T X. Columns are quantized one at a time and each column's rounding error is
pushed onto the columns not yet quantized through the inverse Hessian (its upper Cholesky factor),
in blocks of 128 columns with lazy updates of the rest. What jetmamba does:

- the Hessian is accumulated in fp64 from the inputs the deployed layer sees: after the recipe's
  rotations, reordering and smoothing (the transformed weights are what is quantized) and, for
  W4A8, after the int8 quantization of the input with its calibrated static scale;
- damping: ``damp`` (default 0.01) times the mean of diag(H) added to the diagonal; dead inputs
  (diag(H) = 0: never active on the calibration data) get H_ii = 1 and a zero weight column, as in
  the paper's code;
- scales: symmetric, one fp16 scale per output channel and group of G columns (G = 128, or the
  layout's fallback), max |w| / 7 over the group. Without act-order a group's scale is computed
  from the error-updated weights when GPTQ first reaches the group (the paper's code); with
  act-order (columns in decreasing diag(H)) the scales are *static*: computed from the weights
  before any update, so the groups stay the layout's contiguous column groups whatever the order;
- maths in fp32 (the weight updates) and fp64 (Hessian, Cholesky), on the device the Hessian is on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from jetmamba.calibration.qlayers import INT4_MAX, INT4_MIN, int4_scales
from jetmamba.errors import DataError


@dataclass(frozen=True)
class GPTQConfig:
    damp: float = 0.01  # fraction of mean diag(H) added to the diagonal
    act_order: bool = False  # quantize columns in decreasing diag(H) (static group scales)
    block_size: int = 128  # columns per lazy-update block (a multiple of every group size)


class Hessian:
    """H = 2 X^T X / m accumulated over batches of a layer's inputs (any leading shape, K last).

    The 1/m normalisation does not change GPTQ's solution; it keeps the damping relative and the
    numbers of a large calibration set in range."""

    def __init__(self, k: int, device=None):
        self.h = torch.zeros(k, k, dtype=torch.float64, device=device)
        self.rows = 0

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).to(self.h.device, torch.float64)
        self.h.addmm_(x.T, x, alpha=2.0)
        self.rows += x.shape[0]

    def result(self) -> torch.Tensor:
        if self.rows == 0:
            raise DataError("GPTQ: a layer saw no calibration inputs")
        return self.h / self.rows


def layer_error(w: torch.Tensor, w_hat: torch.Tensor, h: torch.Tensor) -> float:
    """The layer's output error on the calibration inputs, mean over inputs of ||(W - W^) x||^2
    = tr((W - W^) H (W - W^)^T) / 2 with H = 2 X^T X / m."""
    d = (w.double() - w_hat.double()).to(h.device)
    return float(((d @ h) * d).sum() / 2)


@torch.no_grad()
def gptq_int4(
    w: torch.Tensor, h: torch.Tensor, group: int, config: GPTQConfig = GPTQConfig()
) -> tuple[torch.Tensor, torch.Tensor]:
    """GPTQ of a [N, K] weight with Hessian ``h`` [K, K] -> (codes int8 [N, K] in [-8, 7], scales
    fp16 [N, K/G]), on the device of ``h``; w = scales[n, k // G] * codes[n, k] on dequantization."""
    n, k = w.shape
    if h.shape != (k, k):
        raise ValueError(f"GPTQ: a Hessian of shape {tuple(h.shape)} for a weight of {k} input channels")
    if k % group or config.block_size % group:
        raise ValueError(f"GPTQ: group {group} must divide K={k} and the block size {config.block_size}")
    device = h.device
    W = w.detach().to(device, torch.float32).clone()
    H = h.detach().to(torch.float64).clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    perm = torch.argsort(torch.diag(H), descending=True) if config.act_order else None
    # static scales (act-order): from the weights before any update; otherwise filled group by group
    scales = int4_scales(W, group) if perm is not None else torch.empty(n, k // group, dtype=torch.float16)
    scales = scales.to(device)
    if perm is not None:
        W, H = W[:, perm], H[perm][:, perm]
    H.diagonal().add_(config.damp * float(torch.diag(H).mean()))
    try:
        L = torch.linalg.cholesky(H)
        hinv = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True).to(torch.float32)
    except torch.linalg.LinAlgError:
        raise DataError("GPTQ: the damped Hessian is not positive definite; raise the damping") from None
    codes = torch.zeros(n, k, dtype=torch.int8, device=device)
    column = perm if perm is not None else torch.arange(k, device=device)
    for i1 in range(0, k, config.block_size):
        i2 = min(i1 + config.block_size, k)
        W1 = W[:, i1:i2].clone()
        err1 = torch.zeros_like(W1)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = int(column[i1 + i])
            g = col // group
            if perm is None and col % group == 0:  # a group is reached at its first column
                scales[:, g] = int4_scales(W1[:, i : i + group], group)[:, 0]
            s = scales[:, g].float()
            wcol = W1[:, i]
            q = torch.round(wcol / s).clamp_(INT4_MIN, INT4_MAX)
            codes[:, i1 + i] = q.to(torch.int8)
            e = (wcol - q * s) / hinv1[i, i]
            W1[:, i:] -= e[:, None] * hinv1[i, i:][None, :]
            err1[:, i] = e
        W[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    if perm is not None:
        codes = codes[:, torch.argsort(perm)]
    return codes.cpu(), scales.cpu()
