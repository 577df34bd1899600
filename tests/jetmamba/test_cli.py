"""The command line: help with examples, --json output, and one-line errors with non-zero exits."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from jetmamba.cli import COMMANDS, main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_top_level_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for cmd in COMMANDS:
        assert cmd.name in out


@pytest.mark.parametrize("name", [c.name for c in COMMANDS])
def test_each_command_help_has_an_example(capsys, name):
    with pytest.raises(SystemExit):
        main([name, "--help"])
    out = capsys.readouterr().out
    assert "example:" in out and f"jetmamba {name}" in out


def test_no_command_prints_help_and_fails(capsys):
    code, _, err = run(capsys)
    assert code == 2 and "COMMAND" in err


def test_eval_json(capsys, mamba1_fixture, wikitext_test):
    code, out, err = run(
        capsys, "eval", "--model", str(mamba1_fixture), "--data", str(wikitext_test),
        "--seq-len", "256", "--max-tokens", "1024", "--json", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    payload = json.loads(out)
    for key in ("perplexity", "tokens", "windows", "seq_len", "seconds"):
        assert key in payload
    assert payload["windows"] == 4 and payload["tokens"] == 1024 and payload["seq_len"] == 256
    assert 1 < payload["perplexity"] < 20


def test_eval_text_output(capsys, mamba2_fixture, wikitext_test):
    code, out, _ = run(capsys, "eval", "--model", str(mamba2_fixture), "--data", str(wikitext_test),
                       "--seq-len", "128", "--max-tokens", "256", "-q")  # fmt: skip
    assert code == 0 and out.startswith("perplexity ")


def test_inspect_json(capsys, mamba2_fixture):
    code, out, _ = run(capsys, "inspect", "--model", str(mamba2_fixture), "--json")
    info = json.loads(out)
    assert code == 0 and info["config"]["arch"] == "mamba2" and info["config"]["n_groups"] == 2
    assert info["weights"]["checked"] and info["tokenizer"]["name"] == "bytes"


@pytest.mark.parametrize(
    "args,expect",
    [
        (["eval", "--model", "/no/such/dir", "--data", "x.txt"], "no such directory"),
        (["eval", "--model", "{m1}", "--data", "/no/such/file.txt"], "no such file"),
        (["eval", "--model", "{m1}", "--data", "{empty}"], "no text"),
        (["eval", "--model", "{m1}", "--data", "{binary}"], "binary data"),
        (
            ["eval", "--model", "{m1}", "--data", "{data}", "--seq-len", "1000", "--max-tokens", "500"],
            "fewer than one window",
        ),
        (["eval", "--model", "{m1}", "--data", "{data}", "--device", "cuda:0"], "CUDA is not available"),
    ],
)
def test_errors_are_one_line(capsys, tmp_path, mamba1_fixture, wikitext_test, args, expect):
    import torch

    if "cuda:0" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "binary.txt").write_bytes(b"\x7fELF\x00\x00\x01")
    subst = {"{m1}": str(mamba1_fixture), "{data}": str(wikitext_test),
             "{empty}": str(tmp_path / "empty.txt"), "{binary}": str(tmp_path / "binary.txt")}  # fmt: skip
    code, out, err = run(capsys, *[subst.get(a, a) for a in args], "-q")
    assert code != 0 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jetmamba: error: ") and expect in lines[0], err


def test_seq_len_below_two_is_a_usage_error(capsys, mamba1_fixture):
    with pytest.raises(SystemExit) as info:
        main(["eval", "--model", str(mamba1_fixture), "--data", "x", "--seq-len", "1"])
    assert info.value.code == 2
    assert "must be at least 2" in capsys.readouterr().err


def test_real_process_error_has_no_traceback(tmp_path):
    (tmp_path / "config.json").write_text(
        '{"model_type": "mamba", "hidden_size": 8, "num_hidden_layers": 1, "vocab_size": 256}'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "jetmamba", "eval", "--model", str(tmp_path), "--data", __file__],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip() == f"jetmamba: error: {tmp_path}: no weights file (expected one of "
        "model.safetensors, model.safetensors.index.json, pytorch_model.bin, pytorch_model.bin.index.json)"
    )


def test_console_script_installed():
    proc = subprocess.run(["jetmamba", "--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("jetmamba ")
