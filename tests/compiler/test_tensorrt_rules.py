"""The TensorRT flavour follows the rules TensorRT's ONNX parser enforces.

The parser's support matrix is read from ../shared/third_party/onnx-tensorrt/operators-10.1.md
(the parser version just below JetPack 6.2's: a conservative subset): supported ops, the types
each takes, the opset range. Plus the explicit-quantization rules: zero points of zero, weight
DequantizeLinear per output channel on axis 0, no Q->DQ pair directly in front of a plugin, and
every non-standard node a known plugin with its attributes typed as the spec says.
"""

from __future__ import annotations

import re

import onnx
import onnx_ir as ir
import pytest
import torch

from jetmamba.calibration.checkpoint import load_model
from jetmamba.calibration.quantize import quantize_model
from jetmamba.calibration.recipes import RECIPES
from jetmamba.compiler.lowering import lower_fp, lower_quantized
from jetmamba.compiler.ops import OPSET
from jetmamba.compiler.passes import attach_functions, run_pipeline, tensorrt_flavour

TYPE_NAMES = {onnx.TensorProto.FLOAT: "FP32", onnx.TensorProto.FLOAT16: "FP16", onnx.TensorProto.BFLOAT16: "BF16",
              onnx.TensorProto.INT32: "INT32", onnx.TensorProto.INT64: "INT64", onnx.TensorProto.INT8: "INT8",
              onnx.TensorProto.UINT8: "UINT8", onnx.TensorProto.BOOL: "BOOL"}  # fmt: skip


@pytest.fixture(scope="module")
def matrix():
    from shared import shared_path

    text = shared_path("third_party", "onnx-tensorrt", "operators-10.1.md").read_text(encoding="utf-8")
    opsets = tuple(int(v) for v in re.search(r"range of opset (\d+) to opset (\d+)", text).groups())
    ops = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[1] in ("Y", "N"):
            ops[cells[0]] = (cells[1] == "Y", {t.strip() for t in cells[2].split(",")})
    assert len(ops) > 100  # the table was read
    return opsets, ops


def _graphs(fixture_path, recipe):
    """(TensorRT flavour proto, value types) of the fixture quantized with ``recipe``; recipe None:
    the unquantized fp16 lowering."""
    model = load_model(fixture_path)
    if recipe is None:
        graph = lower_fp(model, dtype=torch.float16).model()
    else:
        windows = torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(0))
        graph = lower_quantized(quantize_model(model, RECIPES[recipe], windows, show_progress=False)).model()
    ort_model = attach_functions(run_pipeline(graph))
    typed = onnx.shape_inference.infer_shapes(ir.to_proto(ort_model), data_prop=True)  # bodies type custom outputs
    types = {v.name: v.type.tensor_type.elem_type for v in [*typed.graph.value_info, *typed.graph.input,
                                                              *typed.graph.output]}  # fmt: skip
    types.update({t.name: t.data_type for t in typed.graph.initializer})
    return ir.to_proto(tensorrt_flavour(ort_model)), types


def _violations(proto, types, matrix) -> list[str]:
    (lo, hi), ops = matrix
    found = []
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx") and not lo <= imp.version <= hi:
            found.append(f"opset {imp.version} outside TensorRT's {lo}-{hi}")
    producers = {o: n for n in proto.graph.node for o in n.output}
    inits = {t.name: t for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.domain == "jetmamba":
            spec = OPSET[node.op_type]
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if attrs.pop("plugin_namespace", None) != b"jetmamba" or attrs.pop("plugin_version", None) != b"1":
                found.append(f"{node.name}: plugin attributes missing")
            spec.check_attributes({k: (v.decode() if isinstance(v, bytes) else v) for k, v in attrs.items()})
            for x in node.input:  # Q -> DQ -> plugin would make TensorRT run the plugin in fp
                p = producers.get(x)
                if p is not None and p.op_type == "DequantizeLinear":
                    found.append(f"{node.name}: fed by a DequantizeLinear ({p.name})")
            continue
        supported, allowed = ops.get(node.op_type, (False, set()))
        if not supported:
            found.append(f"{node.name}: {node.op_type} is not supported by the parser")
            continue
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zp = node.input[2] if len(node.input) > 2 else None
            if zp and any(onnx.numpy_helper.to_array(inits[zp]).ravel() != 0):
                found.append(f"{node.name}: non-zero zero point")
            if node.op_type == "DequantizeLinear" and node.input[0] in inits:  # a weight
                axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
                scale = onnx.numpy_helper.to_array(inits[node.input[1]])
                if axis != 0 or scale.shape != (inits[node.input[0]].dims[0],):
                    found.append(f"{node.name}: weight scales must be per output channel on axis 0")
            continue
        for x in [*node.input, *node.output]:
            t = TYPE_NAMES.get(types.get(x))
            if x and t is not None and t not in allowed:
                found.append(f"{node.name}: {node.op_type} on {t} ({x})")
    return found


@pytest.mark.parametrize("recipe", ["w8a8-quamba", "w8a8-mambaquant", "w8a8-naive"])
def test_mamba1_graph_follows_tensorrt_rules(matrix, mamba1_fixture, recipe):
    proto, types = _graphs(mamba1_fixture, recipe)
    assert _violations(proto, types, matrix) == []


def test_mamba2_graph_follows_tensorrt_rules(matrix, mamba2_fixture):
    proto, types = _graphs(mamba2_fixture, "w8a8-quamba2")
    assert _violations(proto, types, matrix) == []


INT4_CASES = [("mamba1_fixture", "w4a16-rtn"), ("mamba1_fixture", "w4a8-mambaquant"),
              ("mamba2_fixture", "w4a16-quamba2"), ("mamba2_fixture", "w4ax-quamba2")]  # fmt: skip


@pytest.mark.parametrize("fixture,recipe", INT4_CASES)
def test_4bit_graph_follows_tensorrt_rules(matrix, request, fixture, recipe):
    """W4A8Linear / W4A16Linear plugins beside Q/DQ GEMMs, the fp op variants and the fp16
    Hadamard's MatMuls (W4A16 layers): the same rules."""
    proto, types = _graphs(request.getfixturevalue(fixture), recipe)
    assert {"W4A8Linear", "W4A16Linear"} & {n.op_type for n in proto.graph.node}
    assert _violations(proto, types, matrix) == []


@pytest.mark.parametrize("fixture", ["mamba1_fixture", "mamba2_fixture"])
def test_unquantized_graph_follows_tensorrt_rules(matrix, request, fixture):
    proto, types = _graphs(request.getfixturevalue(fixture), None)
    assert _violations(proto, types, matrix) == []


def test_the_checker_catches_a_violation(matrix, mamba1_fixture):
    """A Q -> DQ pair in front of a plugin and an unsupported op are reported (the check can fail)."""
    proto, types = _graphs(mamba1_fixture, "w8a8-quamba")
    scan = next(n for n in proto.graph.node if n.op_type == "SelectiveScan")
    dq = onnx.helper.make_node("DequantizeLinear", [scan.input[0], "layers.0.mixer.in_proj.weight_scale"], ["dq_u"],
                               name="bad_dq")  # fmt: skip
    proto.graph.node.insert(0, dq)
    proto.graph.node.append(onnx.helper.make_node("Bernoulli", [scan.output[0]], ["noise"], name="bad_op"))
    scan.input[0] = "dq_u"
    found = _violations(proto, types, matrix)
    assert any("fed by a DequantizeLinear" in f for f in found) and any("Bernoulli" in f for f in found)
