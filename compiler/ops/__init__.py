"""The jetmamba op set (domain ``jetmamba``, version 1): specs and reference semantics.

``OPSET`` maps each op's name to its :class:`~jetmamba.compiler.ops.spec.OpSpec`; the reference
functions are in :mod:`jetmamba.compiler.ops.reference`, the int8 primitives in
:mod:`jetmamba.compiler.ops.quant`.
"""

from __future__ import annotations

from jetmamba.compiler.ops import reference as ref
from jetmamba.compiler.ops.spec import SCALE, AttrSpec, OpSpec, TensorSpec

_FP = ("float16", "float32")
_STATE = ("float16", "float32")  # fp16 by default; fp32 for the CPU flavour

OPSET: dict[str, OpSpec] = {
    op.name: op
    for op in (
        OpSpec(
            "RMSNormQuant",
            "residual add fused, RMSNorm, int8 output",
            inputs=(
                TensorSpec("x", _FP, "[b, l, d]"),
                TensorSpec("residual", _FP, "[b, l, d]", "added to x first", optional=True),
                TensorSpec("weight", _FP, "[d]"),
            ),
            outputs=(TensorSpec("y", ("int8",), "[b, l, d]"), TensorSpec("residual_out", _FP, "[b, l, d]")),
            attributes=(AttrSpec("eps", "float", minimum=0.0, maximum=1.0), AttrSpec("out_scale", **SCALE)),
            reference=ref.rms_norm_quant,
        ),
        OpSpec(
            "CausalConv1d",
            "depthwise causal conv1d, int8 in and out, SiLU fused, conv state in and out",
            inputs=(
                TensorSpec("x", ("int8",), "[b, l, c]"),
                TensorSpec("weight", ("int8",), "[c, k]", "k in 2..4"),
                TensorSpec("bias", ("float32",), "[c]", optional=True),
                TensorSpec("conv_state", ("int8",), "[b, k-1, c]", "previous int8 inputs"),
            ),
            outputs=(TensorSpec("y", ("int8",), "[b, l, c]"), TensorSpec("conv_state_out", ("int8",), "[b, k-1, c]")),
            attributes=(
                AttrSpec("x_scale", **SCALE),
                AttrSpec("w_scale", "floats", "one per channel, or one", minimum=SCALE["minimum"]),
                AttrSpec("out_scale", **SCALE),
            ),
            reference=ref.causal_conv1d_quant,
        ),
        OpSpec(
            "SelectiveScan",
            "Mamba1 selective scan: int8 inputs, softplus(dt + dt_bias), D skip and silu(z) gate fused",
            inputs=(
                TensorSpec("u", ("int8",), "[b, l, d]"),
                TensorSpec("dt", ("int8",), "[b, l, d]", "before dt_bias and softplus"),
                TensorSpec("A", ("float32",), "[d, n]"),
                TensorSpec("B", ("int8",), "[b, l, n]"),
                TensorSpec("C", ("int8",), "[b, l, n]"),
                TensorSpec("D", ("float32",), "[d]"),
                TensorSpec("z", ("int8",), "[b, l, d]"),
                TensorSpec("dt_bias", ("float32",), "[d]"),
                TensorSpec("ssm_state", _STATE, "[b, d, n]"),
            ),
            outputs=(
                TensorSpec("y", _FP, "[b, l, d]"),
                TensorSpec("ssm_state_out", ("float16", "float32"), "[b, d, n]"),
            ),
            attributes=tuple(AttrSpec(f"{t}_scale", **SCALE) for t in ("u", "dt", "B", "C", "z")),
            reference=ref.selective_scan_quant,
        ),
        OpSpec(
            "HadamardQuant",
            "fast Hadamard transform (orders 2^k, 12/20/28/40 * 2^k), normalised, int8 output",
            inputs=(TensorSpec("x", _FP, "[..., n]"),),
            outputs=(TensorSpec("y", ("int8",), "[..., n]"),),
            attributes=(AttrSpec("out_scale", **SCALE),),
            reference=ref.hadamard_quant,
        ),
    )
}

__all__ = ["OPSET", "AttrSpec", "OpSpec", "TensorSpec"]
