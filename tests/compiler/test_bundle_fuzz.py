"""Hostile bundles: every manifest field corrupted, file entries that escape the bundle, ONNX
graphs truncated or replaced by random bytes (caught by the sha256 check, and, with the manifest
re-hashed to match, by the ONNX loaders themselves), external data pointing outside the bundle.
Each is a one-line error; a manifest that passes verification is one the runtime can read."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
from fuzz import bad_json_bytes, corrupted_dict, fuzz, json_values
from hypothesis import given
from hypothesis import strategies as st

from jetmamba.calibration.checkpoint import load_model
from jetmamba.compiler.bundle import (
    MANIFEST,
    BundleError,
    describe_bundle,
    format_bundle,
    load_bundle,
    verify_bundle,
    write_bundle,
)
from jetmamba.errors import CheckpointError
from jetmamba.limits import LIMITS


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, mamba1_fixture):
    out = tmp_path_factory.mktemp("b") / "bundle"
    write_bundle(load_model(mamba1_fixture), out, board="orin-nano-8gb")  # fp16, no quantization: quick
    return out


def _copy(bundle, tmp_path_factory):
    d = tmp_path_factory.mktemp("bc") / "bundle"
    shutil.copytree(bundle, d)
    return d


def _manifest(d) -> dict:
    return json.loads((d / MANIFEST).read_text())


def _write_manifest(d, manifest) -> None:
    data = manifest if isinstance(manifest, bytes) else json.dumps(manifest, allow_nan=True).encode()
    (d / MANIFEST).write_bytes(data)


def _rehash(d, name: str) -> None:
    """Make the manifest agree with a changed file, as a forger would."""
    m = _manifest(d)
    data = (d / name).read_bytes()
    m["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    _write_manifest(d, m)


def _verify_or_refuse(d):
    """verify_bundle's two outcomes: one line naming the bundle, or a manifest that inspect and
    the ONNX Runtime loader can use."""
    try:
        manifest = verify_bundle(d)
    except BundleError as exc:
        assert str(d) in str(exc) and "\n" not in str(exc), str(exc)
        return None
    format_bundle(describe_bundle(d))
    return manifest


@fuzz(120)
@given(data=st.data())
def test_manifest_fields_corrupted(bundle, tmp_path_factory, data):
    base = _manifest(bundle)
    keys = sorted(base) + [f"{k}.{sub}" for k in ("graphs", "board", "io", "config", "opsets", "versions")
                           for sub in base[k]] + ["files.model.onnx", "files.weights.bin"]  # fmt: skip
    d = _copy(bundle, tmp_path_factory)
    _write_manifest(d, data.draw(corrupted_dict(base, keys)))
    _verify_or_refuse(d)


@fuzz(60)
@given(
    name=st.sampled_from(["model.onnx", "weights.bin", "model.trt.onnx"]),
    field=st.sampled_from(["bytes", "sha256"]),
    value=json_values | st.sampled_from(["0" * 64, "A" * 64, "g" * 64, -1, 2**63, True]),
)
def test_file_entries_corrupted(bundle, tmp_path_factory, name, field, value):
    d = _copy(bundle, tmp_path_factory)
    m = _manifest(d)
    m["files"][name][field] = value
    _write_manifest(d, m)
    with pytest.raises(BundleError):
        verify_bundle(d)


@pytest.mark.parametrize(
    "entry",
    ["../outside", "/etc/passwd", "a/../../outside", "plugins\\..\\..\\x", "", ".", "./model.onnx/.."],
)
def test_file_entries_that_leave_the_bundle(bundle, tmp_path_factory, entry):
    d = _copy(bundle, tmp_path_factory)
    (d.parent / "outside").write_text("not the bundle's")
    m = _manifest(d)
    m["files"][entry] = {"bytes": 16, "sha256": "0" * 64}
    _write_manifest(d, m)
    with pytest.raises(BundleError, match="not a path inside the bundle|is missing"):
        verify_bundle(d)


def test_symlinked_file_is_refused(bundle, tmp_path_factory):
    d = _copy(bundle, tmp_path_factory)
    (d / "weights.bin").rename(d.parent / "weights.bin")
    (d / "weights.bin").symlink_to(d.parent / "weights.bin")
    with pytest.raises(BundleError, match="symbolic link"):
        verify_bundle(d)


@fuzz(40)
@given(raw=bad_json_bytes)
def test_manifest_not_json(bundle, tmp_path_factory, raw):
    d = _copy(bundle, tmp_path_factory)
    _write_manifest(d, raw)
    with pytest.raises(BundleError, match="manifest.json"):
        verify_bundle(d)


def test_oversized_manifest_is_not_read(bundle, tmp_path_factory):
    d = _copy(bundle, tmp_path_factory)
    with open(d / MANIFEST, "r+b") as f:
        f.truncate(LIMITS.manifest_json_bytes + 1)
    with pytest.raises(BundleError, match="is not a manifest"):
        verify_bundle(d)


_onnx_damage = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, 10**6)),
    st.tuples(st.just("random"), st.binary(max_size=400).map(lambda b: b.hex())),
    st.tuples(st.just("flip"), st.integers(0, 10**6)),
)


def _damage(path, damage):
    kind, arg = damage
    raw = bytearray(path.read_bytes())
    if kind == "truncate":
        raw = raw[: arg % len(raw)]
    elif kind == "random":
        raw = bytearray(bytes.fromhex(arg))
    else:
        raw[arg % len(raw)] ^= 0xFF
    path.write_bytes(bytes(raw))


@fuzz(40)
@given(graph=st.sampled_from(["model.onnx", "model.trt.onnx"]), damage=_onnx_damage)
def test_onnx_damaged_is_caught_by_the_hash(bundle, tmp_path_factory, graph, damage):
    d = _copy(bundle, tmp_path_factory)
    _damage(d / graph, damage)
    with pytest.raises(BundleError, match=f"{graph} (does not match its sha256|has .* bytes)"):
        verify_bundle(d)


@fuzz(40)
@given(graph=st.sampled_from(["model.onnx", "model.trt.onnx"]), damage=_onnx_damage)
def test_onnx_damaged_and_rehashed(bundle, tmp_path_factory, graph, damage):
    """The manifest re-hashed to match the damage: the ONNX loaders themselves see the garbage
    (onnx's parser in verification, then ONNX Runtime), and still say so in one line."""
    d = _copy(bundle, tmp_path_factory)
    _damage(d / graph, damage)
    _rehash(d, graph)
    try:
        verify_bundle(d)
        load_bundle(d)
    except CheckpointError as exc:  # BundleError, or ONNX Runtime's refusal
        assert str(d) in str(exc) and "\n" not in str(exc), str(exc)


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/passwd", "plugins/../../outside.bin", "absent.bin"])
def test_external_data_outside_the_bundle(bundle, tmp_path_factory, location):
    import onnx

    d = _copy(bundle, tmp_path_factory)
    (d.parent / "outside.bin").write_bytes(bytes(1 << 20))
    model = onnx.load(str(d / "model.onnx"), load_external_data=False)
    tensor = next(t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL)
    for entry in tensor.external_data:
        if entry.key == "location":
            entry.value = location
    onnx.save(model, str(d / "model.onnx"))
    _rehash(d, "model.onnx")
    with pytest.raises(BundleError, match="which is not a file of the bundle"):
        verify_bundle(d)


def test_external_data_beyond_its_file(bundle, tmp_path_factory):
    import onnx

    d = _copy(bundle, tmp_path_factory)
    model = onnx.load(str(d / "model.onnx"), load_external_data=False)
    tensor = next(t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL)
    for entry in tensor.external_data:
        if entry.key == "offset":
            entry.value = str(1 << 40)
    onnx.save(model, str(d / "model.onnx"))
    _rehash(d, "model.onnx")
    with pytest.raises(BundleError, match="external data outside weights.bin"):
        verify_bundle(d)
