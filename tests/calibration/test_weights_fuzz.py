"""Hostile weight files: safetensors headers that lie, truncated or random files, pickles that
would run code. Every one is a one-line CheckpointError naming the file, raised before any tensor
is allocated from what the header declares."""

from __future__ import annotations

import json
import pickle
import shutil
import struct

import pytest
import torch
from fuzz import fuzz, json_values
from hypothesis import given
from hypothesis import strategies as st

from jetmamba.calibration.checkpoint import load_model
from jetmamba.calibration.weights import (
    ST_DTYPES,
    ST_ITEMSIZE,
    WeightFiles,
    iter_tensors,
    read_safetensors_header,
)
from jetmamba.errors import CheckpointError


def _file(header: dict, data: bytes = b"", *, length: int | None = None) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def _valid() -> bytes:
    """Two small tensors, end to end, as a writer lays them out."""
    return _file(
        {
            "__metadata__": {"format": "pt"},
            "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
            "b": {"dtype": "I8", "shape": [4], "data_offsets": [24, 28]},
        },
        bytes(range(28)),
    )


def _check_consistent(path, size):
    """What a header that passed the checks promises: every tensor inside the file, sized by its
    shape, no two sharing bytes; and reading them allocates only that."""
    infos = read_safetensors_header(path)
    spans = []
    for info in infos.values():
        n = 1
        for s in info.shape:
            n *= s
        nbytes = n * ST_ITEMSIZE[info.dtype]
        assert 8 <= info.offset and info.offset + nbytes <= size
        if nbytes:
            spans.append((info.offset, info.offset + nbytes))
    spans.sort()
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
    for name, t in iter_tensors(WeightFiles("safetensors", (path,), None)):
        assert tuple(t.shape) == infos[name].shape


@fuzz(150)
@given(data=st.binary(max_size=200))
def test_random_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("st") / "model.safetensors"
    path.write_bytes(data)
    try:
        _check_consistent(path, len(data))
    except CheckpointError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)


@fuzz(100)
@given(cut=st.integers(0, len(_valid()) - 1))
def test_truncated(tmp_path_factory, cut):
    path = tmp_path_factory.mktemp("st") / "model.safetensors"
    path.write_bytes(_valid()[:cut])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        read_safetensors_header(path)


@fuzz(100)
@given(length=st.integers(0, 2**64 - 1) | st.sampled_from([2**63, 2**64 - 1, 2**40, 0, 1, 7]))
def test_header_length_lies(tmp_path_factory, length):
    raw = _valid()
    true_length = struct.unpack("<Q", raw[:8])[0]
    path = tmp_path_factory.mktemp("st") / "model.safetensors"
    path.write_bytes(struct.pack("<Q", length) + raw[8:])
    if length == true_length:
        _check_consistent(path, len(raw))
        return
    with pytest.raises(CheckpointError, match="model.safetensors"):
        read_safetensors_header(path)


@fuzz(300)
@given(
    field=st.sampled_from(["dtype", "shape", "data_offsets", "entry"]),
    value=json_values
    | st.sampled_from(["F8", "I4", "U16", "c64", "f32", ""])
    | st.lists(st.integers(-3, 2**62), max_size=9)
    | st.tuples(st.integers(-5, 60), st.integers(-5, 60)).map(list),
)
def test_header_fields_corrupted(tmp_path_factory, field, value):
    header = {
        "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
        "b": {"dtype": "I8", "shape": [4], "data_offsets": [24, 28]},
    }
    if field == "entry":
        header["b"] = value
    else:
        header["b"][field] = value
    raw = _file(header, bytes(28))
    path = tmp_path_factory.mktemp("st") / "model.safetensors"
    path.write_bytes(raw)
    try:
        _check_consistent(path, len(raw))
    except CheckpointError as exc:
        assert str(exc).startswith(str(path)) and "\n" not in str(exc)


@pytest.mark.parametrize(
    "entry,data,expect",
    [
        ({"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 16]}, 16, "do not hold shape"),
        ({"dtype": "F32", "shape": [2**40], "data_offsets": [0, 2**42]}, 16, "outside the file"),
        ({"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}, 16, "outside the file"),
        ({"dtype": "F32", "shape": [4], "data_offsets": [-16, 0]}, 16, "corrupt header entry"),
        ({"dtype": "F32", "shape": [4], "data_offsets": [True, 17]}, 17, "corrupt header entry"),
        ({"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}, 16, "corrupt header entry"),
        ({"dtype": "F32", "shape": [4.0], "data_offsets": [0, 16]}, 16, "corrupt header entry"),
        ({"dtype": "F32", "shape": "4", "data_offsets": [0, 16]}, 16, "corrupt header entry"),
        ({"dtype": ["F32"], "shape": [4], "data_offsets": [0, 16]}, 16, "corrupt header entry"),
        ({"dtype": "F4", "shape": [4], "data_offsets": [0, 16]}, 16, "unsupported dtype"),
        ({"dtype": "F32", "shape": [1] * 9 + [4], "data_offsets": [0, 16]}, 16, "dimensions"),
    ],
)
def test_hand_cases(tmp_path, entry, data, expect):
    path = tmp_path / "model.safetensors"
    path.write_bytes(_file({"x": entry}, bytes(data)))
    with pytest.raises(CheckpointError, match=expect):
        read_safetensors_header(path)


def test_overlapping_tensors_are_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(_file({
        "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]},
    }, bytes(16)))  # fmt: skip
    with pytest.raises(CheckpointError, match="'a' and 'b' overlap"):
        read_safetensors_header(path)


def test_header_length_of_2_63(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", 2**63) + b"{}")
    with pytest.raises(CheckpointError, match="header length 9223372036854775808 does not fit a 10-byte file"):
        read_safetensors_header(path)


def test_deeply_nested_header(tmp_path):
    path = tmp_path / "model.safetensors"
    raw = b"[" * 100_000 + b"]" * 100_000
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    with pytest.raises(CheckpointError, match="corrupt safetensors header"):
        read_safetensors_header(path)


def test_every_safetensors_dtype_is_known():
    assert set(ST_ITEMSIZE) == {dtype for dtype, _ in ST_DTYPES.values()}


# ---------------------------------------------------------------- through the checkpoint loader


def _checkpoint_with(tmp_path, fixture, name: str, data: bytes):
    d = tmp_path / "ckpt"
    d.mkdir(exist_ok=True)
    shutil.copy(fixture / "config.json", d / "config.json")
    (d / name).write_bytes(data)
    return d


@fuzz(40)
@given(cut=st.integers(0, 2_000_000), flip=st.integers(0, 600))
def test_corrupted_checkpoint_weights(tmp_path_factory, mamba1_fixture, cut, flip):
    """The fixture's own weights with a header byte changed and cut short (by at least one byte):
    the loader refuses with a CheckpointError."""
    raw = bytearray((mamba1_fixture / "model.safetensors").read_bytes())
    n = struct.unpack("<Q", raw[:8])[0]
    raw[8 + flip % n] ^= 0x5A
    d = _checkpoint_with(
        tmp_path_factory.mktemp("c"), mamba1_fixture, "model.safetensors", bytes(raw[: cut % len(raw)])
    )
    with pytest.raises(CheckpointError):
        load_model(d)


class _RunsCode:
    """A pickle that calls a function when unpickled (what weights_only refuses)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_that_would_run_code_is_refused(tmp_path, mamba1_fixture):
    marker = tmp_path / "pwned"
    d = _checkpoint_with(tmp_path, mamba1_fixture, "pytorch_model.bin", b"")
    torch.save({"backbone.embeddings.weight": torch.zeros(2), "x": _RunsCode(marker)}, d / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="cannot be read as PyTorch weights"):
        load_model(d)
    assert not marker.exists()


@fuzz(40)
@given(data=st.binary(max_size=300) | st.just(pickle.dumps({"a": [1, 2]})) | st.just(pickle.dumps([torch.zeros(2)])))
def test_random_bin(tmp_path_factory, mamba1_fixture, data):
    d = _checkpoint_with(tmp_path_factory.mktemp("c"), mamba1_fixture, "pytorch_model.bin", data)
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        load_model(d)
