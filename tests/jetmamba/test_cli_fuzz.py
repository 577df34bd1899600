"""Hostile inputs through the public command line: corrupted checkpoints, calibration text,
QuantizedModels, bundles and prompts. Every case ends in one line on stderr (``jetmamba: error:
...``), a non-zero exit and no traceback, and leaves nothing behind: the --out directory does
not appear, and nothing else appears beside it."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch
from fuzz import assert_clean_error, bad_json_bytes, corrupted_dict, fuzz
from hypothesis import given
from hypothesis import strategies as st

from jetmamba.cli import main


def run(capsys, *argv):
    capsys.readouterr()  # a hypothesis example starts with nothing captured
    code = main([*argv, "-q"] if argv[0] != "inspect" else list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _refused_without_output(capsys, workdir, argv, contains=None):
    """Run ``argv`` (its --out inside ``workdir``): a clean error and ``workdir`` unchanged."""
    before = sorted(p.name for p in workdir.iterdir())
    code, _, err = run(capsys, *argv)
    assert_clean_error(code, err, contains=contains)
    assert sorted(p.name for p in workdir.iterdir()) == before, "something was left beside --out"


def _checkpoint_copy(fixture, tmp_path_factory, config: bytes | dict | None = None):
    d = tmp_path_factory.mktemp("ckpt")
    (d / "model.safetensors").symlink_to(fixture / "model.safetensors")
    if config is None:
        shutil.copy(fixture / "config.json", d / "config.json")
    else:
        data = config if isinstance(config, bytes) else json.dumps(config, allow_nan=True).encode()
        (d / "config.json").write_bytes(data)
    return d


def _quantize_argv(model, calib, out):
    return ["quantize", "--model", str(model), "--recipe", "w8a8-quamba", "--calib", str(calib),
            "--samples", "2", "--calib-seq-len", "16", "--out", str(out)]  # fmt: skip


# ---------------------------------------------------------------- quantize: config.json


def _fixture_config(fixture) -> dict:
    return json.loads((fixture / "config.json").read_text())


@fuzz(30)
@given(data=st.data())
def test_quantize_corrupted_config(capsys, tmp_path_factory, mamba2_fixture, wikitext_test, data):
    config = data.draw(corrupted_dict(_fixture_config(mamba2_fixture)))
    model = _checkpoint_copy(mamba2_fixture, tmp_path_factory, config)
    work = tmp_path_factory.mktemp("work")
    capsys.readouterr()
    code = main([*_quantize_argv(model, wikitext_test, work / "q"), "-q"])
    _, err = capsys.readouterr()
    if code == 0:  # a change the model does not depend on (labels, dtype, ...): a whole artifact
        assert (work / "q" / "quantized.json").is_file() and [p.name for p in work.iterdir()] == ["q"]
    else:
        assert_clean_error(code, err)
        assert not any(work.iterdir())


@fuzz(20)
@given(raw=bad_json_bytes)
def test_quantize_config_not_json(capsys, tmp_path_factory, mamba1_fixture, wikitext_test, raw):
    model = _checkpoint_copy(mamba1_fixture, tmp_path_factory, raw)
    work = tmp_path_factory.mktemp("work")
    _refused_without_output(capsys, work, _quantize_argv(model, wikitext_test, work / "q"), contains="config.json")


@pytest.mark.parametrize(
    "field,value",
    [("hidden_size", 10**9), ("num_hidden_layers", 10**7), ("vocab_size", 2**40), ("state_size", 0),
     ("expand", -2), ("hidden_size", 192.5), ("conv_kernel", "4")],
)  # fmt: skip
def test_quantize_config_sizes(capsys, tmp_path_factory, mamba1_fixture, wikitext_test, field, value):
    config = _fixture_config(mamba1_fixture)
    config[field] = value
    model = _checkpoint_copy(mamba1_fixture, tmp_path_factory, config)
    work = tmp_path_factory.mktemp("work")
    _refused_without_output(capsys, work, _quantize_argv(model, wikitext_test, work / "q"), contains="config.json")


# ---------------------------------------------------------------- quantize: calibration text


_bad_text = st.one_of(
    st.just(b""),
    st.text(alphabet=" \t\r\n\x0b\x0c", max_size=50).map(str.encode),
    st.binary(min_size=1, max_size=100).map(lambda b: b + b"\x00"),
    st.binary(min_size=1, max_size=60).filter(lambda b: _not_utf8(b)),
    st.just(b"\xc3\x28 invalid UTF-8 in the middle"),
)


def _not_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


@fuzz(25)
@given(text=_bad_text, suffix=st.sampled_from([".txt", ".jsonl"]))
def test_quantize_bad_calibration_text(capsys, tmp_path_factory, mamba1_fixture, text, suffix):
    work = tmp_path_factory.mktemp("work")
    calib = tmp_path_factory.mktemp("data") / f"calib{suffix}"
    calib.write_bytes(text)
    _refused_without_output(capsys, work, _quantize_argv(mamba1_fixture, calib, work / "q"))


@pytest.mark.parametrize("case", ["no_txt", "missing", "short", "jsonl_huge_line", "jsonl_no_text"])
def test_quantize_calibration_hand_cases(capsys, tmp_path, mamba1_fixture, case):
    work = tmp_path / "work"
    work.mkdir()
    calib = tmp_path / "calib"
    if case == "no_txt":
        calib.mkdir()
        (calib / "notes.md").write_text("text, but not a .txt")
    elif case == "missing":
        calib = tmp_path / "absent.txt"
    elif case == "short":  # fewer tokens than one calibration window
        calib = tmp_path / "short.txt"
        calib.write_text("tiny")
    elif case == "jsonl_huge_line":  # one 8 MB line that is not JSON
        calib = tmp_path / "c.jsonl"
        calib.write_text('{"text": "' + "x" * (8 << 20))
    else:
        calib = tmp_path / "c.jsonl"
        calib.write_text('{"content": "no text field"}\n')
    _refused_without_output(capsys, work, _quantize_argv(mamba1_fixture, calib, work / "q"))


def test_huge_single_line_is_text(capsys, tmp_path, mamba1_fixture):
    """A 4 MB text without a newline is valid calibration text, read and windowed like any."""
    calib = tmp_path / "one_line.txt"
    calib.write_bytes(bytes(torch.randint(97, 123, (4 << 20,), generator=torch.Generator().manual_seed(0)).tolist()))
    code, _, err = run(capsys, *_quantize_argv(mamba1_fixture, calib, tmp_path / "q"))
    assert code == 0, err
    assert (tmp_path / "q" / "quantized.json").is_file()


# ---------------------------------------------------------------- compile: QuantizedModels


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, mamba1_fixture):
    from jetmamba.calibration.checkpoint import load_model
    from jetmamba.calibration.quantize import quantize_model
    from jetmamba.calibration.recipes import RECIPES

    windows = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(0))
    q = quantize_model(load_model(mamba1_fixture), RECIPES["w8a8-quamba"], windows, show_progress=False)
    return q.save(tmp_path_factory.mktemp("q") / "model")


@fuzz(25)
@given(data=st.data())
def test_compile_corrupted_quantized_model(capsys, tmp_path_factory, quantized, data):
    base = json.loads((quantized / "quantized.json").read_text())
    d = tmp_path_factory.mktemp("qc") / "model"
    shutil.copytree(quantized, d)
    keys = ["config", "recipe", "act_dtype", "out_hadamard", "layer_act_bits", "format", "format_version"]
    keys += [f"config.{k}" for k in base["config"]]
    (d / "quantized.json").write_text(json.dumps(data.draw(corrupted_dict(base, keys)), allow_nan=True))
    work = tmp_path_factory.mktemp("work")
    capsys.readouterr()
    code = main(["compile", "--model", str(d), "--board", "orin-nano-8gb", "--out", str(work / "b"), "-q"])
    _, err = capsys.readouterr()
    if code == 0:  # the corrupted fields were ones the model does not depend on
        assert (work / "b" / "manifest.json").is_file() and [p.name for p in work.iterdir()] == ["b"]
    else:
        assert_clean_error(code, err)
        assert not any(work.iterdir())


@pytest.mark.parametrize("damage", ["truncate_tensors", "no_tensors", "random_manifest", "vocab_2_40"])
def test_compile_quantized_hand_cases(capsys, tmp_path, quantized, damage):
    d = tmp_path / "model"
    shutil.copytree(quantized, d)
    if damage == "truncate_tensors":
        raw = (d / "tensors.safetensors").read_bytes()
        (d / "tensors.safetensors").write_bytes(raw[: len(raw) // 2])
    elif damage == "no_tensors":
        (d / "tensors.safetensors").unlink()
    elif damage == "random_manifest":
        (d / "quantized.json").write_bytes(bytes(range(256)))
    else:
        m = json.loads((d / "quantized.json").read_text())
        m["config"]["vocab_size"] = 2**40
        (d / "quantized.json").write_text(json.dumps(m))
    work = tmp_path / "work"
    work.mkdir()
    argv = ["compile", "--model", str(d), "--board", "orin-nano-8gb", "--out", str(work / "b")]
    _refused_without_output(capsys, work, argv)


# ---------------------------------------------------------------- bundles: eval, inspect, run


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, mamba1_fixture):
    out = tmp_path_factory.mktemp("b") / "bundle"
    assert main(["compile", "--model", str(mamba1_fixture), "--board", "orin-nano-8gb", "--out", str(out), "-q"]) == 0
    return out


def _damaged_bundle(bundle, tmp_path_factory, name, position, rehash):
    d = tmp_path_factory.mktemp("bc") / "bundle"
    shutil.copytree(bundle, d)
    raw = bytearray((d / name).read_bytes())
    cut = position % (len(raw) + 1)
    raw = raw[:cut] + bytes(b ^ 0x5A for b in raw[cut : cut + 8]) + raw[cut + 8 :]
    (d / name).write_bytes(bytes(raw[: max(1, len(raw) - position % 3)]))
    if rehash and name != "manifest.json":
        m = json.loads((d / "manifest.json").read_text())
        data = (d / name).read_bytes()
        m["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        (d / "manifest.json").write_text(json.dumps(m))
    return d


@fuzz(25)
@given(
    name=st.sampled_from(["manifest.json", "model.onnx", "model.trt.onnx", "weights.bin"]),
    position=st.integers(0, 10**7),
    rehash=st.booleans(),
    command=st.sampled_from(["eval", "inspect"]),
)
def test_damaged_bundle(capsys, tmp_path_factory, bundle, wikitext_test, name, position, rehash, command):
    d = _damaged_bundle(bundle, tmp_path_factory, name, position, rehash)
    argv = ["--model", str(d)] + (["--data", str(wikitext_test), "--seq-len", "64", "--max-tokens", "128"]
                                  if command == "eval" else [])  # fmt: skip
    code, _, err = run(capsys, command, *argv)
    if name == "weights.bin" and rehash and code == 0:
        return  # different weights, consistently hashed: a valid (if different) model
    assert_clean_error(code, err)


def _run_argv(bundle, *extra):
    return ["run", "--bundle", str(bundle), "--backend", "onnxruntime", "--max-new-tokens", "2", *extra]


@fuzz(15)
@given(raw=st.binary(min_size=1, max_size=40).filter(_not_utf8) | st.just(b""))
def test_run_bad_prompt_file(capsys, tmp_path_factory, bundle, raw):
    prompt = tmp_path_factory.mktemp("p") / "prompt.txt"
    prompt.write_bytes(raw)
    code, _, err = run(capsys, *_run_argv(bundle, "--prompt-file", str(prompt)))
    assert_clean_error(code, err, contains="--prompt-file")


@pytest.mark.parametrize("argv", [["--prompt", ""], ["--prompt-file", "/nonexistent/prompt.txt"]])
def test_run_empty_or_missing_prompt(capsys, bundle, argv):
    code, _, err = run(capsys, *_run_argv(bundle, *argv))
    assert_clean_error(code, err)
