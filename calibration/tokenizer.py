"""Tokenizers: the checkpoint's own ``tokenizer.json`` (offline, with ``tokenizers``) or bytes.

No special tokens are added when encoding: perplexity and calibration see exactly the text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from jetmamba.errors import CheckpointError

TOKENIZER_FILE = "tokenizer.json"
_OTHER_TOKENIZER_FILES = ("tokenizer.model", "vocab.json", "merges.txt", "tokenizer_config.json")


class Tokenizer(Protocol):
    name: str
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class ByteTokenizer:
    """Byte-level: token i is byte i of the UTF-8 text (vocab 256, no special tokens)."""

    name = "bytes"
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(int(i) & 0xFF for i in ids).decode("utf-8", errors="replace")


class HFTokenizer:
    """A ``tokenizer.json`` read by the ``tokenizers`` library; nothing is downloaded."""

    def __init__(self, path: Path):
        from tokenizers import Tokenizer as _Tok

        try:
            self._tok = _Tok.from_file(str(path))
        except Exception as exc:  # noqa: BLE001 - the Rust side raises a generic Exception
            raise CheckpointError(f"{path}: not a valid tokenizer.json ({str(exc).splitlines()[0][:200]})") from None
        self.name = str(path)
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)


def load_tokenizer(model_dir: Path, vocab_size: int, override: str | Path | None = None) -> Tokenizer:
    """The checkpoint's tokenizer.json, else ``override`` (a tokenizer.json or a directory with
    one), else bytes when the model's vocabulary is 256 and there are no tokenizer files."""
    if override is not None:
        p = Path(override)
        p = p / TOKENIZER_FILE if p.is_dir() else p
        if not p.is_file():
            raise CheckpointError(f"--tokenizer {override}: no {TOKENIZER_FILE} there")
        tok: Tokenizer = HFTokenizer(p)
    elif (Path(model_dir) / TOKENIZER_FILE).is_file():
        tok = HFTokenizer(Path(model_dir) / TOKENIZER_FILE)
    elif vocab_size == 256 and not any((Path(model_dir) / f).exists() for f in _OTHER_TOKENIZER_FILES):
        return ByteTokenizer()
    else:
        others = [f for f in _OTHER_TOKENIZER_FILES if (Path(model_dir) / f).exists()]
        hint = f" (found {', '.join(others)}, but only tokenizer.json is read)" if others else ""
        raise CheckpointError(
            f"{model_dir}: no {TOKENIZER_FILE}{hint}; pass --tokenizer PATH, e.g. the GPT-NeoX "
            "tokenizer.json that state-spaces/mamba-* checkpoints use"
        )
    if tok.vocab_size > vocab_size:
        raise CheckpointError(
            f"tokenizer {tok.name} has {tok.vocab_size} tokens but the model only {vocab_size} logits"
        )
    return tok
