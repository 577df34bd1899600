"""Lowering a model to the deployed graph: the model around the mixers here, each architecture's
mixer in its own module (one adapter per family, no architecture branches here).

Two sources lower to the same graph shape and I/O contract: a QuantizedModel (int8 GEMMs in Q/DQ
form, the int8 jetmamba ops, int8 conv state; 4-bit weights as W4A8Linear, or in W4A16 layers
W4A16Linear with the ops' fp variants and an fp conv state, chosen per layer) and an unquantized
fp model (fp GEMMs, the ops' fp variants, conv state in the float type): the baseline a quantized
bundle is compared with.
"""

from __future__ import annotations

import torch

from jetmamba.compiler.graph import BATCH, FLOAT_NAMES, SEQ, GraphBuilder, TensorIO
from jetmamba.compiler.lowering import mamba1, mamba2
from jetmamba.errors import UnsupportedError

MIXERS = {"mamba1": mamba1, "mamba2": mamba2}


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


# The SSM state dtypes a graph can carry (the compile option ``ssm_state_dtype``): fp16 by default,
# fp32 for the CPU flavour, int8 (codes plus a scale per (batch row, channel): ``ssm_state_scale``)
# for Mamba1 QuantizedModels only, since SSDScan and the fp ops have no int8 state.
STATE_DTYPES = {"float16": torch.float16, "float32": torch.float32, "int8": torch.int8}


def _per_layer(conv_dtype, n_layer: int) -> list[torch.dtype]:
    return list(conv_dtype) if isinstance(conv_dtype, (list, tuple)) else [conv_dtype] * n_layer


def io_contract(config, *, conv_dtype: torch.dtype | list[torch.dtype] = torch.int8,
                state_dtype: torch.dtype = torch.float16) -> tuple[list[TensorIO], list[TensorIO]]:  # fmt: skip
    """The graph's inputs and outputs (see :mod:`jetmamba.compiler.graph`); ``conv_dtype`` one for
    every layer or a list, one per layer (a W4AX model's conv state follows each layer's activations)."""
    lowering = MIXERS[config.arch]
    layer_conv = _per_layer(conv_dtype, config.n_layer)
    conv = (BATCH, config.d_conv - 1, config.conv_dim)
    ssm = (BATCH, *lowering.ssm_state_shape(config))
    ins = [TensorIO("input_ids", "int64", (BATCH, SEQ))]
    outs = [TensorIO("logits", "float32", (BATCH, SEQ, config.vocab_size))]
    for i in range(config.n_layer):
        ins += [TensorIO(f"conv_state.{i}", _name(layer_conv[i]), conv),
                TensorIO(f"ssm_state.{i}", _name(state_dtype), ssm)]  # fmt: skip
        outs += [TensorIO(f"conv_state_out.{i}", _name(layer_conv[i]), conv),
                 TensorIO(f"ssm_state_out.{i}", _name(state_dtype), ssm)]  # fmt: skip
        if state_dtype == torch.int8:
            ins.append(TensorIO(f"ssm_state_scale.{i}", "float32", ssm[:-1]))
            outs.append(TensorIO(f"ssm_state_scale_out.{i}", "float32", ssm[:-1]))
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
    int8_state = state_dtype == torch.int8
    layer_conv = _per_layer(conv_dtype, config.n_layer)
    for i in range(config.n_layer):
        conv_in = g.input(f"conv_state.{i}", layer_conv[i], conv_shape)
        ssm_in = g.input(f"ssm_state.{i}", state_dtype, ssm_shape)
        if int8_state:  # the mixer takes and gives (codes, scales)
            ssm_in = (ssm_in, g.input(f"ssm_state_scale.{i}", torch.float32, ssm_shape[:-1]))
        if out is not None:
            residual = g.op("Add", out, residual, name=f"layers.{i}.residual_add")
        out, residual, conv_out, ssm_out = layer_fn(i, residual, conv_in, ssm_in)
        g.output(conv_out, f"conv_state_out.{i}", layer_conv[i], conv_shape)
        if int8_state:
            ssm_out, scale_out = ssm_out
        g.output(ssm_out, f"ssm_state_out.{i}", state_dtype, ssm_shape)
        if int8_state:
            g.output(scale_out, f"ssm_state_scale_out.{i}", torch.float32, ssm_shape[:-1])
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


def _check_state_dtype(config, state_dtype: torch.dtype, quantized: bool) -> None:
    if state_dtype not in STATE_DTYPES.values():
        raise UnsupportedError(f"an SSM state is one of {', '.join(STATE_DTYPES)}, not {_name(state_dtype)}")
    if state_dtype == torch.int8 and config.arch != "mamba1":
        raise UnsupportedError(f"an int8 SSM state is a Mamba1 option; {config.arch}'s SSDScan has no int8 state "
                               "(use float16 or float32)")  # fmt: skip
    if state_dtype == torch.int8 and not quantized:
        raise UnsupportedError("an int8 SSM state needs a QuantizedModel: the fp scan has no int8 state")


def conv_dtypes(model) -> list[torch.dtype]:
    """The conv state dtype of each layer of a QuantizedModel: int8 where the layer's activations
    are int8, the activation dtype where they are fp (W4A16 layers)."""
    return [torch.int8 if bits == 8 else model.act_dtype for bits in model.layer_act_bits]


def lower_quantized(model, *, state_dtype: torch.dtype = torch.float16) -> GraphBuilder:
    """A QuantizedModel as a graph of standard ops (embedding, Q/DQ GEMMs, final norm, LM head)
    and the jetmamba ops; an int8 ``state_dtype`` (Mamba1) adds ``ssm_state_scale.{i}``.

    Per layer: int8 activations (``act_bits`` 8) lower as RMSNormQuant and the int8 ops, each GEMM
    the Q/DQ int8 GEMM or, for a 4-bit weight, W4A8Linear; fp activations (W4A16 layers) as RMSNorm,
    the fp op variants and W4A16Linear (the adapter's ``lower_w4a16_mixer``)."""
    config, act = model.config, model.act_dtype
    _check_state_dtype(config, state_dtype, quantized=True)
    if state_dtype == torch.int8 and 16 in model.layer_act_bits:
        raise UnsupportedError("an int8 SSM state needs int8 activations in every layer: the W4A16 layers' "
                               "SelectiveScanFp has no int8 state (use float16 or float32)")  # fmt: skip
    lowering = MIXERS[config.arch]
    g = GraphBuilder(f"jetmamba_{config.arch}", float_dtype=act)

    def layer(i, residual, conv_in, ssm_in):
        block = model.layers[i]
        norm_w = g.initializer(f"layers.{i}.norm.weight", block.norm_weight.float())
        if block.act_bits == 16:
            x, residual = g.custom("RMSNorm", {"x": residual, "weight": norm_w}, {"eps": float(block.norm_eps)},
                                   g.structure(), name=f"layers.{i}.norm")  # fmt: skip
            out, conv_out, ssm_out = lowering.lower_w4a16_mixer(g, block.mixer, x, conv_in, ssm_in,
                                                                f"layers.{i}.mixer")  # fmt: skip
            return out, residual, conv_out, ssm_out
        x_q, residual = g.custom(
            "RMSNormQuant", {"x": residual, "weight": norm_w},
            {"eps": float(block.norm_eps), "out_scale": float(block.in_scale)}, g.structure(),
            name=f"layers.{i}.norm",
        )  # fmt: skip
        out, conv_out, ssm_out = lowering.lower_mixer(g, block.mixer, x_q, float(block.in_scale), conv_in, ssm_in,
                                                      f"layers.{i}.mixer")  # fmt: skip
        return out, residual, conv_out, ssm_out

    return _lower_model(g, config, model.embedding, model.norm_f_weight, model.lm_head, layer, conv_dtypes(model),
                        state_dtype)  # fmt: skip


def lower_fp(model, *, dtype: torch.dtype = torch.float16, state_dtype: torch.dtype = torch.float16) -> GraphBuilder:
    """An unquantized fp model (:class:`~jetmamba.calibration.model.MambaLM`) as a graph of fp
    GEMMs and the jetmamba ops' fp variants, weights and activations in ``dtype`` (float16 for the
    device; float32 checks the graph against the fp reference on a CPU)."""
    if dtype not in FLOAT_NAMES:
        raise UnsupportedError(f"an unquantized graph is float16 or float32, not {_name(dtype)}")
    config = model.config
    _check_state_dtype(config, state_dtype, quantized=False)
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
    dtype) or an fp model (lowered in ``dtype``), with the SSM state in ``state_dtype`` (one of
    :data:`STATE_DTYPES`)."""
    from jetmamba.calibration.quantized import QuantizedModel

    if isinstance(model, QuantizedModel):
        g = lower_quantized(model, state_dtype=state_dtype)
        return g, io_contract(model.config, conv_dtype=conv_dtypes(model), state_dtype=state_dtype), model.recipe
    g = lower_fp(model, dtype=dtype, state_dtype=state_dtype)
    contract = io_contract(model.config, conv_dtype=dtype, state_dtype=state_dtype)
    return g, contract, {"name": FLOAT_NAMES[dtype].replace("float", "fp"), "quantized": False}
