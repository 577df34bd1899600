"""Mamba1's mixer as deployed-graph nodes, mirroring QuantMamba1Mixer.forward (int8 activations, int8
or 4-bit GEMMs) and QuantMamba1MixerFp.forward (W4A16: fp16 activations) step for step."""

from __future__ import annotations

import torch

from jetmamba.compiler.graph import DTYPES, GraphBuilder


def ssm_state_shape(config) -> tuple[int, ...]:
    return (config.d_inner, config.d_state)


def lower_mixer(g: GraphBuilder, m, x_q, x_scale: float, conv_state, ssm_state, p: str):
    c, act = m.c, m.act_dtype
    s = {site: float(getattr(m, f"{site}_scale")) for site in ("x", "z", "u", "dt_r", "B", "C", "dt")}
    xz = g.gemm(x_q, x_scale, m.in_proj, f"{p}.in_proj")
    x, z = g.ops("Split", [xz, g.const_i64(c.d_inner, c.d_inner)], 2, axis=-1)
    x_q, z_q = g.quantize(x, s["x"], f"{p}.x.quantize"), g.quantize(z, s["z"], f"{p}.z.quantize")
    conv_bias = None if m.conv_bias is None else g.initializer(f"{p}.conv1d.bias", m.conv_bias.float())
    u_q, conv_out = g.custom(
        "CausalConv1d",
        {"x": x_q, "weight": g.initializer(f"{p}.conv1d.weight", m.conv_weight), "bias": conv_bias,
         "conv_state": conv_state},
        {"x_scale": [s["x"]], "w_scale": m.conv_weight_scale.tolist(), "out_scale": [s["u"]]},
        g.structure(k=c.d_conv), name=f"{p}.conv1d",
    )  # fmt: skip
    dbc = g.gemm(u_q, s["u"], m.x_proj, f"{p}.x_proj")
    dt_r, B, C = g.ops("Split", [dbc, g.const_i64(c.dt_rank, c.d_state, c.d_state)], 3, axis=-1)
    if c.bcdt_rms_eps is not None:  # FalconMamba's weightless norms of dt, B and C
        dt_r, B, C = (g.rms_norm(t, None, c.bcdt_rms_eps) for t in (dt_r, B, C))
    dt = g.qgemm(g.quantize(dt_r, s["dt_r"], f"{p}.dt_r.quantize"), s["dt_r"], m.dt_proj.weight,
                 m.dt_proj.weight_scale, None, f"{p}.dt_proj")  # fmt: skip
    smooth = not bool((m.gate_smooth == 1).all())
    inputs = {
        "u": u_q, "dt": g.quantize(dt, s["dt"], f"{p}.dt.quantize"),
        "A": g.initializer(f"{p}.A", -torch.exp(m.A_log.float())),
        "B": g.quantize(B, s["B"], f"{p}.B.quantize"), "C": g.quantize(C, s["C"], f"{p}.C.quantize"),
        "D": g.initializer(f"{p}.D", m.D.float()), "z": z_q,
        "dt_bias": g.initializer(f"{p}.dt_bias", m.dt_bias.float()),
        "gate_smooth": g.initializer(f"{p}.gate_smooth", m.gate_smooth.float()) if smooth else None,
    }  # fmt: skip
    attrs = {f"{k}_scale": s[k] for k in ("u", "dt", "B", "C", "z")}
    if isinstance(ssm_state, tuple):  # an int8 state: (codes, per-channel scales) in and out; y in fp16
        codes, scales = ssm_state
        y, codes_out, scales_out = g.custom("SelectiveScanInt8State",
                                            {**inputs, "ssm_state": codes, "ssm_state_scale": scales}, attrs,
                                            g.structure(), name=f"{p}.selective_scan")  # fmt: skip
        ssm_out, y_dtype = (codes_out, scales_out), DTYPES[torch.float16]
    else:
        y, ssm_out = g.custom("SelectiveScan", {**inputs, "ssm_state": ssm_state}, attrs, g.structure(),
                              name=f"{p}.selective_scan")  # fmt: skip
        y_dtype = ssm_state.type.dtype  # y comes in the state's dtype
    if y_dtype != DTYPES[act]:  # an fp32-state graph, or an int8-state one with fp32 activations
        y = g.cast(y, act)
    out_scale = float(m.out_proj_input_scale)
    if m.out_hadamard:
        (y_q,) = g.custom("HadamardQuant", {"x": y}, {"out_scale": out_scale}, g.structure(n=c.d_inner),
                          name=f"{p}.out_hadamard")  # fmt: skip
    else:
        y_q = g.quantize(g.cast(y, torch.float32), out_scale, f"{p}.out_proj.quantize")
    out = g.gemm(y_q, out_scale, m.out_proj, f"{p}.out_proj")
    return g.cast(out, act), conv_out, ssm_out


def lower_fp_mixer(g: GraphBuilder, m, x, conv_state, ssm_state, p: str):
    """An unquantized Mamba1Mixer (no online transforms) in the graph's float type."""
    c, act = m.c, g.float_dtype
    xz = g.linear(x, m.in_proj.weight, m.in_proj.bias, f"{p}.in_proj")
    x, z = g.ops("Split", [xz, g.const_i64(c.d_inner, c.d_inner)], 2, axis=-1)
    conv_bias = None if m.conv1d.bias is None else g.initializer(f"{p}.conv1d.bias", m.conv1d.bias.to(act))
    u, conv_out = g.custom(
        "CausalConv1dFp",
        {"x": x, "weight": g.initializer(f"{p}.conv1d.weight", m.conv1d.weight[:, 0].to(act)), "bias": conv_bias,
         "conv_state": conv_state},
        {}, g.structure(k=c.d_conv), name=f"{p}.conv1d",
    )  # fmt: skip
    dbc = g.linear(u, m.x_proj.weight, None, f"{p}.x_proj")
    dt_r, B, C = g.ops("Split", [dbc, g.const_i64(c.dt_rank, c.d_state, c.d_state)], 3, axis=-1)
    if c.bcdt_rms_eps is not None:  # FalconMamba's weightless norms of dt, B and C, fp32 inside
        dt_r, B, C = (g.cast(g.rms_norm(g.cast(t, torch.float32), None, c.bcdt_rms_eps), act) for t in (dt_r, B, C))
    dt = g.linear(dt_r, m.dt_proj.weight, None, f"{p}.dt_proj")  # dt_proj's bias is the scan's dt_bias
    y, ssm_out = g.custom(
        "SelectiveScanFp",
        {"u": u, "dt": dt, "A": g.initializer(f"{p}.A", -torch.exp(m.A_log.float())), "B": B, "C": C,
         "D": g.initializer(f"{p}.D", m.D.float()), "z": z,
         "dt_bias": g.initializer(f"{p}.dt_bias", m.dt_proj.bias.float()), "ssm_state": ssm_state},
        {}, g.structure(), name=f"{p}.selective_scan",
    )  # fmt: skip
    return g.linear(y, m.out_proj.weight, m.out_proj.bias, f"{p}.out_proj"), conv_out, ssm_out


def lower_w4a16_mixer(g: GraphBuilder, m, x, conv_state, ssm_state, p: str):
    """A W4A16 layer (QuantMamba1MixerFp): x is the block RMSNorm's fp16 output; 4-bit in_proj,
    x_proj and out_proj; dt_proj an fp16 weight (its K = dt_rank holds no int4 groups) applied in
    fp32 as the simulation does; the fp op variants; the fp16 Hadamard before out_proj."""
    c, act = m.c, m.act_dtype
    xz = g.int4_gemm(x, None, m.in_proj, f"{p}.in_proj")
    x, z = g.ops("Split", [xz, g.const_i64(c.d_inner, c.d_inner)], 2, axis=-1)
    # in x's dtype: the CausalConv1dFp kernel takes every tensor in one dtype (docs/kernels.md), and
    # the simulation holds it so too
    conv_bias = None if m.conv_bias is None else g.initializer(f"{p}.conv1d.bias", m.conv_bias.to(act))
    u, conv_out = g.custom(
        "CausalConv1dFp",
        {"x": x, "weight": g.initializer(f"{p}.conv1d.weight", m.conv_weight.to(act)), "bias": conv_bias,
         "conv_state": conv_state},
        {}, g.structure(k=c.d_conv), name=f"{p}.conv1d",
    )  # fmt: skip
    dbc = g.int4_gemm(u, None, m.x_proj, f"{p}.x_proj")
    dt_r, B, C = g.ops("Split", [dbc, g.const_i64(c.dt_rank, c.d_state, c.d_state)], 3, axis=-1)
    if c.bcdt_rms_eps is not None:  # FalconMamba's weightless norms of dt, B and C, fp32 inside
        dt_r, B, C = (g.cast(g.rms_norm(g.cast(t, torch.float32), None, c.bcdt_rms_eps), act) for t in (dt_r, B, C))
    w = g.cast(g.initializer(f"{p}.dt_proj.weight", m.dt_proj_weight.to(act)), torch.float32)
    dt = g.op("MatMul", g.cast(dt_r, torch.float32), g.op("Transpose", w, perm=[1, 0]), name=f"{p}.dt_proj.matmul")
    y, ssm_out = g.custom(
        "SelectiveScanFp",
        {"u": u, "dt": g.cast(dt, act), "A": g.initializer(f"{p}.A", -torch.exp(m.A_log.float())), "B": B, "C": C,
         "D": g.initializer(f"{p}.D", m.D.float()), "z": z, "dt_bias": g.initializer(f"{p}.dt_bias", m.dt_bias.float()),
         "ssm_state": ssm_state},
        {}, g.structure(), name=f"{p}.selective_scan",
    )  # fmt: skip
    if m.out_hadamard:
        y = g.cast(g.hadamard(g.cast(y, torch.float32), c.d_inner), act)
    return g.int4_gemm(y, None, m.out_proj, f"{p}.out_proj"), conv_out, ssm_out
