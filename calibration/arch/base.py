"""What every Mamba architecture adapter provides, and the pieces they share.

An adapter owns everything that differs between architecture families: reading its configs
(Hugging Face and mamba_ssm formats), writing them back, its mixer module and the shapes of its
recurrent state. The rest of jetmamba (model, loader, evaluation, later the compiler) talks to
adapters through this interface, never through ``if arch == ...`` chains.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from jetmamba.calibration.functional import rms_norm
from jetmamba.errors import CheckpointError, UnsupportedError


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Fields every Mamba language model has; saved beside every artifact as ``to_dict()``."""

    arch: ClassVar[str] = ""
    d_model: int
    n_layer: int
    vocab_size: int  # rows of the embedding and logits, after pad_vocab_size_multiple
    d_inner: int
    d_state: int
    d_conv: int = 4
    conv_bias: bool = True
    proj_bias: bool = False  # bias of in_proj and out_proj
    norm_eps: float = 1e-5
    residual_in_fp32: bool = True
    tie_embeddings: bool = True

    @property
    def conv_dim(self) -> int:
        """Channels of the depthwise convolution (and of the conv state)."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, **dataclasses.asdict(self)}

    def validate(self) -> None:
        """Types and ranges of every field, and the size bounds of :mod:`jetmamba.limits`: a config
        is data from elsewhere and must not make anything allocate before it is checked."""
        from jetmamba.limits import LIMITS, implied_parameters

        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.type in ("int",) and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise CheckpointError(f"config: {f.name} must be a positive integer, got {v!r}")
            if f.type in ("int",) and v > LIMITS.config_field(f.name):
                bound = LIMITS.config_field(f.name)
                raise CheckpointError(f"config: {f.name} = {v} is beyond jetmamba's bound of {bound} (no real model)")
            if f.type in ("bool",) and not isinstance(v, bool):
                raise CheckpointError(f"config: {f.name} must be true or false, got {v!r}")
            optional = f.type == "float | None" and v is None
            if (
                f.type in ("float", "float | None")
                and not optional
                and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v))
            ):
                raise CheckpointError(f"config: {f.name} must be a finite number, got {v!r}")
        if not (0 < self.norm_eps < 1):
            raise CheckpointError(f"config: norm epsilon must be in (0, 1), got {self.norm_eps!r}")
        n = implied_parameters(self.d_model, self.n_layer, self.vocab_size, self.d_inner, self.tie_embeddings)
        if n > LIMITS.parameters:
            raise CheckpointError(
                f"config: d_model {self.d_model}, n_layer {self.n_layer}, vocab_size {self.vocab_size} and d_inner "
                f"{self.d_inner} imply over {n:.3g} parameters, beyond jetmamba's bound of {LIMITS.parameters:.3g}"
            )


@dataclass
class LayerState:
    """Recurrent state of one layer: what prefill leaves and each decode step carries.

    conv: [b, d_conv - 1, conv_dim], the last inputs of the convolution, oldest first;
    ssm:  [b, d_inner, d_state] (Mamba1) or [b, n_heads, head_dim, d_state] (Mamba2), fp32.
    """

    conv: torch.Tensor
    ssm: torch.Tensor


class RMSNorm(nn.Module):
    """Block and final norm; parameter ``weight`` as in every Mamba checkpoint."""

    def __init__(self, dim: int, eps: float, *, dtype=None, device=None):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim, dtype=dtype, device=device))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class Mixer(nn.Module):
    """Interface of an architecture's mixer (the SSM half of a block).

    ``out_hadamard``: when set (by :func:`~jetmamba.calibration.transforms.hadamard_before_out_proj`),
    the input of ``out_proj`` is Hadamard-transformed online and ``out_proj`` holds H^T fused:
    the function is unchanged, the int8 input of ``out_proj`` loses its outlier channels.
    """

    out_hadamard: bool = False
    # Calibration hook: called as observe(site, tensor) at every activation a quantized graph would
    # quantize (the adapter's SITES); None, the default, costs nothing.
    observe: Callable[[str, torch.Tensor], None] | None = None

    def has_online_transforms(self) -> bool:
        """True when the mixer computes something no checkpoint format can express."""
        return any(
            [
                self.out_hadamard,
                getattr(self, "gate_smooth", None) is not None,
                getattr(self, "state_scale", None) is not None,
            ]
        )

    def smooth_out_proj_input(self, s: torch.Tensor) -> None:
        """Divide out_proj's input by ``s`` (per channel) and multiply out_proj's columns by it,
        absorbing the division upstream where the architecture allows it exactly (MambaQuant's
        smoothing); must come before any Hadamard on out_proj's input."""
        raise NotImplementedError

    def site(self, name: str, t: torch.Tensor) -> torch.Tensor:
        if self.observe is not None:
            self.observe(name, t)
        return t

    def rotate_out(self, y: torch.Tensor) -> torch.Tensor:
        """out_proj's input: y, Hadamard-transformed when ``out_hadamard``; observed as ``out_proj.input``."""
        if self.out_hadamard:
            from jetmamba.calibration.hadamard import hadamard_transform

            y = hadamard_transform(y.float()).to(y.dtype)
        return self.site("out_proj.input", y)

    def forward(
        self, h: torch.Tensor, state: LayerState | None = None, scan_impl: str = "auto"
    ) -> tuple[torch.Tensor, LayerState]:
        """Sequence path. h: [b, l, d_model] -> ([b, l, d_model], state after the last token)."""
        raise NotImplementedError

    def step(self, h: torch.Tensor, state: LayerState) -> tuple[torch.Tensor, LayerState]:
        """Decode path, one token. h: [b, d_model] -> ([b, d_model], next state)."""
        raise NotImplementedError

    def reset_parameters(self, generator: torch.Generator) -> None:
        """The architecture's standard initialisation (for models trained from scratch)."""
        raise NotImplementedError


# ---------------------------------------------------------------- initialisation helpers


@torch.no_grad()
def init_linear_(lin: nn.Linear, generator: torch.Generator) -> None:
    """PyTorch's default Linear initialisation, seeded; biases zero."""
    bound = 1 / math.sqrt(lin.in_features)
    lin.weight.uniform_(-bound, bound, generator=generator)
    if lin.bias is not None:
        lin.bias.zero_()


@torch.no_grad()
def init_conv_(conv: nn.Conv1d, generator: torch.Generator) -> None:
    """PyTorch's default depthwise Conv1d initialisation (fan-in = kernel width), seeded."""
    bound = 1 / math.sqrt(conv.weight.shape[-1])
    conv.weight.uniform_(-bound, bound, generator=generator)
    if conv.bias is not None:
        conv.bias.uniform_(-bound, bound, generator=generator)


def dt_bias_init(n: int, generator: torch.Generator, device, dt_min: float = 1e-3, dt_max: float = 0.1):
    """Biases whose softplus is a step log-uniform in [dt_min, dt_max] (Mamba's dt initialisation)."""
    u = torch.rand(n, generator=generator, device=device)
    dt = torch.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=1e-4)
    return dt + torch.log(-torch.expm1(-dt))  # inverse softplus


class ArchAdapter:
    """One per architecture family; see the module docstring."""

    arch: str
    config_cls: type[ModelConfig]
    hf_model_types: tuple[str, ...]  # config.json "model_type" values it reads
    sites: tuple[str, ...]  # the mixer's observation points, in the order the forward reaches them
    site_roles: dict[str, str]  # what recipes name -> this family's site (e.g. "ssm_input" -> "u")
    ssm_layers: tuple[str, ...]  # mamba_ssm ssm_cfg "layer" values it reads
    int4_linears: dict[str, str]  # 4-bit recipes: the mixer's int4 GEMMs -> the site each one reads
    quant_mixer_cls: type  # the quantized mixer with int8 activations (8- or 4-bit weights)
    quant_mixer_fp_cls: type  # the W4A16 mixer: fp16 activations, 4-bit weights

    def quantized_mixer(self, config, recipe, *, act_dtype, device=None, act_bits=8):
        """An empty quantized mixer of this family (filled by loading a QuantizedModel)."""
        bits, group = recipe.get("weight_bits", 8), recipe.get("group_size", 128)
        if act_bits == 16:
            return self.quant_mixer_fp_cls(config, act_dtype=act_dtype, device=device, group_size=group)
        return self.quant_mixer_cls(config, act_dtype=act_dtype, device=device, weight_bits=bits, group_size=group)

    def quantize_mixer(self, fp_mixer, scales, recipe, *, act_dtype, act_bits=8, linears=None):
        """The quantized twin of ``fp_mixer`` from calibrated ``scales`` (and GPTQ's ``linears``)."""
        group = recipe.get("group_size", 128)
        if act_bits == 16:
            return self.quant_mixer_fp_cls.from_fp(fp_mixer, group_size=group, linears=linears, act_dtype=act_dtype)
        return self.quant_mixer_cls.from_fp(
            fp_mixer, scales, per_channel=recipe["per_channel_weights"], act_dtype=act_dtype,
            weight_bits=recipe.get("weight_bits", 8), group_size=group, linears=linears,
        )  # fmt: skip

    def config_from_hf(self, cfg: dict[str, Any]) -> ModelConfig:
        raise NotImplementedError

    def config_from_mamba_ssm(self, cfg: dict[str, Any], ssm_cfg: dict[str, Any]) -> ModelConfig:
        raise NotImplementedError

    def hf_config(self, config: ModelConfig) -> dict[str, Any]:
        """config.json for transformers (model_type, architectures and the fields it reads)."""
        raise NotImplementedError

    def mamba_ssm_config(self, config: ModelConfig) -> dict[str, Any]:
        raise NotImplementedError

    def mixer(self, config: ModelConfig, *, dtype: torch.dtype, device) -> Mixer:
        raise NotImplementedError

    def state_shapes(self, config: ModelConfig, batch: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(conv state shape, ssm state shape) of one layer."""
        raise NotImplementedError

    def config_from_dict(self, d: dict[str, Any]) -> ModelConfig:
        """Inverse of ``ModelConfig.to_dict`` (jetmamba's own saved config)."""
        fields = {f.name for f in dataclasses.fields(self.config_cls)}
        unknown = sorted(set(d) - fields - {"arch"})
        if unknown:
            raise CheckpointError(f"{self.arch} config: unknown fields {unknown}")
        required = {f.name for f in dataclasses.fields(self.config_cls) if f.default is dataclasses.MISSING}
        missing = sorted(required - set(d))
        if missing:
            raise CheckpointError(f"{self.arch} config: missing fields {missing}")
        config = self.config_cls(**{k: v for k, v in d.items() if k != "arch"})
        config.validate()
        return config


# ---------------------------------------------------------------- config reading helpers


class ConfigReader:
    """Typed access to a config.json dict with one-line errors naming the key."""

    def __init__(self, cfg: dict[str, Any], where: str):
        self.cfg = cfg
        self.where = where

    def _get(self, key: str, default: Any, required: bool) -> Any:
        if key in self.cfg and self.cfg[key] is not None:
            return self.cfg[key]
        if required:
            raise CheckpointError(f"{self.where}: missing {key!r}")
        return default

    def int(self, key: str, default: int | None = None, *, minimum: int = 1) -> int:
        v = self._get(key, default, default is None)
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise CheckpointError(f"{self.where}: {key!r} must be an integer >= {minimum}, got {v!r}")
        return v

    def float(self, key: str, default: float | None = None) -> float:
        v = self._get(key, default, default is None)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
            raise CheckpointError(f"{self.where}: {key!r} must be a number, got {v!r}")
        return float(v)

    def bool(self, key: str, default: bool) -> bool:
        v = self._get(key, default, False)
        if not isinstance(v, bool):
            raise CheckpointError(f"{self.where}: {key!r} must be true or false, got {v!r}")
        return v

    def str(self, key: str, default: str) -> str:
        v = self._get(key, default, False)
        if not isinstance(v, str):
            raise CheckpointError(f"{self.where}: {key!r} must be a string, got {v!r}")
        return v

    def rank(self, key: str, d_model: int) -> int:
        """dt_rank / time_step_rank: an integer or "auto" (= ceil(d_model / 16))."""
        v = self._get(key, "auto", False)
        return math.ceil(d_model / 16) if v == "auto" else self.int(key)

    def unsupported(self, key: str, supported: Any, message: str) -> None:
        """Refuse a present option whose value jetmamba does not implement."""
        v = self.cfg.get(key, supported)
        if v is not None and v != supported:
            raise UnsupportedError(f"{self.where}: {key}={v!r}: {message}")


def padded_vocab(vocab_size: int, multiple: int) -> int:
    """mamba_ssm's pad_vocab_size_multiple: embedding rows rounded up to a multiple."""
    return vocab_size if vocab_size % multiple == 0 else vocab_size + multiple - vocab_size % multiple


def require_silu(reader: ConfigReader) -> None:
    act = reader.str("hidden_act", "silu")
    if act not in ("silu", "swish"):
        raise UnsupportedError(f"{reader.where}: hidden_act={act!r}: only silu is supported")
