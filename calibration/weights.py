"""Reading checkpoint weight files safely: safetensors (single or sharded) and pytorch_model.bin.

Weights are data: safetensors headers are parsed and checked (dtypes, shapes, offsets inside the
file) before any tensor is read, and pickled ``.bin`` files go through ``torch.load`` with
``weights_only=True``, which refuses anything but tensors and plain containers. Every failure is
a one-line :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from jetmamba.errors import CheckpointError
from jetmamba.limits import LIMITS

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH_BIN = "pytorch_model.bin"
PYTORCH_BIN_INDEX = "pytorch_model.bin.index.json"
WEIGHT_FILE_NAMES = (SAFETENSORS, SAFETENSORS_INDEX, PYTORCH_BIN, PYTORCH_BIN_INDEX)

MAX_HEADER_BYTES = LIMITS.safetensors_header_bytes  # a safetensors header larger than this is not a model

ST_DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "F64": (torch.float64, 8),
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "I64": (torch.int64, 8),
    "I32": (torch.int32, 4),
    "I16": (torch.int16, 2),
    "I8": (torch.int8, 1),
    "U8": (torch.uint8, 1),
    "BOOL": (torch.bool, 1),
}
ST_ITEMSIZE = {dtype: size for dtype, size in ST_DTYPES.values()}


@dataclass(frozen=True)
class TensorInfo:
    dtype: torch.dtype
    shape: tuple[int, ...]
    offset: int = 0  # of the data in the file (safetensors)


@dataclass(frozen=True)
class WeightFiles:
    """The weight files of a checkpoint and which file holds each tensor (for sharded ones)."""

    kind: str  # "safetensors" | "bin"
    files: tuple[Path, ...]
    weight_map: dict[str, Path] | None  # None: every tensor in the single file


def find_weight_files(directory: Path) -> WeightFiles:
    """Locate the weights in a checkpoint directory (safetensors preferred)."""
    d = Path(directory)
    if (d / SAFETENSORS).is_file():
        return WeightFiles("safetensors", (d / SAFETENSORS,), None)
    if (d / SAFETENSORS_INDEX).is_file():
        return _read_index(d, SAFETENSORS_INDEX, "safetensors")
    if (d / PYTORCH_BIN).is_file():
        return WeightFiles("bin", (d / PYTORCH_BIN,), None)
    if (d / PYTORCH_BIN_INDEX).is_file():
        return _read_index(d, PYTORCH_BIN_INDEX, "bin")
    raise CheckpointError(f"{d}: no weights file (expected one of {', '.join(WEIGHT_FILE_NAMES)})")


def _read_index(d: Path, name: str, kind: str) -> WeightFiles:
    path = d / name
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
        weight_map = index["weight_map"]
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise TypeError("weight_map must map tensor names to file names")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: not a valid shard index ({_reason(exc)})") from None
    root = d.resolve()
    files: dict[str, Path] = {}
    for shard in sorted(set(weight_map.values())):
        p = (d / shard).resolve()
        if root not in p.parents:
            raise CheckpointError(f"{path}: shard {shard!r} lies outside the checkpoint directory")
        if not p.is_file():
            raise CheckpointError(f"{path}: shard {shard!r} is missing")
        files[shard] = p
    return WeightFiles(kind, tuple(files.values()), {k: files[v] for k, v in weight_map.items()})


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def read_safetensors_header(path: Path) -> dict[str, TensorInfo]:
    """Parse and check a safetensors header without reading tensor data."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path}: truncated ({size} bytes): not a safetensors file")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES or n > size - 8:
                raise CheckpointError(
                    f"{path}: header length {n} does not fit a {size}-byte file: truncated or not safetensors"
                )
            raw = f.read(n)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({_reason(exc)})") from None
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise TypeError("the header is not a JSON object")
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError, RecursionError) as exc:
        raise CheckpointError(f"{path}: corrupt safetensors header ({_reason(exc)})") from None
    data_bytes = size - 8 - n
    out: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype_name, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            if not isinstance(dtype_name, str):
                raise TypeError(f"dtype {dtype_name!r} is not a string")
            if not isinstance(shape, list) or not all(_is_count(s) for s in shape):
                raise TypeError(f"bad shape {shape!r}")
            if not (_is_count(begin) and _is_count(end)):
                raise TypeError("bad data_offsets")
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: corrupt header entry for {name!r} ({_reason(exc)})") from None
        if dtype_name not in ST_DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {dtype_name!r}")
        if len(shape) > LIMITS.tensor_rank:
            raise CheckpointError(f"{path}: tensor {name!r} has {len(shape)} dimensions (at most {LIMITS.tensor_rank})")
        dtype, itemsize = ST_DTYPES[dtype_name]
        if not (begin <= end <= data_bytes):
            raise CheckpointError(
                f"{path}: tensor {name!r} lies outside the file (bytes {begin}..{end} of {data_bytes}): truncated"
            )
        # checked against the bytes the file really has, so a declared shape can never make the
        # reader allocate more than the file holds
        if end - begin != math.prod(shape) * itemsize:
            raise CheckpointError(f"{path}: tensor {name!r}: {end - begin} bytes do not hold shape {tuple(shape)}")
        out[name] = TensorInfo(dtype, tuple(shape), 8 + n + begin)
    _refuse_overlaps(path, out, 8 + n)
    return out


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _refuse_overlaps(path: Path, infos: dict[str, TensorInfo], data_start: int) -> None:
    """Two tensors sharing bytes is no safetensors file (writers lay tensors end to end); reading
    one would silently alias the other."""
    spans = sorted(
        (info.offset, info.offset + math.prod(info.shape) * ST_ITEMSIZE[info.dtype], name)
        for name, info in infos.items()
        if math.prod(info.shape)
    )
    for (_, end, first), (begin, _, second) in zip(spans, spans[1:], strict=False):
        if begin < end:
            raise CheckpointError(
                f"{path}: tensors {first!r} and {second!r} overlap (bytes {begin - data_start}.. of the data)"
            )


def read_tensor_infos(weights: WeightFiles) -> dict[str, TensorInfo] | None:
    """Names, dtypes and shapes of every tensor without loading data (safetensors only; None for .bin)."""
    if weights.kind != "safetensors":
        return None
    infos: dict[str, TensorInfo] = {}
    for f in weights.files:
        infos.update(read_safetensors_header(f))
    if weights.weight_map is not None:
        missing = sorted(k for k, f in weights.weight_map.items() if k not in infos)
        if missing:
            raise CheckpointError(f"shard index names tensors its shards lack: {missing[:5]}")
    return infos


def iter_tensors(weights: WeightFiles, names: set[str] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, tensor) for every tensor (or those in ``names``), one file at a time."""
    for f in weights.files:
        if weights.kind == "safetensors":
            yield from _iter_safetensors(f, names)
        else:
            yield from _iter_bin(f, names)


def _iter_safetensors(path: Path, names: set[str] | None):
    """Read each tensor's bytes straight into its own tensor (offsets from the checked header).

    Plain reads rather than a memory map: mapped file pages count as resident memory while the
    map is open, which would double the peak when a large checkpoint is loaded."""
    infos = read_safetensors_header(path)
    try:
        with open(path, "rb") as f:
            for name, info in infos.items():
                if names is not None and name not in names:
                    continue
                t = torch.empty(info.shape, dtype=info.dtype)
                buf = t.view(-1).view(torch.uint8).numpy() if t.numel() else None
                if buf is not None:
                    f.seek(info.offset)
                    if f.readinto(buf) != buf.nbytes:
                        raise CheckpointError(f"{path}: tensor {name!r} is truncated")
                yield name, t
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read tensors ({_reason(exc)})") from None


def _iter_bin(path: Path, names: set[str] | None):
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types for corrupt input
        raise CheckpointError(f"{path}: cannot be read as PyTorch weights ({_reason(exc)})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: does not hold a dict of tensors")
    for name, t in obj.items():
        if names is None or name in names:
            yield name, t
