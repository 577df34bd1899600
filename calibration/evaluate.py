"""Perplexity, with the protocol of the Mamba quantization papers.

Tokenize the whole text (no BOS/EOS or other special tokens), optionally keep the first
``max_tokens``, cut into consecutive non-overlapping windows of ``seq_len`` tokens (a last
partial window is dropped), and take exp(mean next-token NLL) over every prediction inside the
windows: ``seq_len - 1`` per window, each window starting from a zero state.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from jetmamba.calibration.data import consecutive_windows
from jetmamba.calibration.guards import first_non_finite_layer
from jetmamba.errors import DataError
from jetmamba.progress import progress


@dataclass(frozen=True)
class PerplexityResult:
    perplexity: float
    nll: float  # mean next-token negative log-likelihood, nats
    tokens: int  # tokens inside the evaluated windows
    predictions: int  # next-token predictions scored (windows * (seq_len - 1))
    windows: int
    seq_len: int
    seconds: float  # wall time of the evaluation loop

    def to_dict(self) -> dict:
        return asdict(self)


@torch.inference_mode()
def perplexity(
    model, tokens: torch.Tensor, seq_len: int, *, batch_size: int = 1, show_progress: bool = True
) -> PerplexityResult:
    """Perplexity of ``model`` (anything mapping [b, l] ids to [b, l, vocab] logits) on ``tokens``."""
    windows = consecutive_windows(tokens, seq_len)
    device = getattr(model, "device", "cpu")
    total_nll = 0.0
    count = 0
    start = time.perf_counter()
    with progress(total=windows.shape[0], desc="perplexity", unit="win", disable=not show_progress) as bar:
        for i in range(0, windows.shape[0], batch_size):
            batch = windows[i : i + batch_size].to(device)
            logits = model(batch)[:, :-1].float()
            if not bool(torch.isfinite(logits).all()):
                _raise_non_finite(model, batch, logits, i, windows.shape[0])
            if int(batch.max()) >= logits.shape[-1]:
                raise DataError(f"token id {int(batch.max())} is outside the model's vocabulary of {logits.shape[-1]}")
            # per-token losses in fp32, summed in fp64: a long evaluation must not lose digits
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="none")
            total_nll += float(nll.double().sum())
            count += batch[:, 1:].numel()
            bar.update(batch.shape[0])
    seconds = time.perf_counter() - start
    mean = total_nll / count
    return PerplexityResult(
        perplexity=math.exp(mean) if mean < 709.0 else math.inf,  # exp overflows a float beyond ~709.78
        nll=mean,
        tokens=windows.numel(),
        predictions=count,
        windows=windows.shape[0],
        seq_len=seq_len,
        seconds=seconds,
    )


def _raise_non_finite(model, batch: torch.Tensor, logits: torch.Tensor, first: int, total: int):
    """A DataError naming the first window whose logits are not finite and, where the model lets
    us watch its layers, the first layer whose output is not."""
    rows = (~torch.isfinite(logits)).reshape(logits.shape[0], -1).any(dim=1)
    row = int(rows.nonzero()[0, 0])
    kind = "NaN" if bool(torch.isnan(logits[row]).any()) else "Inf"
    where = first_non_finite_layer(model, batch[row : row + 1])
    raise DataError(
        f"the logits have {kind} on evaluation window {first + row} (of {total}, counting from 0)"
        + (f"; it first appears at {where}" if where else "")
    )
