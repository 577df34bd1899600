"""Mamba2: config, mixer (SSD with heads and groups, gated RMSNorm) and state."""

from __future__ import annotations

import math
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
from jetmamba.calibration.functional import causal_conv1d, gated_rms_norm, ssd_scan, ssd_state_update
from jetmamba.calibration.hadamard import hadamard_transform
from jetmamba.calibration.qlayers import fit_scale, linear_layout, quant_linear, rtn_int8, scale_buffer
from jetmamba.compiler.ops.quant import quantize
from jetmamba.compiler.ops.reference import (
    causal_conv1d_fp,
    causal_conv1d_quant,
    gated_rms_norm_fp,
    gated_rms_norm_quant,
    ssd_scan_fp,
    ssd_scan_quant,
)
from jetmamba.errors import CheckpointError, UnsupportedError


@dataclass(frozen=True, kw_only=True)
class Mamba2Config(ModelConfig):
    arch = "mamba2"
    n_heads: int
    head_dim: int
    n_groups: int = 1
    chunk_size: int = 256
    dt_min: float = 0.0  # dt is clamped to [dt_min, dt_max] after softplus (dt_limit)
    dt_max: float | None = None  # None: no upper bound
    gate_norm_eps: float | None = None  # epsilon of the gated RMSNorm; None: norm_eps

    @property
    def conv_dim(self) -> int:
        return self.d_inner + 2 * self.n_groups * self.d_state

    @property
    def gate_eps(self) -> float:
        return self.norm_eps if self.gate_norm_eps is None else self.gate_norm_eps

    def validate(self) -> None:
        super().validate()
        if self.n_heads * self.head_dim != self.d_inner:
            raise CheckpointError(
                f"config: num_heads * head_dim ({self.n_heads} * {self.head_dim}) must equal "
                f"expand * hidden_size ({self.d_inner})"
            )
        if self.n_heads % self.n_groups:
            raise CheckpointError(f"config: n_groups ({self.n_groups}) must divide num_heads ({self.n_heads})")
        if self.dt_min < 0 or (self.dt_max is not None and self.dt_max <= self.dt_min):
            raise CheckpointError(f"config: bad time_step_limit ({self.dt_min}, {self.dt_max})")
        if max(self.dt_min, self.dt_max or 0.0) > torch.finfo(torch.float32).max:  # dt is clamped in fp32
            raise CheckpointError(f"config: time_step_limit ({self.dt_min}, {self.dt_max}) is beyond fp32's range")


class GatedRMSNorm(nn.Module):
    """Mamba2's ``norm``: RMSNorm(y * silu(z)) per SSD group."""

    def __init__(self, dim: int, eps: float, group_size: int, *, dtype=None, device=None):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim, dtype=dtype, device=device))
        self.eps, self.group_size = eps, group_size

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return gated_rms_norm(y, z, self.weight, self.eps, self.group_size)


class Mamba2Mixer(Mixer):
    """in_proj -> (z, xBC, dt); xBC -> causal conv -> SiLU -> (x, B, C); SSD over heads with B, C
    per group; gated RMSNorm with z; out_proj. Names and shapes as transformers and mamba_ssm."""

    def __init__(self, config: Mamba2Config, *, dtype: torch.dtype, device=None):
        super().__init__()
        kw = {"dtype": dtype, "device": device}
        c = config
        self.c = c
        self.in_proj = nn.Linear(c.d_model, c.d_inner + c.conv_dim + c.n_heads, bias=c.proj_bias, **kw)
        self.conv1d = nn.Conv1d(c.conv_dim, c.conv_dim, c.d_conv, groups=c.conv_dim, bias=c.conv_bias, **kw)
        f32 = {"dtype": torch.float32, "device": device}
        self.dt_bias = nn.Parameter(torch.zeros(c.n_heads, **f32))
        self.A_log = nn.Parameter(torch.zeros(c.n_heads, **f32))
        self.D = nn.Parameter(torch.ones(c.n_heads, **f32))
        self.norm = GatedRMSNorm(c.d_inner, c.gate_eps, c.d_inner // c.n_groups, **kw)
        self.out_proj = nn.Linear(c.d_inner, c.d_model, bias=c.proj_bias, **kw)
        self.x_clusters: torch.Tensor | None = None  # set by Quamba2's reordering: cluster id per x channel

    def channel_groups(self, site: str, kind: str) -> torch.Tensor:
        """Group id of every channel of ``site`` for per-group scales: ``ssd_group`` (B, C: one scale
        per SSD group) or ``clusters`` (x: Quamba2's head/channel clusters, after reordering)."""
        c = self.c
        if kind == "ssd_group" and site in ("B", "C"):
            return torch.arange(c.n_groups * c.d_state) // c.d_state
        if kind == "clusters" and site == "x":
            if self.x_clusters is None:
                raise UnsupportedError("per-cluster x scales need Quamba2's reordering first")
            return self.x_clusters.cpu()
        raise UnsupportedError(f"Mamba2 has no {kind!r} grouping of {site!r}")

    def smooth_out_proj_input(self, s: torch.Tensor) -> None:
        """out_proj's input is the gated norm's output: its weight / s, out_proj columns * s."""
        if self.out_hadamard:
            raise UnsupportedError("smoothing must come before the Hadamard on out_proj's input")
        s = s.double().to(self.D.device)
        with torch.no_grad():
            self.norm.weight.copy_((self.norm.weight.double() / s).to(self.norm.weight.dtype))
            self.out_proj.weight.copy_((self.out_proj.weight.double() * s).to(self.out_proj.weight.dtype))

    def _dt(self, dt: torch.Tensor) -> torch.Tensor:
        dt = F.softplus(dt.float() + self.dt_bias.float())
        return dt.clamp(min=self.c.dt_min, max=self.c.dt_max)

    def forward(self, h, state=None, scan_impl="auto"):
        c = self.c
        b, length, _ = h.shape
        z, xbc, dt = self.in_proj(self.site("in_proj.input", h)).split([c.d_inner, c.conv_dim, c.n_heads], dim=-1)
        z, xbc, dt = self.site("z", z), self.site("xBC", xbc), self.site("dt", dt)
        xbc, conv_state = causal_conv1d(
            xbc, self.conv1d.weight[:, 0], self.conv1d.bias, None if state is None else state.conv
        )
        xbc = xbc.to(h.dtype)
        x, B, C = xbc.split([c.d_inner, c.n_groups * c.d_state, c.n_groups * c.d_state], dim=-1)
        x, B, C = self.site("x", x), self.site("B", B), self.site("C", C)
        y, ssm_state = ssd_scan(
            x.view(b, length, c.n_heads, c.head_dim),
            self._dt(dt),
            -torch.exp(self.A_log.float()),
            B.view(b, length, c.n_groups, c.d_state),
            C.view(b, length, c.n_groups, c.d_state),
            self.D,
            None if state is None else state.ssm,
            impl="chunked" if scan_impl == "parallel" else scan_impl,
        )
        y = self.norm(self.site("y", y.reshape(b, length, c.d_inner)), z)
        return self.out_proj(self.rotate_out(y).to(h.dtype)), LayerState(conv_state.to(h.dtype), ssm_state)

    def step(self, h, state):
        c = self.c
        b = h.shape[0]
        z, xbc, dt = self.in_proj(h).split([c.d_inner, c.conv_dim, c.n_heads], dim=-1)
        xbc, conv_state = causal_conv1d(xbc.unsqueeze(1), self.conv1d.weight[:, 0], self.conv1d.bias, state.conv)
        x, B, C = xbc.squeeze(1).to(h.dtype).split([c.d_inner, c.n_groups * c.d_state, c.n_groups * c.d_state], dim=-1)
        y, ssm_state = ssd_state_update(
            x.view(b, c.n_heads, c.head_dim),
            self._dt(dt),
            -torch.exp(self.A_log.float()),
            B.view(b, c.n_groups, c.d_state),
            C.view(b, c.n_groups, c.d_state),
            self.D,
            state.ssm,
        )
        y = self.norm(y.reshape(b, c.d_inner), z)
        return self.out_proj(self.rotate_out(y).to(h.dtype)), LayerState(conv_state.to(h.dtype), ssm_state.float())

    @torch.no_grad()
    def reset_parameters(self, generator):
        for lin in (self.in_proj, self.out_proj):
            init_linear_(lin, generator)
        init_conv_(self.conv1d, generator)
        self.dt_bias.copy_(dt_bias_init(self.c.n_heads, generator, self.D.device))
        self.A_log.copy_(torch.log(torch.arange(1, self.c.n_heads + 1, dtype=torch.float32)))
        self.D.fill_(1.0)
        self.norm.weight.fill_(1.0)


class QuantMamba2Mixer(nn.Module):
    """The W8A8 Mamba2 mixer as the deployed graph computes it, from op references:

    in_proj (int8 GEMM) -> z, xBC quantized, dt kept fp16 -> CausalConv1d (int8, SiLU; x scaled per
    channel, B and C per SSD group) -> SSDScan (int8 x, B, C; fp16 out) -> GatedRMSNormQuant
    (int8 gate, optional Hadamard, int8 out) -> out_proj (int8 GEMM).

    Scale buffers have one layout for every recipe: ``x_scale`` [d_inner], ``B_scale`` and
    ``C_scale`` [n_groups], the others per tensor; a per-tensor recipe fills them with one value.
    """

    def __init__(self, config: Mamba2Config, *, act_dtype=torch.float16, state_dtype=torch.float16, device=None,
                 weight_bits: int = 8, group_size: int = 128):  # fmt: skip
        super().__init__()
        c = self.c = config
        self.act_dtype, self.state_dtype = act_dtype, state_dtype
        w4 = {"weight_bits": weight_bits, "group_size": group_size, "device": device, "out_dtype": act_dtype}
        self.in_proj = linear_layout(c.d_model, c.d_inner + c.conv_dim + c.n_heads, c.proj_bias, **w4)
        self.register_buffer("conv_weight", torch.zeros(c.conv_dim, c.d_conv, dtype=torch.int8, device=device))
        self.register_buffer("conv_weight_scale", torch.ones(c.conv_dim, device=device))
        self.register_buffer("conv_bias", torch.zeros(c.conv_dim, device=device) if c.conv_bias else None)
        for name, n in (("dt_bias", c.n_heads), ("A_log", c.n_heads), ("D", c.n_heads), ("norm_weight", c.d_inner)):
            self.register_buffer(name, torch.zeros(n, device=device))
        self.out_proj = linear_layout(c.d_inner, c.d_model, c.proj_bias, **w4)
        self.register_buffer("x_scale", torch.ones(c.d_inner, device=device))
        self.register_buffer("B_scale", torch.ones(c.n_groups, device=device))
        self.register_buffer("C_scale", torch.ones(c.n_groups, device=device))
        for site in ("z", "xBC", "out_proj.input"):
            scale_buffer(self, site.replace(".", "_") + "_scale")
        self.out_hadamard = False

    @classmethod
    def from_fp(cls, fp: Mamba2Mixer, scales: dict, *, per_channel=True, weight_bits: int = 8, group_size: int = 128,
                linears: dict | None = None, **kw) -> QuantMamba2Mixer:  # fmt: skip
        """``linears``: 4-bit layers the quantizer made (GPTQ), by name; the others are rounded to nearest."""
        c = fp.c
        q = cls(c, device=fp.D.device, weight_bits=weight_bits, group_size=group_size, **kw)
        given = linears or {}
        w = {"weight_bits": weight_bits, "group_size": group_size, "per_channel": per_channel, "out_dtype": q.act_dtype}
        q.in_proj = quant_linear(fp.in_proj.weight, fp.in_proj.bias, given=given.get("in_proj"), **w)
        q.conv_weight, q.conv_weight_scale = rtn_int8(fp.conv1d.weight[:, 0], per_channel)
        if fp.conv1d.bias is not None:
            q.conv_bias = fp.conv1d.bias.detach().float().clone()
        for name, t in (("dt_bias", fp.dt_bias), ("A_log", fp.A_log), ("D", fp.D), ("norm_weight", fp.norm.weight)):
            setattr(q, name, t.detach().float().clone())
        q.out_proj = quant_linear(fp.out_proj.weight, fp.out_proj.bias, given=given.get("out_proj"), **w)
        for site, buf in (("x", "x_scale"), ("B", "B_scale"), ("C", "C_scale"), ("z", "z_scale"),
                          ("xBC", "xBC_scale"), ("out_proj.input", "out_proj_input_scale")):  # fmt: skip
            fit_scale(scales[site], getattr(q, buf))
        q.out_hadamard = fp.out_hadamard
        return q

    def init_state(self, batch: int, device=None) -> LayerState:
        c = self.c
        return LayerState(
            torch.zeros(batch, c.d_conv - 1, c.conv_dim, dtype=torch.int8, device=device),
            torch.zeros(batch, c.n_heads, c.head_dim, c.d_state, dtype=self.state_dtype, device=device),
        )

    def forward(self, x_q, x_scale, state):
        c = self.c
        b, length, _ = x_q.shape
        z, xbc, dt = self.in_proj(x_q, x_scale).split([c.d_inner, c.conv_dim, c.n_heads], dim=-1)
        z_q, xbc_q = quantize(z, self.z_scale), quantize(xbc, self.xBC_scale)
        n = c.d_state
        out_scale = torch.cat([self.x_scale, self.B_scale.repeat_interleave(n), self.C_scale.repeat_interleave(n)])
        conv_q, conv_state = causal_conv1d_quant(
            xbc_q, self.conv_weight, self.conv_bias, state.conv,
            x_scale=self.xBC_scale, w_scale=self.conv_weight_scale, out_scale=out_scale,
        )  # fmt: skip
        x, B, C = conv_q.split([c.d_inner, c.n_groups * n, c.n_groups * n], dim=-1)
        y, ssm_state = ssd_scan_quant(
            x, dt.to(self.act_dtype), -torch.exp(self.A_log),
            B.reshape(b, length, c.n_groups, n), C.reshape(b, length, c.n_groups, n), self.D, self.dt_bias,
            state.ssm, heads=c.n_heads, x_scale=self.x_scale, B_scale=self.B_scale, C_scale=self.C_scale,
            dt_min=c.dt_min,
            dt_max=float("inf") if c.dt_max is None else c.dt_max, out_dtype=self.act_dtype,
        )  # fmt: skip
        s = self.out_proj_input_scale
        y_q = gated_rms_norm_quant(
            y.reshape(b, length, c.d_inner), z_q, self.norm_weight, z_scale=self.z_scale, eps=c.gate_eps,
            group_size=c.d_inner // c.n_groups, out_scale=s, hadamard=int(self.out_hadamard),
        )  # fmt: skip
        return self.out_proj(y_q, s), LayerState(conv_state, ssm_state)


class QuantMamba2MixerFp(nn.Module):
    """The W4A16 Mamba2 mixer: 4-bit weights, fp16 activations through the whole mixer, from the
    op references' fp variants:

    in_proj (W4A16 GEMM) -> z, xBC, dt -> CausalConv1dFp (SiLU) -> x, B, C -> SSDScanFp ->
    GatedRMSNorm -> Hadamard (fp16, when the recipe rotates out_proj's input) -> out_proj (W4A16).
    """

    def __init__(self, config: Mamba2Config, *, act_dtype=torch.float16, state_dtype=torch.float16, device=None,
                 group_size: int = 128):  # fmt: skip
        super().__init__()
        c = self.c = config
        self.act_dtype, self.state_dtype = act_dtype, state_dtype
        w4 = {"weight_bits": 4, "group_size": group_size, "device": device, "out_dtype": act_dtype}
        self.in_proj = linear_layout(c.d_model, c.d_inner + c.conv_dim + c.n_heads, c.proj_bias, **w4)
        self.register_buffer("conv_weight", torch.zeros(c.conv_dim, c.d_conv, dtype=act_dtype, device=device))
        # in the activation dtype: CausalConv1dFp takes every tensor in x's dtype, so the graph stores it so
        bias = torch.zeros(c.conv_dim, dtype=act_dtype, device=device) if c.conv_bias else None
        self.register_buffer("conv_bias", bias)
        for name, n in (("dt_bias", c.n_heads), ("A_log", c.n_heads), ("D", c.n_heads), ("norm_weight", c.d_inner)):
            self.register_buffer(name, torch.zeros(n, device=device))
        self.out_proj = linear_layout(c.d_inner, c.d_model, c.proj_bias, **w4)
        self.out_hadamard = False

    @classmethod
    def from_fp(cls, fp: Mamba2Mixer, *, group_size: int = 128, linears: dict | None = None, **kw):
        q = cls(fp.c, device=fp.D.device, group_size=group_size, **kw)
        given = linears or {}
        w = {"weight_bits": 4, "group_size": group_size, "out_dtype": q.act_dtype}
        q.in_proj = quant_linear(fp.in_proj.weight, fp.in_proj.bias, given=given.get("in_proj"), **w)
        q.conv_weight = fp.conv1d.weight[:, 0].detach().to(q.act_dtype).clone()
        if fp.conv1d.bias is not None:
            q.conv_bias = fp.conv1d.bias.detach().to(q.act_dtype).clone()
        for name, t in (("dt_bias", fp.dt_bias), ("A_log", fp.A_log), ("D", fp.D), ("norm_weight", fp.norm.weight)):
            setattr(q, name, t.detach().float().clone())
        q.out_proj = quant_linear(fp.out_proj.weight, fp.out_proj.bias, given=given.get("out_proj"), **w)
        q.out_hadamard = fp.out_hadamard
        return q

    def init_state(self, batch: int, device=None) -> LayerState:
        c = self.c
        return LayerState(
            torch.zeros(batch, c.d_conv - 1, c.conv_dim, dtype=self.act_dtype, device=device),
            torch.zeros(batch, c.n_heads, c.head_dim, c.d_state, dtype=self.state_dtype, device=device),
        )

    def forward(self, x, x_scale, state):
        """x: the block norm's fp output [b, l, d_model] (``x_scale`` unused: fp activations)."""
        c, act = self.c, self.act_dtype
        b, length, _ = x.shape
        n = c.n_groups * c.d_state
        z, xbc, dt = self.in_proj(x.to(act)).split([c.d_inner, c.conv_dim, c.n_heads], dim=-1)
        xbc, conv_state = causal_conv1d_fp(xbc, self.conv_weight, self.conv_bias, state.conv)
        xs, B, C = xbc.split([c.d_inner, n, n], dim=-1)
        y, ssm_state = ssd_scan_fp(
            xs, dt, -torch.exp(self.A_log), B.reshape(b, length, c.n_groups, c.d_state),
            C.reshape(b, length, c.n_groups, c.d_state), self.D, self.dt_bias, state.ssm,
            heads=c.n_heads, dt_min=c.dt_min, dt_max=float("inf") if c.dt_max is None else c.dt_max,
        )  # fmt: skip
        y = gated_rms_norm_fp(y.reshape(b, length, c.d_inner), z, self.norm_weight, eps=c.gate_eps,
                              group_size=c.d_inner // c.n_groups)  # fmt: skip
        if self.out_hadamard:
            y = hadamard_transform(y.float()).to(act)
        return self.out_proj(y), LayerState(conv_state, ssm_state)


def _dt_limit(value: Any, where: str) -> tuple[float, float | None]:
    if value is None:
        return 0.0, None
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise CheckpointError(f"{where}: time_step_limit / dt_limit must be a pair, got {value!r}")
    lo, hi = value
    if hi is None or (isinstance(hi, float) and math.isinf(hi)):
        hi = None
    try:
        return float(lo), None if hi is None else float(hi)
    except (TypeError, ValueError):
        raise CheckpointError(f"{where}: time_step_limit / dt_limit must hold numbers, got {value!r}") from None


class Mamba2Adapter(ArchAdapter):
    arch = "mamba2"
    config_cls = Mamba2Config
    hf_model_types = ("mamba2",)
    # in_proj input; its outputs z, xBC (conv input) and dt; the conv outputs x, B, C; the SSD
    # output y (before the gated norm); out_proj's input (after it)
    sites = ("in_proj.input", "z", "xBC", "dt", "x", "B", "C", "y", "out_proj.input")
    site_roles = {"ssm_input": "x"}
    ssm_layers = ("Mamba2",)

    def config_from_hf(self, cfg: dict[str, Any]) -> Mamba2Config:
        r = ConfigReader(cfg, "config.json")
        require_silu(r)
        d_model = r.int("hidden_size")
        lo, hi = _dt_limit(cfg.get("time_step_limit"), "config.json")
        config = Mamba2Config(
            d_model=d_model,
            n_layer=r.int("num_hidden_layers"),
            vocab_size=padded_vocab(r.int("vocab_size"), r.int("pad_vocab_size_multiple", 1)),
            d_inner=r.int("expand", 2) * d_model,
            d_state=r.int("state_size", 128),
            d_conv=r.int("conv_kernel", 4),
            n_heads=r.int("num_heads"),
            head_dim=r.int("head_dim", 64),
            n_groups=r.int("n_groups", 8),
            chunk_size=r.int("chunk_size", 256),
            conv_bias=r.bool("use_conv_bias", True),
            proj_bias=r.bool("use_bias", False),
            norm_eps=r.float("layer_norm_epsilon", 1e-5),
            residual_in_fp32=r.bool("residual_in_fp32", True),
            tie_embeddings=r.bool("tie_word_embeddings", False),  # transformers' Mamba2 default
            dt_min=lo,
            dt_max=hi,
        )
        config.validate()
        return config

    def config_from_mamba_ssm(self, cfg, ssm_cfg) -> Mamba2Config:
        r, s = ConfigReader(cfg, "config.json"), ConfigReader(ssm_cfg, "config.json ssm_cfg")
        s.unsupported("rmsnorm", True, "Mamba2 without its gated RMSNorm is not supported")
        s.unsupported("norm_before_gate", False, "only norm_before_gate=false (every released model) is supported")
        s.unsupported("D_has_hdim", False, "a D per channel is not supported")
        d_model = r.int("d_model")
        d_inner = s.int("expand", 2) * d_model
        s.unsupported("d_ssm", d_inner, "an SSM narrower than d_inner (d_ssm) is not supported")
        head_dim = s.int("headdim", 64)
        if d_inner % head_dim:
            raise CheckpointError(f"config.json ssm_cfg: headdim {head_dim} does not divide d_inner {d_inner}")
        lo, hi = _dt_limit(ssm_cfg.get("dt_limit"), "config.json ssm_cfg")
        config = Mamba2Config(
            d_model=d_model,
            n_layer=r.int("n_layer"),
            vocab_size=padded_vocab(r.int("vocab_size"), r.int("pad_vocab_size_multiple", 8)),
            d_inner=d_inner,
            d_state=s.int("d_state", 128),
            d_conv=s.int("d_conv", 4),
            n_heads=d_inner // head_dim,
            head_dim=head_dim,
            n_groups=s.int("ngroups", 1),
            chunk_size=s.int("chunk_size", 256),
            conv_bias=s.bool("conv_bias", True),
            proj_bias=s.bool("bias", False),
            norm_eps=r.float("norm_epsilon", 1e-5),
            gate_norm_eps=1e-5,  # mamba_ssm's Mamba2 fixes its RMSNormGated epsilon
            residual_in_fp32=r.bool("residual_in_fp32", True),
            tie_embeddings=r.bool("tie_embeddings", True),
            dt_min=lo,
            dt_max=hi,
        )
        config.validate()
        return config

    def hf_config(self, config: Mamba2Config) -> dict[str, Any]:
        if config.gate_norm_eps is not None and config.gate_norm_eps != config.norm_eps:
            raise UnsupportedError(
                "transformers' Mamba2 uses one epsilon for both norms; this model has two "
                f"({config.norm_eps}, {config.gate_norm_eps}); save it in mamba_ssm format"
            )
        return {
            "model_type": "mamba2",
            "architectures": ["Mamba2ForCausalLM"],
            "vocab_size": config.vocab_size,
            "hidden_size": config.d_model,
            "state_size": config.d_state,
            "num_hidden_layers": config.n_layer,
            "expand": config.d_inner // config.d_model,
            "conv_kernel": config.d_conv,
            "num_heads": config.n_heads,
            "head_dim": config.head_dim,
            "n_groups": config.n_groups,
            "chunk_size": config.chunk_size,
            "use_bias": config.proj_bias,
            "use_conv_bias": config.conv_bias,
            "layer_norm_epsilon": config.norm_eps,
            "residual_in_fp32": config.residual_in_fp32,
            "tie_word_embeddings": config.tie_embeddings,
            "time_step_limit": [config.dt_min, float("inf") if config.dt_max is None else config.dt_max],
            "hidden_act": "silu",
        }

    def mamba_ssm_config(self, config: Mamba2Config) -> dict[str, Any]:
        if config.gate_eps != 1e-5:
            raise UnsupportedError(
                f"mamba_ssm's Mamba2 fixes the gated norm epsilon at 1e-5; this model uses {config.gate_eps}; "
                "save it in Hugging Face format"
            )
        return {
            "d_model": config.d_model,
            "d_intermediate": 0,
            "n_layer": config.n_layer,
            "vocab_size": config.vocab_size,
            "ssm_cfg": {
                "layer": "Mamba2",
                "d_state": config.d_state,
                "d_conv": config.d_conv,
                "expand": config.d_inner // config.d_model,
                "headdim": config.head_dim,
                "ngroups": config.n_groups,
                "chunk_size": config.chunk_size,
                "conv_bias": config.conv_bias,
                "bias": config.proj_bias,
                "dt_limit": [config.dt_min, float("inf") if config.dt_max is None else config.dt_max],
            },
            "attn_layer_idx": [],
            "attn_cfg": {},
            "rms_norm": True,
            "residual_in_fp32": config.residual_in_fp32,
            "fused_add_norm": True,
            "pad_vocab_size_multiple": 1,
            "tie_embeddings": config.tie_embeddings,
            "norm_epsilon": config.norm_eps,
        }

    def mixer(self, config, *, dtype, device):
        return Mamba2Mixer(config, dtype=dtype, device=device)

    # 4-bit recipes' int4 GEMMs and the activation site each one reads (GPTQ's Hessian inputs)
    int4_linears = {"in_proj": "in_proj.input", "out_proj": "out_proj.input"}

    quant_mixer_cls = QuantMamba2Mixer
    quant_mixer_fp_cls = QuantMamba2MixerFp

    def state_shapes(self, config, batch):
        return (
            (batch, config.d_conv - 1, config.conv_dim),
            (batch, config.n_heads, config.head_dim, config.d_state),
        )
