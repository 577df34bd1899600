"""Tokenizers: the checkpoint's tokenizer.json offline, bytes for vocab-256 models, clear errors."""

from __future__ import annotations

import json

import pytest

from jetmamba.calibration.tokenizer import ByteTokenizer, HFTokenizer, load_tokenizer
from jetmamba.errors import CheckpointError


def _word_tokenizer(path):
    """A tiny tokenizer.json built with `tokenizers` itself (nothing downloaded), with a BOS
    post-processor, so a test can tell whether special tokens are added."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"<bos>": 0, "<unk>": 1, "the": 2, "cat": 3, "sat": 4}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 0)])
    tok.save(str(path))
    return path


def test_bytes_roundtrip_utf8():
    tok = ByteTokenizer()
    text = "naïve — Straße ✓"
    assert tok.encode(text) == list(text.encode("utf-8"))
    assert tok.decode(tok.encode(text)) == text


def test_byte_level_when_vocab_256_and_no_files(tmp_path):
    assert isinstance(load_tokenizer(tmp_path, 256), ByteTokenizer)


def test_checkpoint_tokenizer_json_without_special_tokens(tmp_path):
    _word_tokenizer(tmp_path / "tokenizer.json")
    tok = load_tokenizer(tmp_path, 8)
    assert isinstance(tok, HFTokenizer)
    assert tok.encode("the cat sat") == [2, 3, 4]  # no <bos>: perplexity sees exactly the text


def test_override_file_or_directory(tmp_path):
    _word_tokenizer(tmp_path / "tokenizer.json")
    (tmp_path / "model").mkdir()
    assert load_tokenizer(tmp_path / "model", 50, override=tmp_path).encode("cat") == [3]
    assert load_tokenizer(tmp_path / "model", 50, override=tmp_path / "tokenizer.json").encode("sat") == [4]


def test_missing_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no tokenizer.json.*--tokenizer"):
        load_tokenizer(tmp_path, 50280)
    (tmp_path / "vocab.json").write_text("{}")
    with pytest.raises(CheckpointError, match="found vocab.json"):
        load_tokenizer(tmp_path, 256)


def test_corrupt_tokenizer_json(tmp_path):
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": "nonsense"}))
    with pytest.raises(CheckpointError, match="not a valid tokenizer.json"):
        load_tokenizer(tmp_path, 100)


def test_tokenizer_larger_than_model(tmp_path):
    _word_tokenizer(tmp_path / "tokenizer.json")
    with pytest.raises(CheckpointError, match="only 3 logits"):
        load_tokenizer(tmp_path, 3)
