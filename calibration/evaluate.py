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
            # per-token losses in fp32, summed in fp64: a long evaluation must not lose digits
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="none")
            total_nll += float(nll.double().sum())
            count += batch[:, 1:].numel()
            bar.update(batch.shape[0])
    seconds = time.perf_counter() - start
    mean = total_nll / count
    return PerplexityResult(
        perplexity=math.exp(mean),
        nll=mean,
        tokens=windows.numel(),
        predictions=count,
        windows=windows.shape[0],
        seq_len=seq_len,
        seconds=seconds,
    )
