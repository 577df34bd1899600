"""Mamba1's mixer as deployed-graph nodes, mirroring QuantMamba1Mixer.forward step for step."""

from __future__ import annotations

import torch

from jetmamba.compiler.graph import DTYPES, GraphBuilder


def ssm_state_shape(config) -> tuple[int, ...]:
    return (config.d_inner, config.d_state)


def lower_mixer(g: GraphBuilder, m, x_q, x_scale: float, conv_state, ssm_state, p: str):
    c, act = m.c, m.act_dtype
    s = {site: float(getattr(m, f"{site}_scale")) for site in ("x", "z", "u", "dt_r", "B", "C", "dt")}
    xz = g.qgemm(x_q, x_scale, m.in_proj.weight, m.in_proj.weight_scale, m.in_proj.bias, f"{p}.in_proj")
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
    dbc = g.qgemm(u_q, s["u"], m.x_proj.weight, m.x_proj.weight_scale, None, f"{p}.x_proj")
    dt_r, B, C = g.ops("Split", [dbc, g.const_i64(c.dt_rank, c.d_state, c.d_state)], 3, axis=-1)
    if c.bcdt_rms_eps is not None:  # FalconMamba's weightless norms of dt, B and C
        dt_r, B, C = (g.rms_norm(t, None, c.bcdt_rms_eps) for t in (dt_r, B, C))
    dt = g.qgemm(g.quantize(dt_r, s["dt_r"], f"{p}.dt_r.quantize"), s["dt_r"], m.dt_proj.weight,
                 m.dt_proj.weight_scale, None, f"{p}.dt_proj")  # fmt: skip
    smooth = not bool((m.gate_smooth == 1).all())
    y, ssm_out = g.custom(
        "SelectiveScan",
        {"u": u_q, "dt": g.quantize(dt, s["dt"], f"{p}.dt.quantize"),
         "A": g.initializer(f"{p}.A", -torch.exp(m.A_log.float())),
         "B": g.quantize(B, s["B"], f"{p}.B.quantize"), "C": g.quantize(C, s["C"], f"{p}.C.quantize"),
         "D": g.initializer(f"{p}.D", m.D.float()), "z": z_q,
         "dt_bias": g.initializer(f"{p}.dt_bias", m.dt_bias.float()), "ssm_state": ssm_state,
         "gate_smooth": g.initializer(f"{p}.gate_smooth", m.gate_smooth.float()) if smooth else None},
        {f"{k}_scale": s[k] for k in ("u", "dt", "B", "C", "z")},
        g.structure(), name=f"{p}.selective_scan",
    )  # fmt: skip
    if ssm_state.type.dtype != DTYPES[act]:  # y comes in the state's dtype (an fp32-state graph)
        y = g.cast(y, act)
    out_scale = float(m.out_proj_input_scale)
    if m.out_hadamard:
        (y_q,) = g.custom("HadamardQuant", {"x": y}, {"out_scale": out_scale}, g.structure(n=c.d_inner),
                          name=f"{p}.out_hadamard")  # fmt: skip
    else:
        y_q = g.quantize(g.cast(y, torch.float32), out_scale, f"{p}.out_proj.quantize")
    out = g.qgemm(y_q, out_scale, m.out_proj.weight, m.out_proj.weight_scale, m.out_proj.bias, f"{p}.out_proj")
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
