"""4-bit QuantizedModels lowered to ONNX: W4A8Linear / W4A16Linear nodes, per-layer I/O, and ONNX
Runtime on the graph equal to the simulation (logits, perplexity, decode)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from graph_runs import decode_nmse, feeds, nmse, session, zero_feeds

from jetmamba.calibration.checkpoint import load_model
from jetmamba.calibration.quantize import quantize_model
from jetmamba.calibration.recipes import RECIPES
from jetmamba.compiler.lowering import io_contract, lower, lower_quantized
from jetmamba.compiler.passes import attach_functions, run_pipeline, verify
from jetmamba.errors import UnsupportedError

# the 4-bit recipes of each fixture's architecture (w4a16-quamba2 and w4ax-quamba2 are Mamba2 only)
CASES = [("mamba2_fixture", "w4a16-quamba2"), ("mamba2_fixture", "w4a8-quamba2"),
         ("mamba2_fixture", "w4ax-quamba2"), ("mamba1_fixture", "w4a8-mambaquant"),
         ("mamba1_fixture", "w4a16-rtn"), ("mamba1_fixture", "w4a8-rtn")]  # fmt: skip


@pytest.fixture(scope="module")
def quantized(request):
    cache = {}

    def get(fixture, recipe):
        if (fixture, recipe) not in cache:
            model = load_model(request.getfixturevalue(fixture))
            windows = torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(0))
            cache[fixture, recipe] = quantize_model(model, RECIPES[recipe], windows, show_progress=False)
        return cache[fixture, recipe]

    return get


def graph(q, **kw):
    model = attach_functions(run_pipeline(lower_quantized(q, **kw).model(), check=True))
    verify(model)
    return model


def test_w4ax_fixture_mixes_both_kinds(quantized):
    """The W4AX cases below only test what they claim if the model has layers of both kinds."""
    assert set(quantized("mamba2_fixture", "w4ax-quamba2").layer_act_bits) == {8, 16}


@pytest.mark.parametrize("fixture,recipe", CASES)
def test_onnx_runtime_equals_simulation(quantized, fixture, recipe):
    q = quantized(fixture, recipe)
    sess = session(graph(q))
    ids = torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(1))
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds(q, ids)), strict=True))
    want, state = q.prefill(ids)
    assert nmse(outs["logits"], want.numpy()) <= 1e-4
    for i, layer in enumerate(state.layers):
        conv = outs[f"conv_state_out.{i}"]
        assert conv.dtype == layer.conv.numpy().dtype, i  # int8 or fp16, per layer
        assert nmse(conv.astype(np.float32), layer.conv.float().numpy()) <= 1e-2, i
        assert nmse(outs[f"ssm_state_out.{i}"].astype(np.float32), layer.ssm.float().numpy()) <= 1e-3, i


@pytest.mark.parametrize("fixture,recipe", CASES)
def test_gemms_lower_by_weight_and_activation_width(quantized, fixture, recipe):
    """Every 4-bit GEMM is a W4A8Linear (int8 layer) or W4A16Linear (fp layer); only dt_proj of the
    int8 Mamba1 layers (K = dt_rank holds no int4 group) stays a Q/DQ int8 GEMM."""
    q = quantized(fixture, recipe)
    model = lower_quantized(q).model()
    for i, bits in enumerate(q.layer_act_bits):
        p = f"layers.{i}.mixer."
        w4 = [n for n in model.graph if n.op_type.startswith("W4A") and n.name.startswith(p)]
        kinds = {n.name[len(p) :]: n.op_type for n in w4}
        names = {"in_proj", "out_proj"} | ({"x_proj"} if q.config.arch == "mamba1" else set())
        assert kinds == dict.fromkeys(names, "W4A8Linear" if bits == 8 else "W4A16Linear"), i
        qdq_gemms = {n.name for n in model.graph if n.name and n.name.startswith(p) and n.name.endswith(".dq_weight")}
        assert qdq_gemms == ({f"{p}dt_proj.dq_weight"} if q.config.arch == "mamba1" and bits == 8 else set()), i
        norm = next(n for n in model.graph if n.name == f"layers.{i}.norm")
        assert norm.op_type == ("RMSNormQuant" if bits == 8 else "RMSNorm")


def test_w4ax_io_has_per_layer_conv_state_dtypes(quantized):
    q = quantized("mamba2_fixture", "w4ax-quamba2")
    builder, (ins, outs), _ = lower(q)
    model = builder.model()
    want = ["int8" if bits == 8 else "float16" for bits in q.layer_act_bits]
    assert [t.dtype for t in ins if t.name.startswith("conv_state.")] == want
    assert [t.dtype for t in outs if t.name.startswith("conv_state_out.")] == want
    names = {"int64": "INT64", "int8": "INT8", "float16": "FLOAT16", "float32": "FLOAT"}
    assert [(v.name, v.dtype.name) for v in model.graph.inputs] == [(t.name, names[t.dtype]) for t in ins]
    assert [(v.name, v.dtype.name) for v in model.graph.outputs] == [(t.name, names[t.dtype]) for t in outs]
    per_layer = [torch.int8 if b == 8 else torch.float16 for b in q.layer_act_bits]
    assert ins == io_contract(q.config, conv_dtype=per_layer)[0]


# as test_lowering.py's W8A8 bounds: fp32 state exact up to GEMM summation order, fp16 state rounded per call
DECODE_NMSE = {torch.float32: 1e-12, torch.float16: 1e-3}


@pytest.mark.parametrize("state_dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("fixture,recipe", [("mamba2_fixture", "w4a16-quamba2"),
                                            ("mamba2_fixture", "w4ax-quamba2"),
                                            ("mamba1_fixture", "w4a8-mambaquant"),
                                            ("mamba1_fixture", "w4a16-rtn")])  # fmt: skip
def test_prefill_then_decode_through_the_graph(quantized, fixture, recipe, state_dtype):
    """A 24-token prefill and 32 single-token calls feeding the states back (int8 and fp16 conv
    states side by side in W4AX) equal one 56-token call."""
    q = quantized(fixture, recipe)
    sess = session(graph(q, state_dtype=state_dtype))
    assert decode_nmse(sess, zero_feeds(sess), q.config.n_layer) <= DECODE_NMSE[state_dtype]


@pytest.mark.parametrize("fixture,recipe", [("mamba2_fixture", "w4ax-quamba2"), ("mamba1_fixture", "w4a16-rtn")])
def test_perplexity_through_onnx_runtime(quantized, fixture, recipe, wikitext_test):
    """The eval protocol through the graph agrees with the simulation to 0.1 % (the bundle bound)."""
    from jetmamba.calibration.data import read_text, tokenize
    from jetmamba.calibration.evaluate import perplexity
    from jetmamba.calibration.tokenizer import ByteTokenizer
    from jetmamba.compiler.ort import OrtModel

    q = quantized(fixture, recipe)
    tokens = tokenize(read_text(wikitext_test), ByteTokenizer(), max_tokens=2048)
    a = perplexity(OrtModel(graph(q)), tokens, 512, show_progress=False).perplexity
    b = perplexity(q, tokens, 512, show_progress=False).perplexity
    assert abs(a / b - 1) <= 1e-3, (a, b)


def test_w4a16_hadamard_is_lowered_when_the_recipe_rotates(quantized):
    """w4a16-quamba2 rotates out_proj's input: the fp16 Hadamard is in the graph (MatMuls by the
    shared matrices), once per order, and the ORT test above holds it to the simulation."""
    q = quantized("mamba2_fixture", "w4a16-quamba2")
    assert all(b.mixer.out_hadamard for b in q.layers)
    model = lower_quantized(q).model()
    matrices = [name for name in model.graph.initializers if name.startswith("hadamard.")]
    assert matrices and len(matrices) <= 2  # the Sylvester block and (orders m * 2^k) the base block
    users = [n for n in model.graph if n.op_type == "Cast" and n.inputs[0].name in matrices]
    assert users  # used (cast to fp32 for the GEMM)


def test_fp32_activations_are_refused_for_w4a16(mamba2_fixture):
    from jetmamba.calibration.quantized import QuantizedModel

    config = load_model(mamba2_fixture).config
    q = QuantizedModel(config, RECIPES["w4a16-quamba2"].to_dict(), act_dtype=torch.float32)
    with pytest.raises(UnsupportedError, match=r"jetmamba::W4A16Linear \(layers\.0\.mixer\.in_proj\).*float16 only"):
        lower_quantized(q)


def test_int8_state_is_refused_with_w4a16_layers(quantized):
    q = quantized("mamba1_fixture", "w4a16-rtn")
    with pytest.raises(UnsupportedError, match="int8 SSM state needs int8 activations in every layer"):
        lower_quantized(q, state_dtype=torch.int8)
