"""A QuantizedModel lowered to ONNX and run by ONNX Runtime equals the QuantizedModel simulation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from graph_runs import decode_logits, decode_nmse, feeds, nmse, session, zero_feeds

from jetmamba.calibration.checkpoint import load_model
from jetmamba.calibration.quantize import quantize_model
from jetmamba.calibration.recipes import RECIPES
from jetmamba.compiler.lowering import io_contract, lower_quantized
from jetmamba.compiler.passes import PIPELINE, attach_functions, run_pipeline, tensorrt_flavour, verify

# every recipe of each fixture's architecture
CASES = [("mamba1_fixture", "w8a8-quamba"), ("mamba1_fixture", "w8a8-mambaquant"), ("mamba1_fixture", "w8a8-naive"),
         ("mamba2_fixture", "w8a8-quamba2"), ("mamba2_fixture", "w8a8-naive"), ("mamba2_fixture", "w8a8-quamba"),
         ("mamba2_fixture", "w8a8-mambaquant")]  # fmt: skip


@pytest.fixture(scope="module")
def quantized(request):
    cache = {}

    def get(fixture, recipe):
        if (fixture, recipe) not in cache:
            model = load_model(request.getfixturevalue(fixture))
            windows = torch.randint(0, 256, (4, 128), generator=torch.Generator().manual_seed(0))
            cache[fixture, recipe] = quantize_model(model, RECIPES[recipe], windows, show_progress=False)
        return cache[fixture, recipe]

    return get


@pytest.mark.parametrize("fixture,recipe", CASES)
def test_onnx_runtime_equals_simulation(quantized, fixture, recipe):
    q = quantized(fixture, recipe)
    model = lower_quantized(q).model()
    model = attach_functions(run_pipeline(model, check=True))
    verify(model)
    sess = session(model)
    ids = torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(1))
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds(q, ids)), strict=True))
    want, state = q.prefill(ids)
    assert nmse(outs["logits"], want.numpy()) <= 1e-4
    # int8 codes may flip by one where an fp32 sum lands within an ulp of a rounding tie, and a flip
    # propagates; the states are compared as values (docs/compiler.md records how often codes flip)
    for i, layer in enumerate(state.layers):
        conv = outs[f"conv_state_out.{i}"].astype(np.float32)
        assert nmse(conv, layer.conv.float().numpy()) <= 1e-2, i
        assert nmse(outs[f"ssm_state_out.{i}"].astype(np.float32), layer.ssm.float().numpy()) <= 1e-3, i


def test_io_contract_matches_the_graph(quantized):
    q = quantized("mamba2_fixture", "w8a8-quamba2")
    model = lower_quantized(q).model()
    ins, outs = io_contract(q.config)
    assert [v.name for v in model.graph.inputs] == [t.name for t in ins]
    assert [v.name for v in model.graph.outputs] == [t.name for t in outs]


def test_residual_add_is_fused(quantized):
    q = quantized("mamba1_fixture", "w8a8-quamba")
    model = lower_quantized(q).model()
    adds = sum(n.op_type == "Add" and "residual_add" in (n.name or "") for n in model.graph)
    assert adds == q.config.n_layer  # one per layer after the first, and the final one
    model = run_pipeline(model, PIPELINE, check=True)
    norms = [n for n in model.graph if n.op_type == "RMSNormQuant"]
    assert [len(n.inputs) for n in norms] == [2] + [3] * (q.config.n_layer - 1)
    assert sum(n.op_type == "Add" and "residual_add" in (n.name or "") for n in model.graph) == 1  # the final one


def test_tensorrt_flavour_names_plugins(quantized):
    q = quantized("mamba1_fixture", "w8a8-quamba")
    model = tensorrt_flavour(run_pipeline(lower_quantized(q).model()))
    verify(model)
    assert not model.functions
    custom = [n for n in model.graph if n.domain == "jetmamba"]
    assert custom and all(n.attributes["plugin_namespace"].value == "jetmamba" and not n.overload for n in custom)


# a decode step rounds the SSM state to fp16 at every call boundary where a long prefill keeps it in
# fp32 inside the scan: over 32 steps that costs up to 4e-4 logits NMSE on the fixtures (docs/compiler.md)
DECODE_NMSE = {torch.float32: 1e-12, torch.float16: 1e-3}  # fp32: exact up to GEMM summation order


@pytest.mark.parametrize("state_dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("fixture,recipe", [("mamba1_fixture", "w8a8-quamba"), ("mamba1_fixture", "w8a8-mambaquant"),
                                            ("mamba2_fixture", "w8a8-quamba2")])  # fmt: skip
def test_prefill_then_decode_through_the_graph(quantized, fixture, recipe, state_dtype):
    """One graph: a 24-token prefill, then 32 single-token calls feeding the states back, equal the
    full-sequence call: exactly (0.0 measured) with an fp32 SSM state, within the fp16 state's rounding otherwise."""
    q = quantized(fixture, recipe)
    sess = session(attach_functions(run_pipeline(lower_quantized(q, state_dtype=state_dtype).model())))
    assert decode_nmse(sess, zero_feeds(sess), q.config.n_layer) <= DECODE_NMSE[state_dtype]


# An int8 SSM state (Mamba1, a scale per (batch row, channel)) is rounded to half a step of its
# channel, max |h| / 254, at every call boundary; over 32 decode steps the chained logits of the
# w8a8-quamba fixture are 5.2e-4 NMSE from the fp32-state graph's (measured; docs/compiler.md): the
# bound leaves 4x for other seeds and recipes.
INT8_STATE_DECODE_NMSE = 2e-3


def test_int8_state_graph_decodes_close_to_fp32_state(quantized):
    """The int8-state graph's I/O (codes, scales), a zero state = zero codes and scales, and its
    prefill + 32 decode steps against the fp32-state graph's."""
    q = quantized("mamba1_fixture", "w8a8-quamba")
    int8 = session(attach_functions(run_pipeline(lower_quantized(q, state_dtype=torch.int8).model())))
    fp32 = session(attach_functions(run_pipeline(lower_quantized(q, state_dtype=torch.float32).model())))
    ins = {i.name: i.type for i in int8.get_inputs()}
    assert ins["ssm_state.0"] == "tensor(int8)" and ins["ssm_state_scale.0"] == "tensor(float)"
    assert {o.name for o in int8.get_outputs()} >= {"ssm_state_out.3", "ssm_state_scale_out.3"}
    chain, full = decode_logits(int8, zero_feeds(int8))
    chain_fp32, full_fp32 = decode_logits(fp32, zero_feeds(fp32))
    # the prefill keeps the state in fp32 inside the scan: the full-sequence calls agree to fp32
    assert nmse(full, full_fp32) <= 1e-10
    err = nmse(chain, chain_fp32)
    print(f"int8 state: prefill 24 + 32 decode steps, logits NMSE vs the fp32 state {err:.2e}")
    assert 0 < err <= INT8_STATE_DECODE_NMSE


def test_int8_state_is_refused_where_there_is_none(quantized):
    from jetmamba.compiler.lowering import io_contract
    from jetmamba.errors import UnsupportedError

    with pytest.raises(UnsupportedError, match="SSDScan has no int8 state"):
        lower_quantized(quantized("mamba2_fixture", "w8a8-quamba2"), state_dtype=torch.int8)
    q = quantized("mamba1_fixture", "w8a8-quamba")
    ins, outs = io_contract(q.config, state_dtype=torch.int8)
    scale = next(t for t in ins if t.name == "ssm_state_scale.1")
    assert scale.dtype == "float32" and scale.shape == ("batch", q.config.d_inner)
    assert [t.name for t in outs[1:4]] == ["conv_state_out.0", "ssm_state_out.0", "ssm_state_scale_out.0"]


@pytest.mark.parametrize("fixture,recipe", CASES)
def test_perplexity_through_onnx_runtime(quantized, fixture, recipe, wikitext_test):
    """The eval protocol through the graph agrees with the simulation to 0.1 % (the bundle bound)."""
    from jetmamba.calibration.data import read_text, tokenize
    from jetmamba.calibration.evaluate import perplexity
    from jetmamba.calibration.tokenizer import ByteTokenizer
    from jetmamba.compiler.ort import OrtModel

    q = quantized(fixture, recipe)
    tokens = tokenize(read_text(wikitext_test), ByteTokenizer(), max_tokens=4096)
    graph = OrtModel(attach_functions(run_pipeline(lower_quantized(q).model())))
    a = perplexity(graph, tokens, 512, show_progress=False).perplexity
    b = perplexity(q, tokens, 512, show_progress=False).perplexity
    assert abs(a / b - 1) <= 1e-3, (a, b)


# ---------------------------------------------------------------- unquantized lowering


@pytest.fixture(scope="module")
def fp_model(request):
    cache = {}

    def get(fixture):
        if fixture not in cache:
            cache[fixture] = load_model(request.getfixturevalue(fixture))
        return cache[fixture]

    return get


def fp_session(model, dtype):
    from jetmamba.compiler.lowering import lower_fp

    graph = lower_fp(model, dtype=dtype, state_dtype=dtype).model()
    return session(attach_functions(run_pipeline(graph, check=True)))


@pytest.mark.parametrize("fixture", ["mamba1_fixture", "mamba2_fixture"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_unquantized_lowering_equals_the_fp_model(fp_model, fixture, dtype):
    """fp32: the graph is the fp32 model up to summation order; fp16: within the fp16 model's own
    tolerance of fp32 (ORT's CPU kernels run fp16 as the device would store it)."""
    from tolerances import assert_close

    model = fp_model(fixture)
    sess = fp_session(model, dtype)
    ids = torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(1))
    state = {k: np.repeat(v, 2, axis=0) for k, v in zero_feeds(sess).items()}
    (logits,) = sess.run(["logits"], {"input_ids": ids.numpy(), **state})
    assert_close(torch.from_numpy(logits), model(ids), "logits.onnx_fp32" if dtype == torch.float32 else "logits.fp16")


@pytest.mark.parametrize("fixture", ["mamba1_fixture", "mamba2_fixture"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_unquantized_prefill_then_decode(fp_model, fixture, dtype):
    model = fp_model(fixture)
    sess = fp_session(model, dtype)
    assert decode_nmse(sess, zero_feeds(sess), model.config.n_layer) <= DECODE_NMSE[dtype]


def test_unquantized_contract_and_ops(fp_model):
    from jetmamba.compiler.lowering import io_contract, lower_fp

    model = fp_model("mamba2_fixture")
    graph = run_pipeline(lower_fp(model).model(), check=True)
    ins, outs = io_contract(model.config, conv_dtype=torch.float16)
    assert [(v.name, v.dtype.name) for v in graph.graph.inputs] == [
        (t.name, {"int64": "INT64", "float16": "FLOAT16"}[t.dtype]) for t in ins
    ]
    assert [v.name for v in graph.graph.outputs] == [t.name for t in outs]
    ops = {n.op_type for n in graph.graph if n.domain == "jetmamba"}
    assert ops == {"RMSNorm", "CausalConv1dFp", "SSDScanFp", "GatedRMSNorm"}
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.graph)
    norms = [n for n in graph.graph if n.op_type == "RMSNorm"]
    assert [len(n.inputs) for n in norms] == [2] + [3] * (model.config.n_layer - 1)  # residual add fused


def test_unquantized_lowering_refuses_transformed_models(fp_model):
    from jetmamba.calibration.transforms import hadamard_before_out_proj
    from jetmamba.compiler.lowering import lower_fp
    from jetmamba.errors import UnsupportedError

    rotated = hadamard_before_out_proj(fp_model("mamba1_fixture"))  # a copy: the cached model stays plain
    with pytest.raises(UnsupportedError, match="layers.0: the fp model carries quantization transforms"):
        lower_fp(rotated)
    with pytest.raises(UnsupportedError, match="float16 or float32, not bfloat16"):
        lower_fp(fp_model("mamba1_fixture"), dtype=torch.bfloat16)
