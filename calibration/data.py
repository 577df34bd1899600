"""Text for calibration and evaluation: reading it, tokenizing it, cutting it into windows.

Accepted inputs: a text file; a ``.jsonl`` file with a string ``text`` field on every line; a
directory of ``.txt`` files (sorted by name, joined by a blank line). Text must be UTF-8; empty or
binary input is refused with a one-line error.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from jetmamba.errors import DataError

MAX_TEXT_BYTES = 2 * 1024**3  # refuse to read more than this into memory


def _decode(raw: bytes, where: str) -> str:
    if b"\x00" in raw[: 1 << 20]:
        raise DataError(f"{where}: binary data (NUL bytes), not text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{where}: not UTF-8 text (invalid byte at offset {exc.start})") from None


def _read_bytes(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_TEXT_BYTES:
            raise DataError(f"{path}: {size} bytes is more text than jetmamba reads at once (2 GiB)")
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _read_jsonl(path: Path) -> str:
    texts = []
    for lineno, line in enumerate(_decode(_read_bytes(path), str(path)).splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{lineno}: not JSON ({exc.msg})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise DataError(f"{path}:{lineno}: expected an object with a string 'text' field")
        texts.append(obj["text"])
    return "\n\n".join(texts)


def read_text(path: str | os.PathLike) -> str:
    """The whole text of a file, a .jsonl (``text`` fields) or a directory of .txt files."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix == ".txt" and f.is_file())
        if not files:
            raise DataError(f"{p}: directory holds no .txt files")
        text = "\n\n".join(_decode(_read_bytes(f), str(f)) for f in files)
    elif p.is_file():
        text = _read_jsonl(p) if p.suffix == ".jsonl" else _decode(_read_bytes(p), str(p))
    elif p.exists():
        raise DataError(f"{p}: not a file or directory")
    else:
        raise DataError(f"{p}: no such file or directory")
    if not text.strip():
        raise DataError(f"{p}: no text (empty or whitespace only)")
    return text


def tokenize(text: str, tokenizer, max_tokens: int | None = None) -> torch.Tensor:
    """Token ids (int64, 1-D), no special tokens added; the first ``max_tokens`` if given.

    Where ``max_tokens`` is given only a prefix of the text is encoded (with margin), so a limit
    on a large corpus does not pay for tokenizing all of it.
    """
    if max_tokens is not None and len(text) > 8 * max_tokens + 1024:
        prefix = text[: 8 * max_tokens + 1024]
        ids = tokenizer.encode(prefix)
        if len(ids) >= max_tokens:
            return torch.tensor(ids[:max_tokens], dtype=torch.int64)
    ids = tokenizer.encode(text)
    if max_tokens is not None:
        ids = ids[:max_tokens]
    return torch.tensor(ids, dtype=torch.int64)


def consecutive_windows(tokens: torch.Tensor, seq_len: int) -> torch.Tensor:
    """[W, seq_len]: consecutive non-overlapping windows; a last partial window is dropped."""
    if seq_len < 2:
        raise DataError(f"sequence length must be at least 2 (one prediction), got {seq_len}")
    n = tokens.numel() // seq_len
    if n == 0:
        raise DataError(f"the text has {tokens.numel()} tokens, fewer than one window of {seq_len}")
    return tokens[: n * seq_len].view(n, seq_len)


def sample_windows(tokens: torch.Tensor, count: int, length: int, seed: int = 0) -> torch.Tensor:
    """[count, length]: windows at random start offsets, the same for the same seed."""
    if length < 1 or count < 1:
        raise DataError(f"need count >= 1 and length >= 1, got {count} windows of {length}")
    if tokens.numel() < length:
        raise DataError(f"the text has {tokens.numel()} tokens, fewer than one window of {length}")
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, tokens.numel() - length + 1, (count,), generator=g)
    return torch.stack([tokens[s : s + length] for s in starts.tolist()])
