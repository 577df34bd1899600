"""Text generation with the fp reference model's state API (prefill once, then one step per token)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from jetmamba.errors import UsageError


@dataclass(frozen=True)
class Generation:
    tokens: list[int]  # the new tokens only
    prompt_tokens: int
    prefill_seconds: float
    decode_seconds: float  # for len(tokens) - 1 steps (the first token comes from the prefill)

    @property
    def decode_tokens_per_second(self) -> float:
        steps = len(self.tokens) - 1
        return steps / self.decode_seconds if steps > 0 and self.decode_seconds > 0 else float("nan")


def _sample(logits: torch.Tensor, temperature: float, top_k: int | None, g: torch.Generator) -> torch.Tensor:
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, -1).cpu(), 1, generator=g).squeeze(-1).to(logits.device)


@torch.inference_mode()
def generate(
    model,
    prompt: list[int],
    max_new_tokens: int,
    *,
    temperature: float = 0.8,
    top_k: int | None = None,
    seed: int = 0,
) -> Generation:
    """Sample ``max_new_tokens`` after ``prompt`` (greedy when temperature is 0); seeded."""
    if not prompt:
        raise UsageError("the prompt is empty: generation needs at least one token")
    if max_new_tokens < 1:
        raise UsageError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if temperature < 0:
        raise UsageError(f"temperature must be >= 0, got {temperature}")
    vocab = model.config.vocab_size
    bad = [t for t in prompt if not 0 <= t < vocab]
    if bad:
        raise UsageError(f"prompt token {bad[0]} is outside the model's vocabulary (0..{vocab - 1})")
    g = torch.Generator().manual_seed(seed)
    ids = torch.tensor([prompt], dtype=torch.int64, device=model.device)
    t0 = time.perf_counter()
    logits, state = model.prefill(ids)
    token = _sample(logits[:, -1], temperature, top_k, g)
    t1 = time.perf_counter()
    out = [int(token)]
    for _ in range(max_new_tokens - 1):
        logits, state = model.step(token, state)
        token = _sample(logits, temperature, top_k, g)
        out.append(int(token))
    t2 = time.perf_counter()
    return Generation(out, len(prompt), t1 - t0, t2 - t1)
