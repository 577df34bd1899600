"""jetmamba run on a bundle: streamed text, --json, --prompt-file, --stop, --interactive; and each
bad input as one line on stderr with a non-zero exit status."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from jetmamba.cli import main

PROMPT = "The history of "


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, mamba1_fixture):
    from bundles import RECIPE, quantized_bundle

    return quantized_bundle(mamba1_fixture, RECIPE["mamba1"], tmp_path_factory.mktemp("run") / "bundle")[1]


def run(capsys, *argv):
    code = main(["run", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def greedy(bundle):
    """The --json report of 24 greedy tokens after PROMPT (computed once, in a child process)."""
    argv = ["run", "--bundle", str(bundle), "--prompt", PROMPT, "--max-new-tokens", "24", "--json"]
    proc = subprocess.run([sys.executable, "-m", "jetmamba", *argv], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_json_report(greedy, bundle):
    assert greedy["bundle"] == str(bundle) and greedy["backend"] == "onnxruntime"  # auto, without TensorRT
    assert greedy["prompt"] == PROMPT and greedy["prompt_tokens"] == len(PROMPT)
    assert greedy["new_tokens"] == len(greedy["tokens"]) == 24 and greedy["stop_reason"] == "max_tokens"
    assert greedy["text"] == bytes(greedy["tokens"]).decode("utf-8", errors="replace")
    assert greedy["ttft_ms"] >= greedy["prefill_ms"] > 0 and greedy["decode_tokens_per_second"] > 0
    assert greedy["settings"]["temperature"] == 0.0 and greedy["settings"]["eos_token_ids"] == []


def test_prompt_streams_the_text_and_stats_go_to_stderr(capsys, bundle, greedy):
    code, out, err = run(capsys, "--bundle", bundle, "--prompt", PROMPT, "--max-new-tokens", 24)
    assert code == 0, err
    assert out == greedy["text"] + "\n"
    assert "[onnxruntime] 15 prompt tokens, 24 new (stop: max_tokens); TTFT" in err and "tokens/s" in err
    code, out, err = run(capsys, "--bundle", bundle, "--prompt", PROMPT, "--max-new-tokens", 24, "-q")
    assert code == 0 and out == greedy["text"] + "\n" and err == ""


def test_prompt_file(capsys, tmp_path, bundle, greedy):
    f = tmp_path / "prompt.txt"
    f.write_text(PROMPT, encoding="utf-8")
    code, out, err = run(capsys, "--bundle", bundle, "--prompt-file", f, "--max-new-tokens", 24, "--json")
    assert code == 0, err
    assert json.loads(out)["tokens"] == greedy["tokens"]


def test_stop_string(capsys, bundle, greedy):
    text = greedy["text"]
    stop = text[6:9]
    code, out, err = run(capsys, "--bundle", bundle, "--prompt", PROMPT, "--max-new-tokens", 24, "--stop", stop,
                         "--json")  # fmt: skip
    assert code == 0, err
    r = json.loads(out)
    assert r["stop_reason"] == "stop_string" and r["text"] == text[: text.find(stop)]


def test_seeded_sampling(capsys, bundle):
    def sampled(seed):
        options = ["--temperature", 0.9, "--top-p", 0.95, "--top-k", 40, "--seed", seed, "--json"]
        code, out, err = run(capsys, "--bundle", bundle, "--prompt", PROMPT, "--max-new-tokens", 24, *options)
        assert code == 0, err
        return json.loads(out)["tokens"]

    assert sampled(3) == sampled(3) != sampled(4)


def test_interactive(capsys, monkeypatch, bundle, greedy):
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{PROMPT}\n\nIn 1997 , the\n"))
    code, out, err = run(capsys, "--bundle", bundle, "--interactive", "--max-new-tokens", 24, "--json")
    assert code == 0, err
    reports = [json.loads(line) for line in out.splitlines()]
    assert [r["prompt"] for r in reports] == [PROMPT, "In 1997 , the"]  # the blank line is skipped
    assert reports[0]["tokens"] == greedy["tokens"]  # each prompt from a zero state
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{PROMPT}\n{PROMPT}\n"))
    code, out, err = run(capsys, "--bundle", bundle, "--interactive", "--max-new-tokens", 24)
    assert code == 0 and out == (greedy["text"] + "\n") * 2 and err.count("TTFT") == 2


def test_interactive_ends_cleanly_on_ctrl_c(capsys, monkeypatch, bundle):
    class Interrupted(io.StringIO):
        def readline(self, *args):
            raise KeyboardInterrupt

    monkeypatch.setattr(sys, "stdin", Interrupted())
    code, out, err = run(capsys, "--bundle", bundle, "--interactive")
    assert code == 0 and out == "" and "Traceback" not in err


def test_interactive_in_a_process(bundle):
    proc = subprocess.run([sys.executable, "-m", "jetmamba", "run", "--bundle", str(bundle), "--interactive",
                           "--max-new-tokens", "8", "-q"], input="one\ntwo\n", capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert len(proc.stdout.splitlines()) >= 2


def tampered(bundle, tmp_path):
    import shutil

    copy = tmp_path / "tampered"
    shutil.copytree(bundle, copy)
    data = bytearray((copy / "weights.bin").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "weights.bin").write_bytes(bytes(data))
    return copy


@pytest.mark.parametrize("case,expect", [
    ("not_a_bundle", "not a bundle"),
    ("tampered", "does not match its sha256"),
    ("missing_file", "no such file"),
    ("empty_file", "the file is empty"),
    ("latin1_file", "not UTF-8"),
    ("empty_prompt", "--prompt is empty"),
    ("top_p_zero", "top_p must be in (0, 1]"),
    ("top_p_above_one", "top_p must be in (0, 1]"),
    ("negative_temperature", "temperature must be"),
    ("top_k_zero", "top_k must be"),
    ("tensorrt", "tensorrt backend cannot run here"),
])  # fmt: skip
def test_bad_input_is_one_line(capsys, tmp_path, bundle, case, expect):
    if case == "tensorrt":
        from jetmamba.runtime.backends import tensorrt_unavailable_reason

        if tensorrt_unavailable_reason() is None:
            pytest.skip("TensorRT can run here")
    files = {"missing_file": None, "empty_file": b"", "latin1_file": "café".encode("latin-1")}
    argv = ["--bundle", {"not_a_bundle": tmp_path, "tampered": tampered(bundle, tmp_path)}.get(case, bundle)]
    if case in files:
        f = tmp_path / "prompt.txt"
        if files[case] is not None:
            f.write_bytes(files[case])
        argv += ["--prompt-file", f]
    else:
        argv += ["--prompt", "" if case == "empty_prompt" else PROMPT]
    argv += {
        "top_p_zero": ["--top-p", "0"],
        "top_p_above_one": ["--top-p", "1.5"],
        "negative_temperature": ["--temperature", "-1"],
        "top_k_zero": ["--top-k", "0"],
        "tensorrt": ["--backend", "tensorrt"],
    }.get(case, [])
    code, out, err = run(capsys, *argv)
    assert code != 0 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jetmamba: error: ") and expect in lines[0], err


@pytest.mark.parametrize("argv", [
    [],  # no prompt source
    ["--prompt", "x", "--interactive"],
    ["--prompt", "x", "--max-new-tokens", "0"],
    ["--prompt", "x", "--backend", "cuda"],
])  # fmt: skip
def test_argument_errors(capsys, bundle, argv):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--bundle", str(bundle), *argv])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "error:" in err.strip().splitlines()[-1] and "Traceback" not in err
