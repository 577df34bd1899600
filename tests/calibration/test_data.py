"""Text data: files, jsonl, directories; windows; and refusals of unusable input."""

from __future__ import annotations

import json

import pytest
import torch

from jetmamba.calibration.data import consecutive_windows, read_text, sample_windows, tokenize
from jetmamba.calibration.tokenizer import ByteTokenizer
from jetmamba.errors import DataError


def test_text_file(tmp_path):
    (tmp_path / "a.txt").write_text("hello world\n", encoding="utf-8")
    assert read_text(tmp_path / "a.txt") == "hello world\n"


def test_jsonl(tmp_path):
    lines = [json.dumps({"text": "first"}), "", json.dumps({"text": "second", "id": 2})]
    (tmp_path / "d.jsonl").write_text("\n".join(lines))
    assert read_text(tmp_path / "d.jsonl") == "first\n\nsecond"


def test_directory_of_txt_sorted(tmp_path):
    (tmp_path / "b.txt").write_text("two")
    (tmp_path / "a.txt").write_text("one")
    (tmp_path / "ignored.md").write_text("x")
    assert read_text(tmp_path) == "one\n\ntwo"


@pytest.mark.parametrize(
    "name,content,expect",
    [
        ("empty.txt", b"", "no text"),
        ("blank.txt", b"  \n\t\n", "no text"),
        ("bin.txt", b"\x00\x01\x02ELF", "binary data"),
        ("latin1.txt", "caf\u00e9".encode("latin-1"), "not UTF-8"),
        ("bad.jsonl", b'{"text": "ok"}\n{oops\n', "bad.jsonl:2: not JSON"),
        ("nofield.jsonl", b'{"content": "x"}\n', "string 'text' field"),
    ],
)
def test_unusable_input(tmp_path, name, content, expect):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=expect):
        read_text(tmp_path / name)


def test_missing_and_empty_dir(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_text(tmp_path / "nope.txt")
    with pytest.raises(DataError, match="no .txt files"):
        read_text(tmp_path)


def test_consecutive_windows_drop_partial():
    w = consecutive_windows(torch.arange(10), 3)
    assert w.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    with pytest.raises(DataError, match="at least 2"):
        consecutive_windows(torch.arange(10), 1)
    with pytest.raises(DataError, match="fewer than one window"):
        consecutive_windows(torch.arange(10), 11)


def test_sample_windows_deterministic():
    t = torch.arange(1000)
    a, b, c = sample_windows(t, 5, 16, seed=1), sample_windows(t, 5, 16, seed=1), sample_windows(t, 5, 16, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert all(torch.equal(row, torch.arange(int(row[0]), int(row[0]) + 16)) for row in a)


def test_tokenize_prefix_equals_full_prefix():
    text = "abc " * 5000
    full = tokenize(text, ByteTokenizer())
    assert torch.equal(tokenize(text, ByteTokenizer(), max_tokens=100), full[:100])
    assert tokenize(text, ByteTokenizer(), max_tokens=10**9).numel() == full.numel()
