"""The generation loop: prompt -> tokens and text, on any backend (or any calibration model).

    backend = open_backend(bundle, "auto")
    result = generate(backend, tokenizer.encode("ROMEO:"), GenerationConfig(max_new_tokens=64),
                      tokenizer=tokenizer, on_text=print)

One prefill (in chunks of the backend's ``max_prompt`` when the prompt is longer, the state
carried from chunk to chunk), then one ``decode`` per new token, until ``max_new_tokens``, an EOS
token or a stop string. Sampling happens here, on the CPU, from the backend's fp32 logits with a
seeded ``torch.Generator``: the same seed draws the same random numbers whatever the backend, so
backends whose logits agree produce the same tokens.

Text is decoded incrementally: a piece is final when it cannot change any more — no incomplete
UTF-8 character at its end (byte-level tokenizers split multi-byte characters over tokens) and no
partial match of a stop string. ``on_text`` receives only final pieces; their concatenation is the
result's ``text``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import torch

from jetmamba.errors import UsageError

STOP_REASONS = ("max_tokens", "eos", "stop_string")
# names tokenizers give their end-of-text token; byte-level tokenizers have none
EOS_TOKENS = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>", "<|eot_id|>", "<|im_end|>")
_REPLACEMENT = "\ufffd"  # what a decoder returns for bytes that are not (yet) a whole character


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class GenerationConfig:
    """How to generate. ``temperature`` 0 is greedy (``top_k`` / ``top_p`` / ``seed`` then play
    no part); ``top_k`` None and ``top_p`` 1.0 disable those filters. ``stop``: strings that end
    the text (cut before the first one found). ``eos_token_ids``: tokens that end generation unless
    ``ignore_eos``."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()
    eos_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False

    def validate(self, vocab_size: int | None = None) -> GenerationConfig:
        """Self, or a UsageError naming the first bad setting."""
        if not _is_int(self.max_new_tokens) or self.max_new_tokens < 1:
            raise UsageError(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        if not _is_number(self.temperature) or self.temperature < 0:
            raise UsageError(f"temperature must be a finite number >= 0 (0: greedy), got {self.temperature!r}")
        if self.top_k is not None and (not _is_int(self.top_k) or self.top_k < 1):
            raise UsageError(f"top_k must be an integer >= 1 (or unset), got {self.top_k!r}")
        if not _is_number(self.top_p) or not 0 < self.top_p <= 1:
            raise UsageError(f"top_p must be in (0, 1] (1: no nucleus filter), got {self.top_p!r}")
        if not _is_int(self.seed):
            raise UsageError(f"seed must be an integer, got {self.seed!r}")
        if isinstance(self.stop, str) or any(not isinstance(s, str) or not s for s in self.stop):
            raise UsageError(f"stop strings must be a list of non-empty strings, got {self.stop!r}")
        for t in self.eos_token_ids:
            if not _is_int(t) or t < 0 or (vocab_size is not None and t >= vocab_size):
                raise UsageError(f"EOS token id {t!r} is outside the vocabulary (0..{(vocab_size or 0) - 1})")
        return self

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class Generation:
    """What one ``generate`` call produced.

    ``tokens``: every token sampled (an EOS token that ended generation included, the tokens of a
    stop string included); ``text``: their text, without the EOS token, cut before a stop string;
    ``stop_reason``: ``max_tokens``, ``eos`` or ``stop_string``; ``ttft_seconds``: prefill (every
    chunk) and sampling of the first token; ``prefill_seconds``: the prefill calls alone;
    ``decode_seconds``: one entry per later token (its decode call and its sampling).
    """

    tokens: list[int]
    text: str
    stop_reason: str
    prompt_tokens: int
    ttft_seconds: float
    prefill_seconds: float
    decode_seconds: list[float] = field(default_factory=list)
    prefill_chunks: int = 1

    @property
    def decode_tokens_per_second(self) -> float:
        total = sum(self.decode_seconds)
        return len(self.decode_seconds) / total if self.decode_seconds and total > 0 else float("nan")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["decode_tokens_per_second"] = self.decode_tokens_per_second
        return d


# ---------------------------------------------------------------- sampling


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int | None = None, top_p: float = 1.0):
    """Logits [..., vocab] scaled by 1 / temperature, with every token outside the top ``top_k``
    and outside the nucleus (the fewest most-likely tokens whose probability reaches ``top_p``)
    set to -inf; the order is HF transformers' (temperature, top-k, top-p)."""
    logits = logits.float() / temperature
    vocab = logits.shape[-1]
    if top_k is not None and top_k < vocab:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # a token stays when the mass before it is still short of top_p: the most likely always
        # stays, and the nucleus stops at the first token that reaches top_p
        before = probs.cumsum(-1) - probs
        drop_sorted = before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample(logits: torch.Tensor, config: GenerationConfig, generator: torch.Generator | None = None) -> int:
    """One token from logits [vocab]: argmax when greedy, else a draw from the filtered softmax."""
    logits = logits.detach().float().cpu().reshape(-1)
    if config.greedy:
        return int(logits.argmax())
    probs = filter_logits(logits, config.temperature, config.top_k, config.top_p).softmax(-1)
    return int(torch.multinomial(probs, 1, generator=generator))


# ---------------------------------------------------------------- text


class IncrementalDecoder:
    """Token ids in, final text out: decodes a short window of recent tokens and holds back a
    trailing U+FFFD (an incomplete multi-byte character) until the next token completes it.

    The window starts at the last token whose text was final, so a tokenizer that decodes a token
    differently at the start of a string (a leading space) is compared against itself."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = 0  # ids[prefix:read] decode to text already returned
        self.read = 0

    def push(self, token: int) -> str:
        self.ids.append(int(token))
        done = self.tokenizer.decode(self.ids[self.prefix : self.read])
        text = self.tokenizer.decode(self.ids[self.prefix :])
        if len(text) > len(done) and not text.endswith(_REPLACEMENT):
            self.prefix, self.read = self.read, len(self.ids)
            return text[len(done) :]
        return ""

    def flush(self) -> str:
        """What is held back, as the tokenizer decodes it (an incomplete character at the very end
        of the generation stays U+FFFD: it is what the model produced)."""
        done = self.tokenizer.decode(self.ids[self.prefix : self.read])
        text = self.tokenizer.decode(self.ids[self.prefix :])
        self.prefix = self.read = len(self.ids)
        return text[len(done) :]


class StopMatcher:
    """Stop strings over a growing text: ``feed(piece)`` returns the text now final — everything
    but a tail that may still become a stop string — and ``stopped`` is set once one is found (the
    text is then cut before it). Stop strings spanning pieces (tokens) are found."""

    def __init__(self, stop: Sequence[str]):
        self.stop = tuple(stop)
        self.longest = max((len(s) for s in self.stop), default=0)
        self.pending = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.pending += piece
        if not self.stop:
            out, self.pending = self.pending, ""
            return out
        hits = [i for i in (self.pending.find(s) for s in self.stop) if i >= 0]
        if hits:
            self.stopped = True
            out, self.pending = self.pending[: min(hits)], ""
            return out
        keep = self._partial_tail()
        out = self.pending[: len(self.pending) - keep]
        self.pending = self.pending[len(self.pending) - keep :]
        return out

    def _partial_tail(self) -> int:
        """Length of the longest tail of ``pending`` that is a proper prefix of a stop string."""
        for n in range(min(self.longest - 1, len(self.pending)), 0, -1):
            tail = self.pending[-n:]
            if any(s.startswith(tail) for s in self.stop):
                return n
        return 0

    def flush(self) -> str:
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out


def eos_token_ids(tokenizer) -> tuple[int, ...]:
    """The end-of-text token ids a tokenizer declares (by the usual names); () for byte-level."""
    lookup = getattr(getattr(tokenizer, "_tok", None), "token_to_id", None)
    if lookup is None:
        return ()
    ids = {lookup(name) for name in EOS_TOKENS}
    return tuple(sorted(i for i in ids if i is not None))


# ---------------------------------------------------------------- the loop


def _validate_prompt(prompt: Sequence[int], vocab: int) -> list[int]:
    if isinstance(prompt, torch.Tensor):
        prompt = prompt.reshape(-1).tolist()
    prompt = list(prompt)
    if not prompt:
        raise UsageError("the prompt is empty: generation needs at least one token")
    bad = [t for t in prompt if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab]
    if bad:
        raise UsageError(f"prompt token {bad[0]!r} is outside the model's vocabulary (0..{vocab - 1})")
    return prompt


def _prefill(backend, prompt: list[int]):
    """Logits of the last prompt token and the state after it; a prompt longer than the backend's
    ``max_prompt`` goes in chunks, each continuing from the previous chunk's state."""
    chunk = backend.max_prompt or len(prompt)
    state, chunks = None, 0
    for start in range(0, len(prompt), chunk):
        ids = torch.tensor([prompt[start : start + chunk]], dtype=torch.int64, device=backend.device)
        logits, state = backend.prefill(ids, state)
        chunks += 1
    return logits[0, -1], state, chunks


@torch.inference_mode()
def generate(
    runner,
    prompt: Sequence[int],
    config: GenerationConfig | None = None,
    *,
    tokenizer=None,
    on_text: Callable[[str], None] | None = None,
    **options,
) -> Generation:
    """Generate after ``prompt`` (token ids) with ``runner``: a Backend, or a model with the
    calibration models' ``prefill`` / ``step`` (wrapped in a ModelBackend). ``options`` override
    fields of ``config`` (``generate(model, ids, max_new_tokens=64, temperature=0.8)``).

    ``tokenizer`` (encode / decode) gives the result its text; stop strings and ``on_text`` need
    one. ``on_text`` receives the text in final pieces as they come."""
    from jetmamba.runtime.backends.model import as_backend

    try:
        config = replace(config or GenerationConfig(), **options)
    except TypeError as exc:
        raise UsageError(f"generate: {exc}") from None
    if isinstance(config.stop, (list, str)):
        config = replace(config, stop=(config.stop,) if isinstance(config.stop, str) else tuple(config.stop))
    config = replace(config, eos_token_ids=tuple(config.eos_token_ids))
    backend = as_backend(runner)
    vocab = backend.config.vocab_size
    config.validate(vocab)
    prompt = _validate_prompt(prompt, vocab)
    if tokenizer is None and (config.stop or on_text is not None):
        raise UsageError("stop strings and streamed text need a tokenizer: pass tokenizer=")

    generator = torch.Generator().manual_seed(config.seed)
    decoder = IncrementalDecoder(tokenizer) if tokenizer is not None else None
    matcher = StopMatcher(config.stop)
    eos = frozenset(() if config.ignore_eos else config.eos_token_ids)
    text: list[str] = []

    def emit(piece: str) -> None:
        if piece:
            text.append(piece)
            if on_text is not None:
                on_text(piece)

    tokens: list[int] = []
    decode_seconds: list[float] = []
    start = time.perf_counter()
    logits, state, chunks = _prefill(backend, prompt)
    prefill_seconds = time.perf_counter() - start
    token = sample(logits, config, generator)
    ttft = time.perf_counter() - start
    stop_reason = "max_tokens"
    while True:
        tokens.append(token)
        if token in eos:
            stop_reason = "eos"
            break
        if decoder is not None:
            emit(matcher.feed(decoder.push(token)))
            if matcher.stopped:
                stop_reason = "stop_string"
                break
        if len(tokens) >= config.max_new_tokens:
            break
        t0 = time.perf_counter()
        step_logits, state = backend.decode(torch.tensor([token], dtype=torch.int64, device=backend.device), state)
        token = sample(step_logits[0], config, generator)
        decode_seconds.append(time.perf_counter() - t0)
    if decoder is not None and not matcher.stopped:
        emit(matcher.feed(decoder.flush()))
        if matcher.stopped:
            stop_reason = "stop_string"
        emit(matcher.flush())
    return Generation(
        tokens=tokens,
        text="".join(text),
        stop_reason=stop_reason,
        prompt_tokens=len(prompt),
        ttft_seconds=ttft,
        prefill_seconds=prefill_seconds,
        decode_seconds=decode_seconds,
        prefill_chunks=chunks,
    )
