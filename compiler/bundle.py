"""Bundles: what the device gets. A directory holding

- ``model.onnx``: the graph with every jetmamba op's function body (ONNX Runtime runs it);
- ``model.trt.onnx``: the same graph without bodies, nodes naming their TensorRT plugins;
- ``weights.bin``: the initializers of both (ONNX external data, one file shared by the two);
- ``tokenizer.json`` when the model has one; ``plugins/``: the CUDA/C++ sources of the plugins;
- ``manifest.json``: format and versions, board, recipe, the I/O contract, op-set versions, and
  the size and sha256 of every other file.

Written atomically (a hidden sibling directory renamed into place), and verified — manifest
schema, paths that stay inside the bundle, sizes and hashes — before any use.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from importlib import resources
from pathlib import Path, PurePosixPath

from jetmamba import __version__
from jetmamba.atomic import atomic_directory
from jetmamba.errors import CheckpointError, UsageError
from jetmamba.limits import LIMITS

FORMAT, FORMAT_VERSION = "jetmamba-bundle", 1
MANIFEST = "manifest.json"
ORT_GRAPH, TRT_GRAPH, WEIGHTS = "model.onnx", "model.trt.onnx", "weights.bin"
PLUGIN_SUFFIXES = (".h", ".cuh", ".cu", ".cpp", ".txt", ".md")
MAX_MANIFEST_BYTES = LIMITS.manifest_json_bytes  # a manifest is a few kB; refuse to parse anything huge
_SHA256 = re.compile(r"[0-9a-f]{64}")


class BundleError(CheckpointError):
    """A directory that is not a valid, intact bundle."""


def is_bundle(directory) -> bool:
    path = Path(directory) / MANIFEST
    if not path.is_file() or path.stat().st_size > MAX_MANIFEST_BYTES:
        return False
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError, RecursionError):
        return False


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _plugin_sources() -> list[tuple[Path, str]]:
    root = Path(str(resources.files("jetmamba.plugins")))
    return sorted(
        (p, p.relative_to(root).as_posix())
        for p in root.rglob("*")
        if p.is_file() and p.suffix in PLUGIN_SUFFIXES and "__pycache__" not in p.parts
    )


def write_bundle(model, out, *, board: str, tokenizer_file: Path | None = None, source: str = "",
                 dtype=None, ssm_state_dtype: str = "float16") -> dict:  # fmt: skip
    """Lower ``model`` — a QuantizedModel, or an fp model lowered unquantized in ``dtype``
    (default float16) — with the SSM state in ``ssm_state_dtype`` ("float16", "float32" or, for a
    Mamba1 QuantizedModel, "int8") and write the bundle directory ``out``; returns the manifest."""
    import onnx
    import onnx_ir as ir
    import torch

    from jetmamba.boards import board_arch
    from jetmamba.compiler.functions import ONNX_OPSET
    from jetmamba.compiler.lowering import STATE_DTYPES, lower
    from jetmamba.compiler.ops.spec import DOMAIN, OPSET_VERSION
    from jetmamba.compiler.passes import attach_functions, run_pipeline, tensorrt_flavour

    arch = board_arch(board)
    if ssm_state_dtype not in STATE_DTYPES:
        raise UsageError(f"ssm_state_dtype is one of {', '.join(STATE_DTYPES)}, not {ssm_state_dtype!r}")
    builder, (ins, outs), recipe = lower(model, dtype=torch.float16 if dtype is None else dtype,
                                         state_dtype=STATE_DTYPES[ssm_state_dtype])  # fmt: skip
    graph = run_pipeline(builder.model())
    with atomic_directory(out) as tmp:
        ir.save(attach_functions(graph), tmp / ORT_GRAPH, external_data=WEIGHTS)
        # the TensorRT flavour from the saved graph: its initializers stay references into the
        # same weights.bin, which is written once
        trt = tensorrt_flavour(ir.load(tmp / ORT_GRAPH))
        onnx.save(ir.to_proto(trt), str(tmp / TRT_GRAPH))
        for name in (ORT_GRAPH, TRT_GRAPH):
            onnx.checker.check_model(str(tmp / name), full_check=True)
        if tokenizer_file is not None:
            shutil.copyfile(tokenizer_file, tmp / "tokenizer.json")
        for src, rel in _plugin_sources():
            dst = tmp / "plugins" / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
        files = {
            p.relative_to(tmp).as_posix(): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
            for p in sorted(tmp.rglob("*"))
            if p.is_file()
        }
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "jetmamba": __version__,
            "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnx_ir": ir.__version__},
            "board": {"name": board, "gpu_arch": arch},
            "source": source,
            "config": model.config.to_dict(),
            "recipe": recipe,
            "graphs": {"onnxruntime": ORT_GRAPH, "tensorrt": TRT_GRAPH, "weights": WEIGHTS},
            "opsets": {"ai.onnx": ONNX_OPSET, DOMAIN: OPSET_VERSION},
            "io": {"inputs": [t.to_dict() for t in ins], "outputs": [t.to_dict() for t in outs]},
            "tokenizer": "tokenizer.json" if tokenizer_file is not None else None,
            "files": files,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _safe_relative(name: str, where: str) -> PurePosixPath:
    p = PurePosixPath(name)
    if not name or p.is_absolute() or ".." in p.parts or "\\" in name or os.path.isabs(name):
        raise BundleError(f"{where}: file entry {name!r} is not a path inside the bundle")
    return p


def verify_bundle(directory) -> dict:
    """The manifest of an intact bundle; BundleError naming the first problem otherwise.

    Checked before anything in the bundle is used: the manifest's schema (every field the runtime
    reads, its model config within the size bounds), file entries that stay inside the bundle, the
    size and sha256 of every file, and the ONNX graphs' external data, which may only point into
    files the manifest lists."""
    d = Path(directory)
    path = d / MANIFEST
    if not path.is_file():
        raise BundleError(f"{d}: not a bundle (no {MANIFEST})")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{path}: {path.stat().st_size} bytes is not a manifest")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BundleError(f"{path}: not valid JSON ({_first_line(exc)})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{path}: not a jetmamba bundle manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{path}: format_version {manifest.get('format_version')!r} (this jetmamba reads "
                          f"{FORMAT_VERSION})")  # fmt: skip
    _check_schema(manifest, path)
    files = manifest["files"]
    for name, entry in files.items():
        rel = _safe_relative(name, str(path))
        if (
            not isinstance(entry, dict)
            or not _is_count(entry.get("bytes"))
            or not isinstance(entry.get("sha256"), str)
            or not _SHA256.fullmatch(entry["sha256"])
        ):
            raise BundleError(
                f"{path}: file entry {name!r} needs 'bytes' (an integer >= 0) and 'sha256' (64 hex digits)"
            )
        f = d / rel
        if not f.is_file() or f.is_symlink() or any((d / p).is_symlink() for p in rel.parents if p.parts):
            raise BundleError(f"{d}: {name} is missing (or a symbolic link)")
        if f.stat().st_size != entry["bytes"]:
            raise BundleError(f"{d}: {name} has {f.stat().st_size} bytes, the manifest says {entry['bytes']}")
        if _sha256(f) != entry["sha256"]:
            raise BundleError(f"{d}: {name} does not match its sha256 in the manifest (modified or corrupt)")
    for role in ("onnxruntime", "tensorrt", "weights"):
        name = manifest["graphs"].get(role)
        if not isinstance(name, str) or name not in files:
            raise BundleError(f"{path}: graph '{role}' is not one of the listed files")
    for role in ("onnxruntime", "tensorrt"):
        _check_external_data(d, manifest["graphs"][role], files)
    return manifest


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _check_schema(manifest: dict, path: Path) -> None:
    """The fields the compiler, runtime and ``inspect`` read, with their types; the model config
    through the architecture's own validation (types and the size bounds of jetmamba.limits)."""
    from jetmamba.calibration.arch import config_from_dict

    for key in ("files", "graphs", "io", "config", "board"):
        if not isinstance(manifest.get(key), dict):
            raise BundleError(f"{path}: '{key}' is missing or not an object")
    for key in ("jetmamba", "source"):
        if not isinstance(manifest.get(key, ""), str):
            raise BundleError(f"{path}: '{key}' must be a string")
    if not isinstance(manifest.get("recipe") or {}, dict):
        raise BundleError(f"{path}: 'recipe' must be an object")
    if not isinstance(manifest.get("tokenizer"), (str, type(None))):
        raise BundleError(f"{path}: 'tokenizer' must be a file name or null")
    board = manifest["board"]
    if not all(isinstance(board.get(k), str) for k in ("name", "gpu_arch")):
        raise BundleError(f"{path}: 'board' needs the strings 'name' and 'gpu_arch'")
    for side in ("inputs", "outputs"):
        tensors = manifest["io"].get(side)
        if not isinstance(tensors, list) or not all(_is_io_tensor(t) for t in tensors):
            raise BundleError(f"{path}: io '{side}' must be a list of {{name, dtype, shape}} tensors")
    try:
        config_from_dict(manifest["config"])
    except (CheckpointError, TypeError, ValueError) as exc:
        raise BundleError(f"{path}: the model config is not valid ({_first_line(exc)})") from None


def _is_io_tensor(t) -> bool:
    return (
        isinstance(t, dict)
        and isinstance(t.get("name"), str)
        and isinstance(t.get("dtype"), str)
        and isinstance(t.get("shape"), list)
        and all(isinstance(x, str) or _is_count(x) for x in t["shape"])
    )


def _check_external_data(d: Path, graph: str, files: dict) -> None:
    """Every external-data reference of ``graph`` names a listed file and lies inside it: the
    ONNX loaders would otherwise read whatever path a graph names (``../../``, an absolute path)."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(d / graph), load_external_data=False)
    except (DecodeError, ValueError, OSError, RuntimeError, TypeError) as exc:
        raise BundleError(f"{d}: {graph} is not a valid ONNX file ({_first_line(exc)})") from None
    for tensor in _all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        name = str(PurePosixPath(graph).parent / location) if location else ""
        name = name[2:] if name.startswith("./") else name
        try:
            offset, length = int(info.get("offset", 0)), int(info.get("length", -1))
        except ValueError:
            offset = length = -1
        rel = PurePosixPath(location) if location else None
        if rel is None or rel.is_absolute() or ".." in rel.parts or name not in files:
            raise BundleError(f"{d}: {graph}: tensor {tensor.name!r} has external data in {location!r}, "
                              "which is not a file of the bundle")  # fmt: skip
        if offset < 0 or length < 0 or offset + length > files[name]["bytes"]:
            raise BundleError(f"{d}: {graph}: tensor {tensor.name!r} has external data outside {name} "
                              f"(offset {info.get('offset')}, length {info.get('length')})")  # fmt: skip


def _all_tensors(model):
    """Every TensorProto of an ONNX model: initializers and tensor attributes, in subgraphs and
    functions too (where external data can hide)."""

    def of_graph(graph):
        yield from graph.initializer
        for node in graph.node:
            yield from of_nodes([node])

    def of_nodes(nodes):
        for node in nodes:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                if attr.HasField("g"):
                    yield from of_graph(attr.g)
                for g in attr.graphs:
                    yield from of_graph(g)

    yield from of_graph(model.graph)
    for function in model.functions:
        yield from of_nodes(function.node)


def load_bundle(directory):
    """(manifest, OrtModel on the function-body graph), after verification."""
    from jetmamba.calibration.arch import config_from_dict
    from jetmamba.compiler.ort import OrtModel

    manifest = verify_bundle(directory)
    config = config_from_dict(manifest["config"])  # verified above
    return manifest, OrtModel(Path(directory) / manifest["graphs"]["onnxruntime"], config=config)


def describe_bundle(directory) -> dict:
    """What ``jetmamba inspect`` prints for a bundle: manifest facts, the I/O contract and the
    op histogram of the TensorRT graph (custom ops as ``jetmamba::Name``)."""
    import collections

    import onnx

    d = Path(directory)
    manifest = verify_bundle(d)
    graph = onnx.load(str(d / manifest["graphs"]["tensorrt"]), load_external_data=False).graph
    ops = collections.Counter(f"{n.domain}::{n.op_type}" if n.domain else n.op_type for n in graph.node)
    return {
        "path": str(d),
        "format": f"{manifest['format']} v{manifest['format_version']}",
        "jetmamba": manifest.get("jetmamba"),
        "board": manifest["board"],
        "arch": manifest["config"].get("arch"),
        "recipe": (manifest.get("recipe") or {}).get("name"),
        "source": manifest.get("source"),
        "io": manifest["io"],
        "ops": dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        "bytes": sum(f["bytes"] for f in manifest["files"].values()),
        "files": len(manifest["files"]),
    }


def format_bundle(info: dict) -> str:
    def io_line(t):
        return f"    {t['name']:<22} {t['dtype']:<8} [{', '.join(str(x) for x in t['shape'])}]"

    ins, outs, board = info["io"]["inputs"], info["io"]["outputs"], info["board"]
    head = [io_line(t) for t in ins[:3]] + ([f"    ... ({len(ins) - 3} more state inputs)"] if len(ins) > 3 else [])
    tail = [io_line(t) for t in outs[:3]] + ([f"    ... ({len(outs) - 3} more state outputs)"] if len(outs) > 3 else [])
    return "\n".join([
        f"bundle      {info['path']}  ({info['format']}, jetmamba {info['jetmamba']}, verified)",
        f"model       {info['arch']}, recipe {info['recipe']}, for {board['name']} ({board['gpu_arch']})",
        f"size        {info['bytes'] / 1e6:.2f} MB in {info['files']} files",
        "inputs", *head, "outputs", *tail,
        "ops         " + ", ".join(f"{k} x{v}" for k, v in info["ops"].items()),
    ])  # fmt: skip
