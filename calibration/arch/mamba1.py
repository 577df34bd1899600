"""Mamba1 (and FalconMamba, Mamba1 with RMS-normed B, C and dt): config, mixer and state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from jetmamba.calibration.arch.base import (
    ArchAdapter,
    ConfigReader,
    LayerState,
    Mixer,
    ModelConfig,
    dt_bias_init,
    init_conv_,
    init_linear_,
    padded_vocab,
    require_silu,
)
from jetmamba.calibration.functional import causal_conv1d, rms_norm, selective_scan, selective_state_update
from jetmamba.calibration.hadamard import hadamard_transform
from jetmamba.calibration.qlayers import (
    QuantLinear,
    fit_scale,
    linear_layout,
    quant_linear,
    rtn_int8,
    scale_buffer,
)
from jetmamba.compiler.ops.quant import quantize
from jetmamba.compiler.ops.reference import (
    causal_conv1d_fp,
    causal_conv1d_quant,
    hadamard_quant,
    selective_scan_fp,
    selective_scan_quant,
)
from jetmamba.errors import CheckpointError, UnsupportedError


@dataclass(frozen=True, kw_only=True)
class Mamba1Config(ModelConfig):
    arch = "mamba1"
    dt_rank: int
    # FalconMamba: weightless RMSNorm of dt (before dt_proj), B and C with this epsilon.
    bcdt_rms_eps: float | None = None

    @property
    def conv_dim(self) -> int:
        return self.d_inner

    def validate(self) -> None:
        super().validate()
        if self.bcdt_rms_eps is not None and not (0 < self.bcdt_rms_eps < 1):
            raise CheckpointError(f"config: mixer_rms_eps must be in (0, 1), got {self.bcdt_rms_eps!r}")


class Mamba1Mixer(Mixer):
    """in_proj -> (x, z); x -> causal conv -> SiLU -> x_proj -> (dt, B, C); selective scan gated by
    SiLU(z); out_proj. Parameter names and shapes are those of transformers and mamba_ssm."""

    def __init__(self, config: Mamba1Config, *, dtype: torch.dtype, device=None):
        super().__init__()
        kw = {"dtype": dtype, "device": device}
        c = self.c = config
        self.d_inner, self.d_state, self.dt_rank = c.d_inner, c.d_state, c.dt_rank
        self.bcdt_rms_eps = c.bcdt_rms_eps
        self.in_proj = nn.Linear(c.d_model, 2 * c.d_inner, bias=c.proj_bias, **kw)
        self.conv1d = nn.Conv1d(c.d_inner, c.d_inner, c.d_conv, groups=c.d_inner, bias=c.conv_bias, **kw)
        self.x_proj = nn.Linear(c.d_inner, c.dt_rank + 2 * c.d_state, bias=False, **kw)
        self.dt_proj = nn.Linear(c.dt_rank, c.d_inner, bias=True, **kw)
        # SSM parameters stay fp32 whatever the model dtype, as mamba_ssm keeps them.
        self.A_log = nn.Parameter(torch.zeros(c.d_inner, c.d_state, dtype=torch.float32, device=device))
        self.D = nn.Parameter(torch.ones(c.d_inner, dtype=torch.float32, device=device))
        self.out_proj = nn.Linear(c.d_inner, c.d_model, bias=c.proj_bias, **kw)
        # MambaQuant's S-SiLU: with a smoothing s the gate is z * sigmoid(s * z) (s = None: SiLU)
        self.register_buffer("gate_smooth", None)
        # MambaQuant's per-state smoothing (B / s, C * s): the scan runs on h / s; states coming in
        # are divided by s and states going out multiplied by it (the first-step correction)
        self.register_buffer("state_scale", None)

    def channel_groups(self, site: str, kind: str) -> torch.Tensor:
        raise UnsupportedError(f"Mamba1 has no {kind!r} grouping of {site!r}")

    def smooth_ssm_state(self, s: torch.Tensor) -> None:
        """x_proj's B rows / s and C rows * s (s per state): y = sum_n h_n C_n is unchanged, the
        scan carries h / s. FalconMamba's RMSNorm of B and C does not commute with it."""
        if self.bcdt_rms_eps is not None:
            raise UnsupportedError("FalconMamba normalises B and C after x_proj: per-state smoothing does not apply")
        s = s.double().to(self.D.device)
        r, n = self.dt_rank, self.d_state
        with torch.no_grad():
            w = self.x_proj.weight.double().clone()
            w[r : r + n] /= s[:, None]
            w[r + n :] *= s[:, None]
            self.x_proj.weight.copy_(w.to(self.x_proj.weight.dtype))
        prev = torch.ones_like(s, dtype=torch.float32) if self.state_scale is None else self.state_scale
        self.state_scale = (prev.double() * s).float()

    def _state_in(self, h0):
        return h0 if h0 is None or self.state_scale is None else h0 / self.state_scale

    def _state_out(self, h):
        return h if self.state_scale is None else h * self.state_scale

    def _gate(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """y * S-SiLU(z) when smoothed (the scan did not gate)."""
        if self.gate_smooth is None:
            return y
        zf = z.float()
        return y * zf * torch.sigmoid(self.gate_smooth * zf)

    def smooth_out_proj_input(self, s: torch.Tensor) -> None:
        """z' = z / s through in_proj's gate rows, S-SiLU(z') = SiLU(z) / s, out_proj columns * s."""
        if self.out_hadamard:
            raise UnsupportedError("smoothing must come before the Hadamard on out_proj's input")
        s = s.double().to(self.D.device)
        d = self.d_inner
        with torch.no_grad():
            w = self.in_proj.weight.double()
            w[d:] /= s[:, None]
            self.in_proj.weight.copy_(w.to(self.in_proj.weight.dtype))
            if self.in_proj.bias is not None:
                self.in_proj.bias[d:] = (self.in_proj.bias[d:].double() / s).to(self.in_proj.bias.dtype)
            self.out_proj.weight.copy_((self.out_proj.weight.double() * s).to(self.out_proj.weight.dtype))
        prev = torch.ones_like(s, dtype=torch.float32) if self.gate_smooth is None else self.gate_smooth
        self.gate_smooth = (prev.double() * s).float()

    def _ssm_inputs(self, x: torch.Tensor):
        """x (conv output, [..., d_inner]) -> dt before bias and softplus (fp32), B, C."""
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        if self.bcdt_rms_eps is not None:
            dt, B, C = (rms_norm(t, None, self.bcdt_rms_eps) for t in (dt, B, C))
        dt, B, C = self.site("dt_r", dt), self.site("B", B), self.site("C", C)
        return self.site("dt", F.linear(dt, self.dt_proj.weight).float()), B, C

    def forward(self, h, state=None, scan_impl="auto"):
        x, z = self.in_proj(self.site("in_proj.input", h)).split(self.d_inner, dim=-1)
        x, z = self.site("x", x), self.site("z", z)
        x, conv_state = causal_conv1d(
            x, self.conv1d.weight[:, 0], self.conv1d.bias, None if state is None else state.conv
        )
        x = self.site("u", x.to(h.dtype))
        dt, B, C = self._ssm_inputs(x)
        A = -torch.exp(self.A_log.float())
        h0 = self._state_in(None if state is None else state.ssm)
        gate = z if self.gate_smooth is None else None
        y, ssm_state = selective_scan(x, dt, A, B, C, self.D, gate, h0, self.dt_proj.bias, True, impl=scan_impl)
        y = self._gate(y, z)
        return self.out_proj(self.rotate_out(y).to(h.dtype)), LayerState(
            conv_state.to(h.dtype), self._state_out(ssm_state)
        )

    def step(self, h, state):
        x, z = self.in_proj(h).split(self.d_inner, dim=-1)
        x, conv_state = causal_conv1d(x.unsqueeze(1), self.conv1d.weight[:, 0], self.conv1d.bias, state.conv)
        x = x.squeeze(1).to(h.dtype)
        dt, B, C = self._ssm_inputs(x)
        A = -torch.exp(self.A_log.float())
        gate = z if self.gate_smooth is None else None
        h0 = self._state_in(state.ssm)
        y, ssm_state = selective_state_update(x, dt, A, B, C, self.D, gate, h0, self.dt_proj.bias, True)
        y = self._gate(y, z)
        out_state = self._state_out(ssm_state.float())
        return self.out_proj(self.rotate_out(y).to(h.dtype)), LayerState(conv_state.to(h.dtype), out_state)

    @torch.no_grad()
    def reset_parameters(self, generator):
        for lin in (self.in_proj, self.x_proj, self.out_proj):
            init_linear_(lin, generator)
        init_conv_(self.conv1d, generator)
        std = self.dt_rank**-0.5
        self.dt_proj.weight.uniform_(-std, std, generator=generator)
        self.dt_proj.bias.copy_(dt_bias_init(self.d_inner, generator, self.D.device))
        self.A_log.copy_(torch.log(torch.arange(1, self.d_state + 1, dtype=torch.float32)).expand_as(self.A_log))
        self.D.fill_(1.0)


class QuantMamba1Mixer(nn.Module):
    """The W8A8 Mamba1 mixer as the deployed graph computes it (Quamba's dataflow), from op references:

    in_proj (int8 GEMM) -> x, z quantized -> CausalConv1d (int8, SiLU) -> u -> x_proj (int8 GEMM)
    -> dt_r, B, C quantized -> dt_proj (int8 GEMM) -> dt quantized -> SelectiveScan (int8 in, fp16
    out, gate fused) -> HadamardQuant (or a plain quantize) -> out_proj (int8 GEMM).

    Activation scales are named after the fp mixer's observation sites (``<site>_scale``).
    """

    def __init__(self, config: Mamba1Config, *, act_dtype=torch.float16, state_dtype=torch.float16, device=None,
                 weight_bits: int = 8, group_size: int = 128):  # fmt: skip
        super().__init__()
        c = self.c = config
        self.act_dtype, self.state_dtype = act_dtype, state_dtype
        # 4-bit recipes: in_proj, x_proj and out_proj int4 (W4A8 GEMMs); dt_proj stays int8, its
        # K = dt_rank (12, 48, 160, ...) does not hold the layout's groups of 32 or more
        w4 = {"weight_bits": weight_bits, "group_size": group_size, "device": device, "out_dtype": act_dtype}
        self.in_proj = linear_layout(c.d_model, 2 * c.d_inner, c.proj_bias, **w4)
        self.register_buffer("conv_weight", torch.zeros(c.d_inner, c.d_conv, dtype=torch.int8, device=device))
        self.register_buffer("conv_weight_scale", torch.ones(c.d_inner, device=device))
        self.register_buffer("conv_bias", torch.zeros(c.d_inner, device=device) if c.conv_bias else None)
        self.x_proj = linear_layout(c.d_inner, c.dt_rank + 2 * c.d_state, False, **w4)
        self.dt_proj = QuantLinear(c.dt_rank, c.d_inner, False, device)
        self.register_buffer("dt_bias", torch.zeros(c.d_inner, device=device))
        self.register_buffer("A_log", torch.zeros(c.d_inner, c.d_state, device=device))
        self.register_buffer("D", torch.zeros(c.d_inner, device=device))
        self.out_proj = linear_layout(c.d_inner, c.d_model, c.proj_bias, **w4)
        self.register_buffer("gate_smooth", torch.ones(c.d_inner, device=device))  # ones: plain SiLU
        for site in ("x", "z", "u", "dt_r", "B", "C", "dt", "out_proj.input"):
            scale_buffer(self, _scale_name(site))
        self.out_hadamard = False

    @classmethod
    def from_fp(cls, fp: Mamba1Mixer, scales: dict[str, float], *, per_channel=True, weight_bits: int = 8,
                group_size: int = 128, linears: dict | None = None, **kw) -> QuantMamba1Mixer:  # fmt: skip
        """``linears``: 4-bit layers the quantizer made (GPTQ), by name; the others are rounded to nearest."""
        q = cls(fp.c, device=fp.D.device, weight_bits=weight_bits, group_size=group_size, **kw)
        given = linears or {}
        w = {"weight_bits": weight_bits, "group_size": group_size, "per_channel": per_channel, "out_dtype": q.act_dtype}
        q.in_proj = quant_linear(fp.in_proj.weight, fp.in_proj.bias, given=given.get("in_proj"), **w)
        q.conv_weight, q.conv_weight_scale = rtn_int8(fp.conv1d.weight[:, 0], per_channel)
        if fp.conv1d.bias is not None:
            q.conv_bias = fp.conv1d.bias.detach().float().clone()
        q.x_proj = quant_linear(fp.x_proj.weight, None, given=given.get("x_proj"), **w)
        q.dt_proj = QuantLinear.from_weight(fp.dt_proj.weight, None, per_channel)
        q.dt_bias = fp.dt_proj.bias.detach().float().clone()
        q.A_log, q.D = fp.A_log.detach().float().clone(), fp.D.detach().float().clone()
        q.out_proj = quant_linear(fp.out_proj.weight, fp.out_proj.bias, given=given.get("out_proj"), **w)
        if fp.gate_smooth is not None:
            q.gate_smooth = fp.gate_smooth.detach().float().clone()
        for site, value in scales.items():
            if site != "in_proj.input":
                fit_scale(value, getattr(q, _scale_name(site)))
        q.out_hadamard = fp.out_hadamard
        return q

    def init_state(self, batch: int, device=None) -> LayerState:
        c = self.c
        return LayerState(
            torch.zeros(batch, c.d_conv - 1, c.d_inner, dtype=torch.int8, device=device),
            torch.zeros(batch, c.d_inner, c.d_state, dtype=self.state_dtype, device=device),
        )

    def forward(self, x_q, x_scale, state):
        c = self.c
        x, z = self.in_proj(x_q, x_scale).split(c.d_inner, dim=-1)
        x_q, z_q = quantize(x, self.x_scale), quantize(z, self.z_scale)
        u_q, conv_state = causal_conv1d_quant(
            x_q, self.conv_weight, self.conv_bias, state.conv,
            x_scale=self.x_scale, w_scale=self.conv_weight_scale, out_scale=self.u_scale,
        )  # fmt: skip
        dt_r, B, C = self.x_proj(u_q, self.u_scale).split([c.dt_rank, c.d_state, c.d_state], dim=-1)
        if c.bcdt_rms_eps is not None:
            dt_r, B, C = (rms_norm(t, None, c.bcdt_rms_eps) for t in (dt_r, B, C))
        dt = self.dt_proj(quantize(dt_r, self.dt_r_scale), self.dt_r_scale)
        y, ssm_state = selective_scan_quant(
            u_q, quantize(dt, self.dt_scale), -torch.exp(self.A_log), quantize(B, self.B_scale),
            quantize(C, self.C_scale), self.D, z_q, self.dt_bias, state.ssm, self.gate_smooth,
            u_scale=self.u_scale, dt_scale=self.dt_scale, B_scale=self.B_scale, C_scale=self.C_scale,
            z_scale=self.z_scale, out_dtype=self.act_dtype,
        )  # fmt: skip
        s = self.out_proj_input_scale
        y_q = hadamard_quant(y, out_scale=s) if self.out_hadamard else quantize(y.float(), s)
        return self.out_proj(y_q, s), LayerState(conv_state, ssm_state)


class QuantMamba1MixerFp(nn.Module):
    """The W4A16 Mamba1 mixer: 4-bit weights, fp16 activations through the whole mixer, from the
    op references' fp variants:

    in_proj (W4A16 GEMM) -> x, z -> CausalConv1dFp (SiLU) -> u -> x_proj (W4A16) -> dt_r, B, C ->
    dt_proj (fp16 GEMM: its K = dt_rank does not hold int4 groups) -> SelectiveScanFp (gate fused)
    -> Hadamard (fp16, when the recipe rotates out_proj's input) -> out_proj (W4A16).
    """

    def __init__(self, config: Mamba1Config, *, act_dtype=torch.float16, state_dtype=torch.float16, device=None,
                 group_size: int = 128):  # fmt: skip
        super().__init__()
        c = self.c = config
        self.act_dtype, self.state_dtype = act_dtype, state_dtype
        w4 = {"weight_bits": 4, "group_size": group_size, "device": device, "out_dtype": act_dtype}
        self.in_proj = linear_layout(c.d_model, 2 * c.d_inner, c.proj_bias, **w4)
        self.register_buffer("conv_weight", torch.zeros(c.d_inner, c.d_conv, dtype=act_dtype, device=device))
        # in the activation dtype: CausalConv1dFp takes every tensor in x's dtype, so the graph stores it so
        bias = torch.zeros(c.d_inner, dtype=act_dtype, device=device) if c.conv_bias else None
        self.register_buffer("conv_bias", bias)
        self.x_proj = linear_layout(c.d_inner, c.dt_rank + 2 * c.d_state, False, **w4)
        self.register_buffer("dt_proj_weight", torch.zeros(c.d_inner, c.dt_rank, dtype=act_dtype, device=device))
        self.register_buffer("dt_bias", torch.zeros(c.d_inner, device=device))
        self.register_buffer("A_log", torch.zeros(c.d_inner, c.d_state, device=device))
        self.register_buffer("D", torch.zeros(c.d_inner, device=device))
        self.out_proj = linear_layout(c.d_inner, c.d_model, c.proj_bias, **w4)
        self.out_hadamard = False

    @classmethod
    def from_fp(cls, fp: Mamba1Mixer, *, group_size: int = 128, linears: dict | None = None, **kw):
        if fp.gate_smooth is not None or fp.state_scale is not None:
            raise UnsupportedError(
                "the W4A16 Mamba1 mixer has no smoothed gate or state (SelectiveScanFp gates with SiLU)"
            )
        q = cls(fp.c, device=fp.D.device, group_size=group_size, **kw)
        given = linears or {}
        w = {"weight_bits": 4, "group_size": group_size, "out_dtype": q.act_dtype}
        q.in_proj = quant_linear(fp.in_proj.weight, fp.in_proj.bias, given=given.get("in_proj"), **w)
        q.conv_weight = fp.conv1d.weight[:, 0].detach().to(q.act_dtype).clone()
        if fp.conv1d.bias is not None:
            q.conv_bias = fp.conv1d.bias.detach().to(q.act_dtype).clone()
        q.x_proj = quant_linear(fp.x_proj.weight, None, given=given.get("x_proj"), **w)
        q.dt_proj_weight = fp.dt_proj.weight.detach().to(q.act_dtype).clone()
        q.dt_bias = fp.dt_proj.bias.detach().float().clone()
        q.A_log, q.D = fp.A_log.detach().float().clone(), fp.D.detach().float().clone()
        q.out_proj = quant_linear(fp.out_proj.weight, fp.out_proj.bias, given=given.get("out_proj"), **w)
        q.out_hadamard = fp.out_hadamard
        return q

    def init_state(self, batch: int, device=None) -> LayerState:
        c = self.c
        return LayerState(
            torch.zeros(batch, c.d_conv - 1, c.d_inner, dtype=self.act_dtype, device=device),
            torch.zeros(batch, c.d_inner, c.d_state, dtype=self.state_dtype, device=device),
        )

    def forward(self, x, x_scale, state):
        """x: the block norm's fp output [b, l, d_model] (``x_scale`` unused: fp activations)."""
        c, act = self.c, self.act_dtype
        x, z = self.in_proj(x.to(act)).split(c.d_inner, dim=-1)
        u, conv_state = causal_conv1d_fp(x, self.conv_weight, self.conv_bias, state.conv)
        dt_r, B, C = self.x_proj(u).split([c.dt_rank, c.d_state, c.d_state], dim=-1)
        if c.bcdt_rms_eps is not None:
            dt_r, B, C = (rms_norm(t.float(), None, c.bcdt_rms_eps).to(act) for t in (dt_r, B, C))
        dt = F.linear(dt_r.float(), self.dt_proj_weight.float()).to(act)
        y, ssm_state = selective_scan_fp(u, dt, -torch.exp(self.A_log), B, C, self.D, z, self.dt_bias, state.ssm)
        if self.out_hadamard:
            y = hadamard_transform(y.float()).to(act)
        return self.out_proj(y), LayerState(conv_state, ssm_state)


def _scale_name(site: str) -> str:
    return site.replace(".", "_") + "_scale"


class Mamba1Adapter(ArchAdapter):
    arch = "mamba1"
    config_cls = Mamba1Config
    hf_model_types = ("mamba", "falcon_mamba")
    # in_proj input; its outputs x and z; the conv output u (the SSM input); x_proj's dt_r, B, C;
    # dt_proj's output dt (before bias and softplus); out_proj's input
    sites = ("in_proj.input", "x", "z", "u", "dt_r", "B", "C", "dt", "out_proj.input")
    site_roles = {"ssm_input": "u"}
    ssm_layers = ("Mamba1",)

    def config_from_hf(self, cfg: dict[str, Any]) -> Mamba1Config:
        r = ConfigReader(cfg, "config.json")
        require_silu(r)
        d_model = r.int("hidden_size")
        falcon = cfg.get("model_type") == "falcon_mamba"
        config = Mamba1Config(
            d_model=d_model,
            n_layer=r.int("num_hidden_layers"),
            vocab_size=padded_vocab(r.int("vocab_size"), r.int("pad_vocab_size_multiple", 1)),
            # transformers derives the width from expand and ignores intermediate_size
            d_inner=r.int("expand", 2) * d_model,
            d_state=r.int("state_size", 16),
            d_conv=r.int("conv_kernel", 4),
            dt_rank=r.rank("time_step_rank", d_model),
            conv_bias=r.bool("use_conv_bias", True),
            proj_bias=r.bool("use_bias", False),
            norm_eps=r.float("layer_norm_epsilon", 1e-5),
            residual_in_fp32=r.bool("residual_in_fp32", True),
            tie_embeddings=r.bool("tie_word_embeddings", True),
            bcdt_rms_eps=r.float("mixer_rms_eps", 1e-6) if falcon else None,
        )
        config.validate()
        return config

    def config_from_mamba_ssm(self, cfg, ssm_cfg) -> Mamba1Config:
        r, s = ConfigReader(cfg, "config.json"), ConfigReader(ssm_cfg, "config.json ssm_cfg")
        d_model = r.int("d_model")
        config = Mamba1Config(
            d_model=d_model,
            n_layer=r.int("n_layer"),
            vocab_size=padded_vocab(r.int("vocab_size"), r.int("pad_vocab_size_multiple", 8)),
            d_inner=s.int("expand", 2) * d_model,
            d_state=s.int("d_state", 16),
            d_conv=s.int("d_conv", 4),
            dt_rank=s.rank("dt_rank", d_model),
            conv_bias=s.bool("conv_bias", True),
            proj_bias=s.bool("bias", False),
            norm_eps=r.float("norm_epsilon", 1e-5),
            residual_in_fp32=r.bool("residual_in_fp32", True),
            tie_embeddings=r.bool("tie_embeddings", True),
        )
        config.validate()
        return config

    def hf_config(self, config: Mamba1Config) -> dict[str, Any]:
        falcon = config.bcdt_rms_eps is not None
        out = {
            "model_type": "falcon_mamba" if falcon else "mamba",
            "architectures": ["FalconMambaForCausalLM" if falcon else "MambaForCausalLM"],
            "vocab_size": config.vocab_size,
            "hidden_size": config.d_model,
            "state_size": config.d_state,
            "num_hidden_layers": config.n_layer,
            "expand": config.d_inner // config.d_model,
            "intermediate_size": config.d_inner,
            "conv_kernel": config.d_conv,
            "time_step_rank": config.dt_rank,
            "use_bias": config.proj_bias,
            "use_conv_bias": config.conv_bias,
            "layer_norm_epsilon": config.norm_eps,
            "residual_in_fp32": config.residual_in_fp32,
            "tie_word_embeddings": config.tie_embeddings,
            "hidden_act": "silu",
        }
        if falcon:
            out["mixer_rms_eps"] = config.bcdt_rms_eps
        return out

    def mamba_ssm_config(self, config: Mamba1Config) -> dict[str, Any]:
        if config.bcdt_rms_eps is not None:
            raise CheckpointError("FalconMamba has no mamba_ssm format; save it in Hugging Face format")
        return {
            "d_model": config.d_model,
            "d_intermediate": 0,
            "n_layer": config.n_layer,
            "vocab_size": config.vocab_size,
            "ssm_cfg": {
                "layer": "Mamba1",
                "d_state": config.d_state,
                "d_conv": config.d_conv,
                "expand": config.d_inner // config.d_model,
                "dt_rank": config.dt_rank,
                "conv_bias": config.conv_bias,
                "bias": config.proj_bias,
            },
            "rms_norm": True,
            "residual_in_fp32": config.residual_in_fp32,
            "fused_add_norm": True,
            "pad_vocab_size_multiple": 1,
            "tie_embeddings": config.tie_embeddings,
            "norm_epsilon": config.norm_eps,
        }

    def mixer(self, config, *, dtype, device):
        return Mamba1Mixer(config, dtype=dtype, device=device)

    # 4-bit recipes' int4 GEMMs and the activation site each one reads (GPTQ's Hessian inputs)
    int4_linears = {"in_proj": "in_proj.input", "x_proj": "u", "out_proj": "out_proj.input"}

    quant_mixer_cls = QuantMamba1Mixer
    quant_mixer_fp_cls = QuantMamba1MixerFp

    def state_shapes(self, config, batch):
        return (batch, config.d_conv - 1, config.conv_dim), (batch, config.d_inner, config.d_state)
