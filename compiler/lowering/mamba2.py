"""Mamba2's mixer as deployed-graph nodes, mirroring QuantMamba2Mixer.forward (int8 activations, int8
or 4-bit GEMMs) and QuantMamba2MixerFp.forward (W4A16: fp16 activations) step for step."""

from __future__ import annotations

import torch

from jetmamba.compiler.graph import GraphBuilder


def ssm_state_shape(config) -> tuple[int, ...]:
    return (config.n_heads, config.head_dim, config.d_state)


def lower_mixer(g: GraphBuilder, m, x_q, x_scale: float, conv_state, ssm_state, p: str):
    c, act = m.c, m.act_dtype
    n, G = c.d_state, c.n_groups
    zxd = g.gemm(x_q, x_scale, m.in_proj, f"{p}.in_proj")
    z, xbc, dt = g.ops("Split", [zxd, g.const_i64(c.d_inner, c.conv_dim, c.n_heads)], 3, axis=-1)
    z_q = g.quantize(z, float(m.z_scale), f"{p}.z.quantize")
    xbc_q = g.quantize(xbc, float(m.xBC_scale), f"{p}.xBC.quantize")
    out_scale = torch.cat([m.x_scale, m.B_scale.repeat_interleave(n), m.C_scale.repeat_interleave(n)])
    conv_bias = None if m.conv_bias is None else g.initializer(f"{p}.conv1d.bias", m.conv_bias.float())
    conv_q, conv_out = g.custom(
        "CausalConv1d",
        {"x": xbc_q, "weight": g.initializer(f"{p}.conv1d.weight", m.conv_weight), "bias": conv_bias,
         "conv_state": conv_state},
        {"x_scale": [float(m.xBC_scale)], "w_scale": m.conv_weight_scale.tolist(), "out_scale": out_scale.tolist()},
        g.structure(k=c.d_conv), name=f"{p}.conv1d",
    )  # fmt: skip
    # TensorRT moves int8 through plugins and Q/DQ only: the split into x, B, C and the reshape to
    # groups happen between a DequantizeLinear and QuantizeLinears (exact: q * s / s rounds to q),
    # a pattern its Q/DQ optimizer turns into int8 data movement
    conv = g.dequantize(conv_q, out_scale, axis=2, name=f"{p}.conv1d.dequantize")
    x, B, C = g.ops("Split", [conv, g.const_i64(c.d_inner, G * n, G * n)], 3, axis=-1)
    lead = g.op("Slice", g.op("Shape", conv), g.const_i64(0), g.const_i64(2))  # [batch, seq]
    x = g.quantize(x, m.x_scale, f"{p}.x.quantize", axis=2)
    B = g.quantize(g.op("Reshape", B, g.op("Concat", lead, g.const_i64(G, n), axis=0)), m.B_scale,
                   f"{p}.B.quantize", axis=2)  # fmt: skip
    C = g.quantize(g.op("Reshape", C, g.op("Concat", lead, g.const_i64(G, n), axis=0)), m.C_scale,
                   f"{p}.C.quantize", axis=2)  # fmt: skip
    y, ssm_out = g.custom(
        "SSDScan",
        {"x": x, "dt": g.cast(dt, act), "A": g.initializer(f"{p}.A", -torch.exp(m.A_log.float())),
         "B": B, "C": C, "D": g.initializer(f"{p}.D", m.D.float()),
         "dt_bias": g.initializer(f"{p}.dt_bias", m.dt_bias.float()), "ssm_state": ssm_state},
        {"heads": c.n_heads, "x_scale": m.x_scale.tolist(), "B_scale": m.B_scale.tolist(),
         "C_scale": m.C_scale.tolist(),
         "dt_min": float(c.dt_min), "dt_max": float("inf") if c.dt_max is None else float(c.dt_max)},
        g.structure(), name=f"{p}.ssd_scan",
    )  # fmt: skip
    y = g.op("Reshape", y, g.op("Concat", lead, g.const_i64(c.d_inner), axis=0))
    s = float(m.out_proj_input_scale)
    (y_q,) = g.custom(
        "GatedRMSNormQuant", {"y": y, "z": z_q, "weight": g.initializer(f"{p}.norm.weight", m.norm_weight.float())},
        {"z_scale": float(m.z_scale), "eps": float(c.gate_eps), "group_size": c.d_inner // G, "out_scale": s,
         "hadamard": int(m.out_hadamard)},
        g.structure(n=c.d_inner if m.out_hadamard else 0), name=f"{p}.gated_norm",
    )  # fmt: skip
    out = g.gemm(y_q, s, m.out_proj, f"{p}.out_proj")
    return g.cast(out, act), conv_out, ssm_out


def _fp_mixer_core(g: GraphBuilder, m, zxd, conv_weight, conv_bias, norm_weight, conv_state, ssm_state, p: str):
    """The mixer between in_proj and out_proj with the fp op variants (CausalConv1dFp, SSDScanFp,
    GatedRMSNorm), shared by the unquantized and the W4A16 lowering: zxd is in_proj's output in the
    activation dtype; conv weight and bias are stored in that dtype, as CausalConv1dFp takes every
    tensor in x's dtype. Returns (gated y, conv state out, SSM state out)."""
    c, act = m.c, g.float_dtype
    n, G = c.d_state, c.n_groups
    z, xbc, dt = g.ops("Split", [zxd, g.const_i64(c.d_inner, c.conv_dim, c.n_heads)], 3, axis=-1)
    bias = None if conv_bias is None else g.initializer(f"{p}.conv1d.bias", conv_bias.to(act))
    conv, conv_out = g.custom(
        "CausalConv1dFp",
        {"x": xbc, "weight": g.initializer(f"{p}.conv1d.weight", conv_weight.to(act)), "bias": bias,
         "conv_state": conv_state},
        {}, g.structure(k=c.d_conv), name=f"{p}.conv1d",
    )  # fmt: skip
    x, B, C = g.ops("Split", [conv, g.const_i64(c.d_inner, G * n, G * n)], 3, axis=-1)
    lead = g.op("Slice", g.op("Shape", conv), g.const_i64(0), g.const_i64(2))  # [batch, seq]
    B = g.op("Reshape", B, g.op("Concat", lead, g.const_i64(G, n), axis=0))
    C = g.op("Reshape", C, g.op("Concat", lead, g.const_i64(G, n), axis=0))
    y, ssm_out = g.custom(
        "SSDScanFp",
        {"x": x, "dt": dt, "A": g.initializer(f"{p}.A", -torch.exp(m.A_log.float())), "B": B, "C": C,
         "D": g.initializer(f"{p}.D", m.D.float()), "dt_bias": g.initializer(f"{p}.dt_bias", m.dt_bias.float()),
         "ssm_state": ssm_state},
        {"heads": c.n_heads, "dt_min": float(c.dt_min),
         "dt_max": float("inf") if c.dt_max is None else float(c.dt_max)},
        g.structure(), name=f"{p}.ssd_scan",
    )  # fmt: skip
    y = g.op("Reshape", y, g.op("Concat", lead, g.const_i64(c.d_inner), axis=0))
    (y,) = g.custom(
        "GatedRMSNorm", {"y": y, "z": z, "weight": g.initializer(f"{p}.norm.weight", norm_weight)},
        {"eps": float(c.gate_eps), "group_size": c.d_inner // G}, g.structure(), name=f"{p}.gated_norm",
    )  # fmt: skip
    return y, conv_out, ssm_out


def lower_fp_mixer(g: GraphBuilder, m, x, conv_state, ssm_state, p: str):
    """An unquantized Mamba2Mixer (no online transforms) in the graph's float type."""
    zxd = g.linear(x, m.in_proj.weight, m.in_proj.bias, f"{p}.in_proj")
    y, conv_out, ssm_out = _fp_mixer_core(g, m, zxd, m.conv1d.weight[:, 0], m.conv1d.bias,
                                          m.norm.weight.to(g.float_dtype), conv_state, ssm_state, p)  # fmt: skip
    return g.linear(y, m.out_proj.weight, m.out_proj.bias, f"{p}.out_proj"), conv_out, ssm_out


def lower_w4a16_mixer(g: GraphBuilder, m, x, conv_state, ssm_state, p: str):
    """A W4A16 layer (QuantMamba2MixerFp): x is the block RMSNorm's fp16 output; 4-bit in_proj and
    out_proj, the fp op variants, the fp16 Hadamard before out_proj."""
    zxd = g.int4_gemm(x, None, m.in_proj, f"{p}.in_proj")
    y, conv_out, ssm_out = _fp_mixer_core(g, m, zxd, m.conv_weight, m.conv_bias, m.norm_weight.float(),
                                          conv_state, ssm_state, p)  # fmt: skip
    if m.out_hadamard:
        y = g.cast(g.hadamard(g.cast(y, torch.float32), m.c.d_inner), g.float_dtype)
    return g.int4_gemm(y, None, m.out_proj, f"{p}.out_proj"), conv_out, ssm_out
