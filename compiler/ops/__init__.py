"""The jetmamba op set (domain ``jetmamba``, version 1): specs and reference semantics.

``OPSET`` maps each op's name to its :class:`~jetmamba.compiler.ops.spec.OpSpec`; the reference
functions are in :mod:`jetmamba.compiler.ops.reference`, the int8 primitives in
:mod:`jetmamba.compiler.ops.quant`.
"""

from __future__ import annotations

from jetmamba.compiler.ops import reference as ref
from jetmamba.compiler.ops.spec import (
    SCALE,
    AttrSpec,
    Limit,
    OpSpec,
    TensorSpec,
    conv_width_limit,
    hadamard_order_limit,
)

_FP = ("float16", "float32")
_STATE = ("float16", "float32")  # fp16 by default; fp32 for the CPU flavour
# G of the packed int4 layout; the kernels read a 32-input slice of one group per 16-byte load
_INT4_GROUP = AttrSpec("group_size", "int", "G: inputs per scale (128, 64 or 32; divides K)", minimum=32, default=128)

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
                AttrSpec("x_scale", "floats", "one per channel, or one", minimum=SCALE["minimum"]),
                AttrSpec("w_scale", "floats", "one per channel, or one", minimum=SCALE["minimum"]),
                AttrSpec("out_scale", "floats", "one per channel, or one", minimum=SCALE["minimum"]),
            ),
            reference=ref.causal_conv1d_quant,
            limits=(conv_width_limit(),),
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
                TensorSpec("gate_smooth", ("float32",), "[d]", "S-SiLU: z sigmoid(s z); SiLU if absent", optional=True),
            ),
            outputs=(
                TensorSpec("y", _FP, "[b, l, d]", "in the state's dtype (no input carries the float type)"),
                TensorSpec("ssm_state_out", _STATE, "[b, d, n]"),
            ),  # fmt: skip
            attributes=tuple(AttrSpec(f"{t}_scale", **SCALE) for t in ("u", "dt", "B", "C", "z")),
            reference=ref.selective_scan_quant,
        ),
        # SelectiveScan with an int8 state: a separate op, since a TensorRT plugin's inputs are matched
        # by count (one optional input at most: gate_smooth) and its outputs are fixed per op, so the
        # scale tensors cannot be optional I/O of SelectiveScan; the kernel is the same launcher
        OpSpec(
            "SelectiveScanInt8State",
            "SelectiveScan with an int8 SSM state, a dynamic scale per (batch row, channel)",
            inputs=(
                TensorSpec("u", ("int8",), "[b, l, d]"),
                TensorSpec("dt", ("int8",), "[b, l, d]", "before dt_bias and softplus"),
                TensorSpec("A", ("float32",), "[d, n]"),
                TensorSpec("B", ("int8",), "[b, l, n]"),
                TensorSpec("C", ("int8",), "[b, l, n]"),
                TensorSpec("D", ("float32",), "[d]"),
                TensorSpec("z", ("int8",), "[b, l, d]"),
                TensorSpec("dt_bias", ("float32",), "[d]"),
                TensorSpec("ssm_state", ("int8",), "[b, d, n]", "codes: h = code * ssm_state_scale"),
                TensorSpec("ssm_state_scale", ("float32",), "[b, d]", "per channel, >= 0 (0: a zero channel)"),
                TensorSpec("gate_smooth", ("float32",), "[d]", "S-SiLU: z sigmoid(s z); SiLU if absent", optional=True),
            ),
            outputs=(
                TensorSpec("y", ("float16",), "[b, l, d]", "float16 (no input carries the float type)"),
                TensorSpec("ssm_state_out", ("int8",), "[b, d, n]", "codes of the final state"),
                TensorSpec("ssm_state_scale_out", ("float32",), "[b, d]", "max |h| / 127 per channel"),
            ),
            attributes=tuple(AttrSpec(f"{t}_scale", **SCALE) for t in ("u", "dt", "B", "C", "z")),
            reference=ref.selective_scan_int8_state,
        ),
        OpSpec(
            "SSDScan",
            "Mamba2 SSD: int8 x (per-channel scales), int8 B and C (per-group scales), fp16 dt, D skip",
            inputs=(
                TensorSpec("x", ("int8",), "[b, l, H*P]", "heads flattened, so per-channel scales ride on one axis"),
                TensorSpec("dt", _FP, "[b, l, H]", "before dt_bias, softplus and the clamp"),
                TensorSpec("A", ("float32",), "[H]"),
                TensorSpec("B", ("int8",), "[b, l, G, N]"),
                TensorSpec("C", ("int8",), "[b, l, G, N]"),
                TensorSpec("D", ("float32",), "[H]"),
                TensorSpec("dt_bias", ("float32",), "[H]"),
                TensorSpec("ssm_state", _STATE, "[b, H, P, N]"),
            ),
            outputs=(TensorSpec("y", _FP, "[b, l, H, P]"), TensorSpec("ssm_state_out", _STATE, "[b, H, P, N]")),
            attributes=(
                AttrSpec("heads", "int", "H: x's channels are H heads of P", minimum=1),
                AttrSpec("x_scale", "floats", "one per channel (H*P), or one", minimum=SCALE["minimum"]),
                AttrSpec("B_scale", "floats", "one per group (G), or one", minimum=SCALE["minimum"]),
                AttrSpec("C_scale", "floats", "one per group (G), or one", minimum=SCALE["minimum"]),
                AttrSpec("dt_min", "float", minimum=0.0, default=0.0),
                AttrSpec("dt_max", "float", "inf: no upper bound", minimum=0.0, default=float("inf"), finite=False),
            ),
            reference=ref.ssd_scan_quant,
        ),
        OpSpec(
            "GatedRMSNormQuant",
            "Mamba2's gated RMSNorm per group, int8 gate in, optional Hadamard, int8 out",
            inputs=(
                TensorSpec("y", _FP, "[b, l, d]"),
                TensorSpec("z", ("int8",), "[b, l, d]"),
                TensorSpec("weight", _FP, "[d]"),
            ),
            outputs=(TensorSpec("out", ("int8",), "[b, l, d]"),),
            attributes=(
                AttrSpec("z_scale", **SCALE),
                AttrSpec("eps", "float", minimum=0.0, maximum=1.0),
                AttrSpec("group_size", "int", minimum=1),
                AttrSpec("out_scale", **SCALE),
                AttrSpec("hadamard", "int", "1: Hadamard-transform before quantizing", minimum=0, maximum=1, default=0),
            ),
            reference=ref.gated_rms_norm_quant,
            limits=(hadamard_order_limit("hadamard"),),
        ),
        OpSpec(
            "HadamardQuant",
            "fast Hadamard transform (orders 2^k, 12/20/28/40 * 2^k), normalised, int8 output",
            inputs=(TensorSpec("x", _FP, "[..., n]"),),
            outputs=(TensorSpec("y", ("int8",), "[..., n]"),),
            attributes=(AttrSpec("out_scale", **SCALE),),
            reference=ref.hadamard_quant,
            limits=(hadamard_order_limit(),),
        ),
        # the fp variants: the unquantized baseline bundle runs through the same kind of plugins,
        # so a device comparison of fp16 with int8 measures quantization, not a different graph
        OpSpec(
            "RMSNorm",
            "residual add fused, RMSNorm, fp output (RMSNormQuant's fp variant)",
            inputs=(
                TensorSpec("x", _FP, "[b, l, d]"),
                TensorSpec("residual", _FP, "[b, l, d]", "added to x first", optional=True),
                TensorSpec("weight", _FP, "[d]"),
            ),
            outputs=(TensorSpec("y", _FP, "[b, l, d]"), TensorSpec("residual_out", _FP, "[b, l, d]")),
            attributes=(AttrSpec("eps", "float", minimum=0.0, maximum=1.0),),
            reference=ref.rms_norm_fp,
        ),
        OpSpec(
            "CausalConv1dFp",
            "depthwise causal conv1d, fp in and out, SiLU fused, conv state in and out (CausalConv1d's fp variant)",
            inputs=(
                TensorSpec("x", _FP, "[b, l, c]"),
                TensorSpec("weight", _FP, "[c, k]", "k in 2..4"),
                TensorSpec("bias", _FP, "[c]", optional=True),
                TensorSpec("conv_state", _FP, "[b, k-1, c]", "previous inputs"),
            ),
            outputs=(TensorSpec("y", _FP, "[b, l, c]"), TensorSpec("conv_state_out", _FP, "[b, k-1, c]")),
            attributes=(),
            reference=ref.causal_conv1d_fp,
            limits=(conv_width_limit(),),
        ),
        OpSpec(
            "SelectiveScanFp",
            "Mamba1 selective scan, fp inputs: softplus(dt + dt_bias), D skip and silu(z) gate fused",
            inputs=(
                TensorSpec("u", _FP, "[b, l, d]"),
                TensorSpec("dt", _FP, "[b, l, d]", "before dt_bias and softplus"),
                TensorSpec("A", ("float32",), "[d, n]"),
                TensorSpec("B", _FP, "[b, l, n]"),
                TensorSpec("C", _FP, "[b, l, n]"),
                TensorSpec("D", ("float32",), "[d]"),
                TensorSpec("z", _FP, "[b, l, d]"),
                TensorSpec("dt_bias", ("float32",), "[d]"),
                TensorSpec("ssm_state", _STATE, "[b, d, n]"),
            ),
            outputs=(TensorSpec("y", _FP, "[b, l, d]"), TensorSpec("ssm_state_out", _STATE, "[b, d, n]")),
            attributes=(),
            reference=ref.selective_scan_fp,
        ),
        OpSpec(
            "SSDScanFp",
            "Mamba2 SSD, fp inputs: heads and groups, D skip (SSDScan's fp variant)",
            inputs=(
                TensorSpec("x", _FP, "[b, l, H*P]", "heads flattened, as SSDScan"),
                TensorSpec("dt", _FP, "[b, l, H]", "before dt_bias, softplus and the clamp"),
                TensorSpec("A", ("float32",), "[H]"),
                TensorSpec("B", _FP, "[b, l, G, N]"),
                TensorSpec("C", _FP, "[b, l, G, N]"),
                TensorSpec("D", ("float32",), "[H]"),
                TensorSpec("dt_bias", ("float32",), "[H]"),
                TensorSpec("ssm_state", _STATE, "[b, H, P, N]"),
            ),
            outputs=(TensorSpec("y", _FP, "[b, l, H, P]"), TensorSpec("ssm_state_out", _STATE, "[b, H, P, N]")),
            attributes=(
                AttrSpec("heads", "int", "H: x's channels are H heads of P", minimum=1),
                AttrSpec("dt_min", "float", minimum=0.0, default=0.0),
                AttrSpec("dt_max", "float", "inf: no upper bound", minimum=0.0, default=float("inf"), finite=False),
            ),
            reference=ref.ssd_scan_fp,
        ),
        OpSpec(
            "GatedRMSNorm",
            "Mamba2's gated RMSNorm per group, fp in and out (GatedRMSNormQuant's fp variant)",
            inputs=(
                TensorSpec("y", _FP, "[b, l, d]"),
                TensorSpec("z", _FP, "[b, l, d]"),
                TensorSpec("weight", _FP, "[d]"),
            ),
            outputs=(TensorSpec("out", _FP, "[b, l, d]"),),
            attributes=(
                AttrSpec("eps", "float", minimum=0.0, maximum=1.0),
                AttrSpec("group_size", "int", minimum=1),
            ),
            reference=ref.gated_rms_norm_fp,
        ),
        # 4-bit weight GEMMs (packed layout: jetmamba.compiler.ops.int4); the lowering keeps 8-bit
        # layers as Q/DQ int8 GEMMs, which TensorRT runs itself
        OpSpec(
            "W4A16Linear",
            "int4 weights (grouped fp16 scales), fp16 activations: y = x W^T + bias, fp32 accumulation",
            inputs=(
                TensorSpec("x", ("float16",), "[b, l, K]"),
                TensorSpec("qweight", ("uint8",), "[N, K/2]", "int4 codes, two a byte along K, low nibble first"),
                TensorSpec("scales", ("float16",), "[N, K/G]", "one per output channel and group of G inputs"),
                TensorSpec("bias", ("float32",), "[N]", optional=True),
            ),
            outputs=(TensorSpec("y", ("float16",), "[b, l, N]"),),
            attributes=(_INT4_GROUP,),
            reference=ref.w4a16_linear,
        ),
        OpSpec(
            "W4A8Linear",
            "int4 weights (grouped fp16 scales), int8 activations (per-tensor scale): int32 group sums, fp16 out",
            inputs=(
                TensorSpec("x", ("int8",), "[b, l, K]"),
                TensorSpec("qweight", ("uint8",), "[N, K/2]", "int4 codes, two a byte along K, low nibble first"),
                TensorSpec("scales", ("float16",), "[N, K/G]", "one per output channel and group of G inputs"),
                TensorSpec("bias", ("float32",), "[N]", optional=True),
            ),
            outputs=(TensorSpec("y", ("float16",), "[b, l, N]"),),
            attributes=(AttrSpec("x_scale", **SCALE), _INT4_GROUP),
            reference=ref.w4a8_linear,
        ),
    )
}


def supports(op: str, **facts) -> str | None:
    """None when the op set can lower a node of ``op`` with these facts (static structure such as
    ``k`` or ``n``, and attribute values); otherwise the reason, one sentence."""
    spec = OPSET.get(op)
    if spec is None:
        return f"jetmamba has no op {op!r}"
    try:
        for a in spec.attributes:  # the attributes given; a missing one is the caller's business
            if a.name in facts:
                a.check(facts[a.name])
    except ValueError as exc:
        return str(exc)
    return spec.unsupported(facts)


__all__ = ["OPSET", "AttrSpec", "Limit", "OpSpec", "TensorSpec", "supports"]
