"""Activation statistics gathered during calibration, in memory that does not grow with the data.

Every observer takes ``update(x)`` calls (x any shape; the observed channel axis is the last one
unless stated) and gives its statistic as a tensor. Symmetric int8 needs the magnitude only, so
the range observers work on |x|.

- :class:`AbsMax`: max |x|, per tensor or per channel.
- :class:`Percentile`: the exact alpha-quantile of |x| over everything observed (the same value
  as ``torch.quantile`` over the concatenation, linear interpolation), holding only the top tail
  it needs: ``ceil((1 - alpha) * N) + 2`` values for N observed elements (N known in advance).
- :class:`ChannelMeanAbs`: mean |x| per channel (Quamba2's sort-and-cluster).
- :class:`Covariance`: the uncentred second moment E[x x^T] and the mean over channels, fp64
  (MambaQuant's KLT).
"""

from __future__ import annotations

import math

import torch

from jetmamba.errors import DataError


class NonFiniteActivation(DataError):
    """A NaN or Inf reached an observed activation: ``name`` the site, ``kind`` NaN or Inf (NaN
    when both), ``row`` the first index of the first axis (the batch) holding one, ``rows`` that
    axis's length. :func:`jetmamba.calibration.quantize.observe` turns it into the window number."""

    def __init__(self, name: str, kind: str, row: int, rows: int):
        super().__init__(f"{name} has {kind} (a non-finite activation)")
        self.name, self.kind, self.row, self.rows = name, kind, row, rows

    def on_windows(self, start: int, batch: int, total: int) -> DataError:
        """The same fault, named by calibration window (``start``: the batch's first window)."""
        where = (
            f"calibration window {start + self.row}"
            if self.rows == batch
            else f"calibration windows {start}..{start + batch - 1}"
        )
        return DataError(f"{self.name} has {self.kind} on {where} (of {total}, counting from 0)")


def _check_finite(x: torch.Tensor, name: str) -> None:
    finite = torch.isfinite(x)
    if bool(finite.all()):
        return
    kind = "NaN" if bool(torch.isnan(x).any()) else "Inf"
    rows = x.shape[0] if x.ndim else 1
    first = int((~finite).reshape(-1).nonzero()[0, 0])
    raise NonFiniteActivation(name, kind, first // max(1, x.numel() // rows), rows)


class AbsMax:
    """max |x| over all updates; per tensor (``per_channel=False``) or per channel of the last axis."""

    def __init__(self, name: str = "activation", per_channel: bool = False):
        self.name = name
        self.per_channel = per_channel
        self.value: torch.Tensor | None = None

    def update(self, x: torch.Tensor) -> None:
        _check_finite(x, self.name)
        a = x.detach().abs()
        m = a.reshape(-1, a.shape[-1]).amax(0) if self.per_channel else a.amax()
        m = m.double().cpu()
        self.value = m if self.value is None else torch.maximum(self.value, m)

    def result(self) -> torch.Tensor:
        if self.value is None:
            raise DataError(f"no data was observed at {self.name}")
        return self.value


class Percentile:
    """Exact alpha-quantile of |x| over ``total`` elements, from the top tail only.

    torch.quantile's linear interpolation: with v the N values sorted ascending and
    q = alpha * (N - 1), the result is v[floor q] + (q - floor q) (v[floor q + 1] - v[floor q]).
    Both order statistics lie in the top N - floor(q) values, which is all this keeps.
    """

    def __init__(self, alpha: float, total: int, name: str = "activation"):
        if not 0 < alpha < 1:
            raise ValueError(f"percentile alpha must be in (0, 1), got {alpha}")
        if total < 1:
            raise ValueError(f"total must be positive, got {total}")
        self.name, self.alpha, self.total = name, alpha, total
        self.q = alpha * (total - 1)
        self.keep = total - math.floor(self.q)  # values at and above rank floor(q)
        # the tail's values with their signs: int8 is [-128, 127], so whether a value saturates
        # depends on its sign (see saturated)
        self.tail = torch.empty(0, dtype=torch.float32)
        self.seen = 0

    @property
    def top(self) -> torch.Tensor:
        """|x| of the kept tail."""
        return self.tail.abs()

    def update(self, x: torch.Tensor) -> None:
        _check_finite(x, self.name)
        a = x.detach().reshape(-1).float().cpu()
        self.seen += a.numel()
        if self.seen > self.total:
            raise ValueError(f"{self.name}: observed {self.seen} values, more than the {self.total} announced")
        pool = torch.cat([self.tail, a])
        if pool.numel() > self.keep:
            pool = pool[torch.topk(pool.abs(), self.keep, sorted=False).indices]
        self.tail = pool

    def saturated(self, scale) -> int:
        """How many observed values quantize outside [-128, 127] with ``scale`` (ONNX rounding),
        exactly: with scale >= result() / 127, any such value has |x| >= 127.5 * scale > result(),
        so it is in the kept tail."""
        from jetmamba.compiler.ops.quant import saturation_count

        return saturation_count(self.tail, scale)

    def result(self) -> torch.Tensor:
        if self.seen != self.total:
            raise ValueError(f"{self.name}: observed {self.seen} values, {self.total} were announced")
        ordered = torch.sort(self.top).values.double()  # ascending; ordered[0] is rank floor(q)
        frac = self.q - math.floor(self.q)
        low = ordered[0]
        high = ordered[1] if ordered.numel() > 1 else low
        return low + frac * (high - low)


class ChannelMeanAbs:
    """Mean |x| per channel of the last axis."""

    def __init__(self, name: str = "activation"):
        self.name = name
        self.sum: torch.Tensor | None = None
        self.count = 0

    def update(self, x: torch.Tensor) -> None:
        _check_finite(x, self.name)
        a = x.detach().abs().reshape(-1, x.shape[-1]).double().cpu()
        s = a.sum(0)
        self.sum = s if self.sum is None else self.sum + s
        self.count += a.shape[0]

    def result(self) -> torch.Tensor:
        if self.sum is None:
            raise DataError(f"no data was observed at {self.name}")
        return self.sum / self.count


class Covariance:
    """E[x x^T] and E[x] over the last axis, accumulated in fp64 (d x d memory)."""

    def __init__(self, name: str = "activation"):
        self.name = name
        self.xtx: torch.Tensor | None = None
        self.sum: torch.Tensor | None = None
        self.count = 0

    def update(self, x: torch.Tensor) -> None:
        _check_finite(x, self.name)
        v = x.detach().reshape(-1, x.shape[-1]).double().cpu()
        xtx, s = v.t() @ v, v.sum(0)
        self.xtx = xtx if self.xtx is None else self.xtx + xtx
        self.sum = s if self.sum is None else self.sum + s
        self.count += v.shape[0]

    def second_moment(self) -> torch.Tensor:
        if self.xtx is None:
            raise DataError(f"no data was observed at {self.name}")
        return self.xtx / self.count

    def covariance(self) -> torch.Tensor:
        mean = self.sum / self.count
        return self.second_moment() - torch.outer(mean, mean)
