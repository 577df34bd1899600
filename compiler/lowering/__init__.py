"""Lowering a model to the deployed graph: the model around the mixers here, each architecture's
mixer in its own module (one adapter per family, no architecture branches here).

Two sources lower to the same graph shape and I/O contract: a QuantizedModel (int8 GEMMs in Q/DQ
form, the int8 jetmamba ops, int8 conv state) and an unquantized fp model (fp GEMMs, the ops' fp
variants, conv state in the float type): the baseline a quantized bundle is compared with.
"""

from __future__ import annotations

import torch

from jetmamba.compiler.graph import BATCH, FLOAT_NAMES, SEQ, GraphBuilder, TensorIO
from jetmamba.compiler.lowering import mamba1, mamba2
from jetmamba.errors import UnsupportedError

MIXERS = {"mamba1": mamba1, "mamba2": mamba2}


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def io_contract(config, *, conv_dtype: torch.dtype = torch.int8,
                state_dtype: torch.dtype = torch.float16) -> tuple[list[TensorIO], list[TensorIO]]:  # fmt: skip
    """The graph's inputs and outputs (see :mod:`jetmamba.compiler.graph`)."""
    lowering = MIXERS[config.arch]
    conv = (BATCH, config.d_conv - 1, config.conv_dim)
    ssm = (BATCH, *lowering.ssm_state_shape(config))
    ins = [TensorIO("input_ids", "int64", (BATCH, SEQ))]
    outs = [TensorIO("logits", "float32", (BATCH, SEQ, config.vocab_size))]
    for i in range(config.n_layer):
        ins += [TensorIO(f"conv_state.{i}", _name(conv_dtype), conv),
                TensorIO(f"ssm_state.{i}", _name(state_dtype), ssm)]  # fmt: skip
        outs += [TensorIO(f"conv_state_out.{i}", _name(conv_dtype), conv),
                 TensorIO(f"ssm_state_out.{i}", _name(state_dtype), ssm)]  # fmt: skip
    return ins, outs


def _lower_model(g: GraphBuilder, config, embedding, norm_f_weight, lm_head, layer_fn, conv_dtype, state_dtype):
    """The skeleton both sources share: embedding, pre-norm residual blocks (``layer_fn`` lowers
    norm + mixer of block i), final norm, LM head. The residual add stays a separate node
    (passes.fuse_residual_add moves it into the next norm)."""
    act = g.float_dtype
    lowering = MIXERS[config.arch]
    conv_shape = (BATCH, config.d_conv - 1, config.conv_dim)
    ssm_shape = (BATCH, *lowering.ssm_state_shape(config))
    ids = g.input("input_ids", torch.int64, (BATCH, SEQ))
    table = g.initializer("embedding", embedding.to(act))
    residual = g.op("Gather", table, ids, axis=0, name="embedding")
    out = None
    for i in range(config.n_layer):
        conv_in = g.input(f"conv_state.{i}", conv_dtype, conv_shape)
        ssm_in = g.input(f"ssm_state.{i}", state_dtype, ssm_shape)
        if out is not None:
            residual = g.op("Add", out, residual, name=f"layers.{i}.residual_add")
        out, residual, conv_out, ssm_out = layer_fn(i, residual, conv_in, ssm_in)
        g.output(conv_out, f"conv_state_out.{i}", conv_dtype, conv_shape)
        g.output(ssm_out, f"ssm_state_out.{i}", state_dtype, ssm_shape)
    residual = g.op("Add", out, residual, name="final.residual_add")
    norm_w = g.initializer("norm_f.weight", norm_f_weight.float())
    hidden = g.cast(g.rms_norm(g.cast(residual, torch.float32), norm_w, config.norm_eps), act)
    # the LM head in the float type (fp16 weights stay fp16 on the device), logits widened to fp32
    # a tied head is the embedding table itself: stored once (the largest fp16 tensor of a small model)
    tied = lm_head is embedding or (lm_head.shape == embedding.shape and torch.equal(lm_head, embedding))
    head = table if tied else g.initializer("lm_head.weight", lm_head.to(act))
    logits = g.op("MatMul", hidden, g.op("Transpose", head, perm=[1, 0]), name="lm_head")
    g.output(g.cast(logits, torch.float32), "logits", torch.float32, (BATCH, SEQ, config.vocab_size))
    g.outputs.insert(0, g.outputs.pop())  # the contract's order: logits, then the states layer by layer
    return g


def lower_quantized(model, *, state_dtype: torch.dtype = torch.float16) -> GraphBuilder:
    """A QuantizedModel as a graph of standard ops (embedding, Q/DQ GEMMs, final norm, LM head)
    and the int8 jetmamba ops."""
    config, act = model.config, model.act_dtype
    lowering = MIXERS[config.arch]
    g = GraphBuilder(f"jetmamba_{config.arch}", float_dtype=act)

    def layer(i, residual, conv_in, ssm_in):
        block = model.layers[i]
        norm_w = g.initializer(f"layers.{i}.norm.weight", block.norm_weight.float())
        x_q, residual = g.custom(
            "RMSNormQuant", {"x": residual, "weight": norm_w},
            {"eps": float(block.norm_eps), "out_scale": float(block.in_scale)}, g.structure(),
            name=f"layers.{i}.norm",
        )  # fmt: skip
        out, conv_out, ssm_out = lowering.lower_mixer(g, block.mixer, x_q, float(block.in_scale), conv_in, ssm_in,
                                                      f"layers.{i}.mixer")  # fmt: skip
        return out, residual, conv_out, ssm_out

    return _lower_model(g, config, model.embedding, model.norm_f_weight, model.lm_head, layer, torch.int8, state_dtype)


def lower_fp(model, *, dtype: torch.dtype = torch.float16, state_dtype: torch.dtype = torch.float16) -> GraphBuilder:
    """An unquantized fp model (:class:`~jetmamba.calibration.model.MambaLM`) as a graph of fp
    GEMMs and the jetmamba ops' fp variants, weights and activations in ``dtype`` (float16 for the
    device; float32 checks the graph against the fp reference on a CPU)."""
    if dtype not in FLOAT_NAMES:
        raise UnsupportedError(f"an unquantized graph is float16 or float32, not {_name(dtype)}")
    config = model.config
    for i, block in enumerate(model.layers):
        if block.mixer.has_online_transforms():
            raise UnsupportedError(
                f"layers.{i}: the fp model carries quantization transforms (Hadamard or smoothing) that only a "
                "QuantizedModel lowers; compile the checkpoint itself"
            )
    lowering = MIXERS[config.arch]
    g = GraphBuilder(f"jetmamba_{config.arch}_fp", float_dtype=dtype)

    def layer(i, residual, conv_in, ssm_in):
        block = model.layers[i]
        norm_w = g.initializer(f"layers.{i}.norm.weight", block.norm.weight.to(dtype))
        x, residual = g.custom(
            "RMSNorm", {"x": residual, "weight": norm_w},
            {"eps": float(block.norm.eps)}, g.structure(), name=f"layers.{i}.norm",
        )  # fmt: skip
        out, conv_out, ssm_out = lowering.lower_fp_mixer(g, block.mixer, x, conv_in, ssm_in, f"layers.{i}.mixer")
        return out, residual, conv_out, ssm_out

    return _lower_model(g, config, model.embedding.weight, model.norm_f.weight, model.lm_head_weight, layer, dtype,
                        state_dtype)  # fmt: skip


def lower(model, *, dtype: torch.dtype = torch.float16, state_dtype: torch.dtype = torch.float16):
    """(graph builder, io contract, recipe) of a QuantizedModel (which keeps its own activation
    dtype) or an fp model (lowered in ``dtype``)."""
    from jetmamba.calibration.quantized import QuantizedModel

    if isinstance(model, QuantizedModel):
        g = lower_quantized(model, state_dtype=state_dtype)
        return g, io_contract(model.config, state_dtype=state_dtype), model.recipe
    g = lower_fp(model, dtype=dtype, state_dtype=state_dtype)
    contract = io_contract(model.config, conv_dtype=dtype, state_dtype=state_dtype)
    return g, contract, {"name": FLOAT_NAMES[dtype].replace("float", "fp"), "quantized": False}
