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

    def state_shapes(self, config, batch):
        return (
            (batch, config.d_conv - 1, config.conv_dim),
            (batch, config.n_heads, config.head_dim, config.d_state),
        )
