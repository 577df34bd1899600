"""The TensorRT-free half of an engine: profiles, buffer plan, cache key and cache layout, from
real bundles of both fixtures."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
from bundles import fp_bundle, quantized_bundle

from jetmamba.compiler.bundle import verify_bundle
from jetmamba.errors import UsageError
from jetmamba.runtime import engine as eng


@pytest.fixture(scope="module")
def mamba1_fp16(tmp_path_factory, mamba1_fixture):
    _, out = fp_bundle(mamba1_fixture, tmp_path_factory.mktemp("e") / "m1")
    return out, verify_bundle(out)


@pytest.fixture(scope="module")
def mamba2_w8a8(tmp_path_factory, mamba2_fixture):
    _, out = quantized_bundle(mamba2_fixture, "w8a8-quamba2", tmp_path_factory.mktemp("e") / "m2")
    return out, verify_bundle(out)


TARGET = eng.Target("10.3.0", "Orin", "8.7", "ab" * 32)


def test_io_contract_of_both_fixtures(mamba1_fp16, mamba2_w8a8):
    c1 = eng.io_contract(mamba1_fp16[1])
    assert c1.vocab_size == 256 and len(c1.state_inputs) == 8  # conv + ssm state of 4 layers
    assert c1.state_inputs[0] == eng.TensorSpec("conv_state.0", "float16", ("batch", 3, 384))
    assert c1.state_inputs[1] == eng.TensorSpec("ssm_state.0", "float16", ("batch", 384, 16))
    assert [t.name for t in c1.state_outputs] == [n.replace(".", "_out.") for n in c1.state_names]
    c2 = eng.io_contract(mamba2_w8a8[1])
    # quantized: an int8 conv state; Mamba2's SSM state is [batch, heads, head_dim, d_state]
    assert c2.state_inputs[0] == eng.TensorSpec("conv_state.0", "int8", ("batch", 3, 512))
    assert c2.state_inputs[1] == eng.TensorSpec("ssm_state.0", "float16", ("batch", 12, 32, 32))


def test_profiles(mamba1_fp16, mamba2_w8a8):
    options = eng.EngineOptions(max_prompt=512, max_batch=4)
    prefill, decode = eng.make_profiles(eng.io_contract(mamba1_fp16[1]), options)
    assert (prefill.name, prefill.index, decode.name, decode.index) == ("prefill", 0, "decode", 1)
    assert prefill.shapes["input_ids"] == ((1, 1), (1, 128), (4, 512))  # opt: a typical prompt, one stream
    assert decode.shapes["input_ids"] == ((1, 1), (1, 1), (4, 1))
    assert prefill.shapes["ssm_state.3"] == decode.shapes["ssm_state.3"] == ((1, 384, 16), (1, 384, 16), (4, 384, 16))
    assert set(prefill.shapes) == set(decode.shapes) == {"input_ids", *eng.io_contract(mamba1_fp16[1]).state_names}
    short = eng.EngineOptions(max_prompt=64, opt_prompt=None)
    assert eng.make_profiles(eng.io_contract(mamba2_w8a8[1]), short)[0].shapes["input_ids"][1] == (1, 64)
    opt = eng.EngineOptions(max_prompt=64, opt_prompt=16)
    prefill2, _ = eng.make_profiles(eng.io_contract(mamba2_w8a8[1]), opt)
    assert prefill2.shapes["conv_state.0"] == ((1, 3, 512), (1, 3, 512), (1, 3, 512))
    assert prefill2.shapes["input_ids"] == ((1, 1), (1, 16), (1, 64))


def test_buffer_plan_by_hand(mamba1_fp16, mamba2_w8a8):
    plan = eng.buffer_plan(eng.io_contract(mamba1_fp16[1]), eng.EngineOptions(max_prompt=64, max_batch=2))
    # per batch row and layer: conv 3 x 384 fp16 = 2304 B, ssm 384 x 16 fp16 = 12288 B
    assert plan.state_bytes["conv_state.2"] == 2 * 2304 and plan.state_bytes["ssm_state.2"] == 2 * 12288
    assert plan.state_set_bytes == 2 * 4 * (2304 + 12288) == 116736
    assert plan.input_ids_bytes == 2 * 64 * 8 and plan.logits_bytes == 2 * 64 * 256 * 4
    assert plan.state_sets == 2
    assert plan.device_bytes == 1024 + 131072 + 2 * 116736
    assert plan.host_bytes == 1024 + 131072
    assert plan.per_profile["decode"]["logits"] == 2 * 1 * 256 * 4
    assert plan.per_profile["prefill"]["ssm_state_out.0"] == 2 * 12288
    plan2 = eng.buffer_plan(eng.io_contract(mamba2_w8a8[1]), eng.EngineOptions(max_prompt=8))
    # int8 conv state 3 x 512 = 1536 B; fp16 SSM state 12 x 32 x 32 x 2 = 24576 B
    assert plan2.state_set_bytes == 4 * (1536 + 24576)
    assert json.loads(json.dumps(plan2.to_dict()))["device_bytes"] == plan2.device_bytes


def test_options_are_validated_and_round_trip():
    options = eng.EngineOptions(max_prompt=256, max_batch=2, opt_level=5, workspace_mib=512)
    assert eng.EngineOptions.from_dict(json.loads(json.dumps(options.to_dict()))) == options
    for bad, match in [
        ({"max_prompt": 0}, "max_prompt"),
        ({"max_batch": 0}, "max_batch"),
        ({"opt_level": 6}, "0..5"),
        ({"opt_prompt": 300, "max_prompt": 256}, "opt_prompt"),
        ({"fp16": True}, "weakly typed"),
        ({"workspace_mib": 0}, "workspace"),
    ]:
        with pytest.raises(UsageError, match=match):
            eng.EngineOptions(**bad)
    assert eng.EngineOptions(strongly_typed=False, fp16=True).fp16
    with pytest.raises(UsageError, match="unknown engine options"):
        eng.EngineOptions.from_dict({"max_prompt": 8, "colour": "red"})


def test_cache_key_changes_with_each_input_and_only_then(mamba1_fp16):
    _, manifest = mamba1_fp16
    options = eng.EngineOptions()
    key = eng.cache_key(manifest, TARGET, options)
    assert key == eng.cache_key(copy.deepcopy(manifest), TARGET, eng.EngineOptions()) and len(key) == 64
    keys = {key}
    for field in dataclasses.fields(eng.Target):
        keys.add(eng.cache_key(manifest, dataclasses.replace(TARGET, **{field.name: "other"}), options))
    for change in ({"max_prompt": 4096}, {"max_batch": 2}, {"opt_level": 1}, {"opt_prompt": 64},
                   {"strongly_typed": False}, {"strongly_typed": False, "fp16": True},
                   {"strongly_typed": False, "int8": True}, {"workspace_mib": 64}):  # fmt: skip
        keys.add(eng.cache_key(manifest, TARGET, dataclasses.replace(options, **change)))
    for role in ("tensorrt", "weights"):
        changed = copy.deepcopy(manifest)
        changed["files"][changed["graphs"][role]]["sha256"] = "0" * 64
        keys.add(eng.cache_key(changed, TARGET, options))
    assert len(keys) == 1 + 4 + 8 + 2
    # what the key does not depend on: the ONNX Runtime graph, the manifest's other entries
    other = copy.deepcopy(manifest)
    other["files"][other["graphs"]["onnxruntime"]]["sha256"] = "1" * 64
    other["source"] = "elsewhere"
    assert eng.cache_key(other, TARGET, options) == key


def test_cache_layout_and_lookup(mamba1_fp16, tmp_path):
    import shutil

    bundle = tmp_path / "b"
    shutil.copytree(mamba1_fp16[0], bundle)
    manifest = verify_bundle(bundle)
    options = eng.EngineOptions(max_prompt=64)
    key = eng.cache_key(manifest, TARGET, options)
    directory = eng.engine_dir(bundle, key)
    assert directory == bundle / "engines" / key[:16]
    assert eng.timing_cache_path(bundle, TARGET).parent == bundle / "engines"
    assert eng.find_cached_engine(bundle, manifest, TARGET, options) is None and eng.list_cached_engines(bundle) == []
    directory.mkdir(parents=True)
    (directory / eng.ENGINE_FILE).write_bytes(b"plan")
    assert eng.find_cached_engine(bundle, manifest, TARGET, options) is None  # no record: incomplete
    record = eng.engine_record(manifest, TARGET, options, seconds=1.5)
    (directory / eng.OPTIONS_FILE).write_text(json.dumps(record))
    assert eng.find_cached_engine(bundle, manifest, TARGET, options) == directory / eng.ENGINE_FILE
    assert eng.find_cached_engine(bundle, manifest, TARGET, eng.EngineOptions(max_prompt=65)) is None
    listed = eng.list_cached_engines(bundle)
    assert [r["key"] for r in listed] == [key] and listed[0]["options"]["max_prompt"] == 64
    assert eng.EngineOptions.from_dict(listed[0]["options"]) == options
    # the engines folder is not part of the bundle: it still verifies
    assert verify_bundle(bundle) == manifest


@pytest.mark.parametrize("damage,match", [
    (lambda io: io["inputs"].pop(0), "input_ids"),
    (lambda io: io["outputs"].pop(1), "no matching output"),
    (lambda io: io["inputs"][1].update(dtype="complex64"), "dtype"),
    (lambda io: io["inputs"][1].update(shape=[3, 384, "batch"]), "expected \\[batch"),
    (lambda io: io["outputs"].append({"name": "extra", "dtype": "float32", "shape": ["batch"]}), "extra"),
])  # fmt: skip
def test_bad_contracts_are_refused(mamba1_fp16, damage, match):
    manifest = copy.deepcopy(mamba1_fp16[1])
    damage(manifest["io"])
    with pytest.raises(UsageError, match=match):
        eng.io_contract(manifest)
