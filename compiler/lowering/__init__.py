"""Lowering a QuantizedModel to the deployed graph: the model around the mixers here, each
architecture's mixer in its own module (one adapter per family, no architecture branches here).
"""

from __future__ import annotations

import torch

from jetmamba.compiler.graph import BATCH, SEQ, GraphBuilder, TensorIO
from jetmamba.compiler.lowering import mamba1, mamba2

MIXERS = {"mamba1": mamba1, "mamba2": mamba2}


def io_contract(config, state_dtype: torch.dtype = torch.float16) -> tuple[list[TensorIO], list[TensorIO]]:
    """The graph's inputs and outputs (see :mod:`jetmamba.compiler.graph`)."""
    lowering = MIXERS[config.arch]
    conv = (BATCH, config.d_conv - 1, config.conv_dim)
    ssm = (BATCH, *lowering.ssm_state_shape(config))
    state_name = str(state_dtype).replace("torch.", "")
    ins = [TensorIO("input_ids", "int64", (BATCH, SEQ))]
    outs = [TensorIO("logits", "float32", (BATCH, SEQ, config.vocab_size))]
    for i in range(config.n_layer):
        ins += [TensorIO(f"conv_state.{i}", "int8", conv), TensorIO(f"ssm_state.{i}", state_name, ssm)]
        outs += [TensorIO(f"conv_state_out.{i}", "int8", conv), TensorIO(f"ssm_state_out.{i}", state_name, ssm)]
    return ins, outs


def lower_quantized(model, *, state_dtype: torch.dtype = torch.float16) -> GraphBuilder:
    """The QuantizedModel as a graph of standard ops (embedding, Q/DQ GEMMs, final norm, LM head)
    and jetmamba ops, with the residual add still a separate node (see passes.fuse_residual_add)."""
    config, act = model.config, model.act_dtype
    lowering = MIXERS[config.arch]
    g = GraphBuilder(f"jetmamba_{config.arch}", float_dtype=act)
    ids = g.input("input_ids", torch.int64, (BATCH, SEQ))
    residual = g.op("Gather", g.initializer("embedding", model.embedding.to(act)), ids, axis=0, name="embedding")
    out = None
    for i, block in enumerate(model.layers):
        conv_in = g.input(f"conv_state.{i}", torch.int8, (BATCH, config.d_conv - 1, config.conv_dim))
        ssm_in = g.input(f"ssm_state.{i}", state_dtype, (BATCH, *lowering.ssm_state_shape(config)))
        if out is not None:
            residual = g.op("Add", out, residual, name=f"layers.{i}.residual_add")
        norm_w = g.initializer(f"layers.{i}.norm.weight", block.norm_weight.float())
        x_q, residual = g.custom(
            "RMSNormQuant", {"x": residual, "weight": norm_w},
            {"eps": float(block.norm_eps), "out_scale": float(block.in_scale)}, g.structure(),
            name=f"layers.{i}.norm",
        )  # fmt: skip
        out, conv_out, ssm_out = lowering.lower_mixer(g, block.mixer, x_q, float(block.in_scale), conv_in, ssm_in,
                                                      f"layers.{i}.mixer")  # fmt: skip
        g.output(conv_out, f"conv_state_out.{i}", torch.int8, (BATCH, config.d_conv - 1, config.conv_dim))
        g.output(ssm_out, f"ssm_state_out.{i}", state_dtype, (BATCH, *lowering.ssm_state_shape(config)))
    residual = g.op("Add", out, residual, name="final.residual_add")
    norm_w = g.initializer("norm_f.weight", model.norm_f_weight.float())
    hidden = g.cast(g.rms_norm(g.cast(residual, torch.float32), norm_w, config.norm_eps), act)
    head = g.cast(g.initializer("lm_head.weight", model.lm_head.to(act)), torch.float32)
    logits = g.op("MatMul", g.cast(hidden, torch.float32), g.op("Transpose", head, perm=[1, 0]), name="lm_head")
    g.output(logits, "logits", torch.float32, (BATCH, SEQ, config.vocab_size))
    g.outputs.insert(0, g.outputs.pop())  # the contract's order: logits, then the states layer by layer
    return g
