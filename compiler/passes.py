"""Lowering passes: each a named function graph -> graph, the pipeline a visible list.

The graph is an onnx_ir Model; every pass returns it (rewritten in place) so passes chain.
:func:`verify` checks the invariants every stage must keep; the tests run it between passes, and
``JETMAMBA_DUMP_PASSES=DIR`` (a debugging switch) writes the graph as text after each pass.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import onnx_ir as ir

from jetmamba.compiler.functions import build_function, overload_of, structure_of
from jetmamba.compiler.ops import OPSET
from jetmamba.compiler.ops.spec import DOMAIN

Pass = Callable[[ir.Model], ir.Model]
PLUGIN_VERSION = "1"


def _custom_nodes(model: ir.Model):
    return [n for n in model.graph if n.domain == DOMAIN]


def fuse_residual_add(model: ir.Model) -> ir.Model:
    """Add(out, residual) -> RMSNormQuant(x) becomes RMSNormQuant(out, residual) (RMSNorm alike):
    the residual add fused into the norm, one read of each stream instead of a separate
    elementwise kernel."""
    for node in _custom_nodes(model):
        if node.op_type not in ("RMSNormQuant", "RMSNorm") or len(node.inputs) != 2:
            continue
        add = node.inputs[0].producer()
        if add is None or add.op_type != "Add" or add.domain != "" or len(add.outputs[0].uses()) != 1:
            continue
        out, residual = add.inputs
        weight = node.inputs[1]
        node.resize_inputs(3)
        for i, v in enumerate((out, residual, weight)):
            node.replace_input_with(i, v)
        s = structure_of(node.overload)
        fused = dataclasses.replace(s, optional=tuple(sorted({*s.optional, "residual"})))
        node.overload = overload_of(node.op_type, fused)
        model.graph.remove(add, safe=True)
    return model


def attach_functions(model: ir.Model) -> ir.Model:
    """The ONNX Runtime flavour: every (op, overload) used gets its function body."""
    model.functions.clear()
    for node in _custom_nodes(model):
        key = (DOMAIN, node.op_type, node.overload)
        if key not in model.functions:
            model.functions[key] = build_function(node.op_type, structure_of(node.overload))
    return model


def tensorrt_flavour(model: ir.Model) -> ir.Model:
    """The TensorRT flavour: no bodies; each jetmamba node names its plugin (op_type = plugin
    name, ``plugin_version``, ``plugin_namespace``), as TensorRT's ONNX parser looks plugins up."""
    model.functions.clear()
    for node in _custom_nodes(model):
        node.overload = ""
        node.attributes["plugin_version"] = ir.AttrString("plugin_version", PLUGIN_VERSION)
        node.attributes["plugin_namespace"] = ir.AttrString("plugin_namespace", DOMAIN)
    return model


def verify(model: ir.Model) -> None:
    """Invariants of every stage: SSA names, every node's inputs produced before it (or graph
    inputs / initializers), jetmamba nodes well-formed by their spec. Raises ValueError."""
    seen: set[str] = {v.name for v in model.graph.inputs} | set(model.graph.initializers)
    for node in model.graph:
        for v in node.inputs:
            if v is not None and v.name not in seen and v.producer() is not None and v.producer().graph is model.graph:
                raise ValueError(f"node {node.name}: input {v.name} is used before it is produced")
        for v in node.outputs:
            if v.name in seen:
                raise ValueError(f"value {v.name} is produced twice")
            seen.add(v.name)
        if node.domain == DOMAIN:
            spec = OPSET.get(node.op_type)
            if spec is None:
                raise ValueError(f"node {node.name}: unknown jetmamba op {node.op_type}")
            required = sum(not t.optional for t in spec.inputs)
            if not required <= len(node.inputs) <= len(spec.inputs):
                raise ValueError(f"node {node.name}: {len(node.inputs)} inputs, {spec.qualified_name} takes "
                                 f"{required}..{len(spec.inputs)}")  # fmt: skip
            if len(node.outputs) != len(spec.outputs):
                raise ValueError(f"node {node.name}: {len(node.outputs)} outputs, {spec.qualified_name} gives "
                                 f"{len(spec.outputs)}")  # fmt: skip
            attrs = {k: a.value for k, a in node.attributes.items() if k not in ("plugin_version", "plugin_namespace")}
            spec.check_attributes(attrs)
    for v in model.graph.outputs:
        if v.name not in seen:
            raise ValueError(f"graph output {v.name} is never produced")


PIPELINE: list[Pass] = [fuse_residual_add]


def run_pipeline(model: ir.Model, passes: list[Pass] | None = None, *, check: bool = False) -> ir.Model:
    """Apply ``passes`` (default :data:`PIPELINE`) in order; ``check`` verifies after each."""
    dump = os.environ.get("JETMAMBA_DUMP_PASSES")
    if check:
        verify(model)
    for i, p in enumerate(PIPELINE if passes is None else passes):
        model = p(model)
        if check:
            verify(model)
        if dump:
            Path(dump).mkdir(parents=True, exist_ok=True)
            (Path(dump) / f"{i:02d}_{p.__name__}.txt").write_text(str(model.graph), encoding="utf-8")
    return model
