"""Architecture adapters, one per Mamba family, and the lookups that choose one."""

from __future__ import annotations

from typing import Any

from jetmamba.calibration.arch.base import ArchAdapter, LayerState, Mixer, ModelConfig
from jetmamba.calibration.arch.mamba1 import Mamba1Adapter, Mamba1Config
from jetmamba.calibration.arch.mamba2 import Mamba2Adapter, Mamba2Config
from jetmamba.errors import CheckpointError, UnsupportedError

ADAPTERS: tuple[ArchAdapter, ...] = (Mamba1Adapter(), Mamba2Adapter())


def adapter_for(config_or_arch: ModelConfig | str) -> ArchAdapter:
    arch = config_or_arch if isinstance(config_or_arch, str) else config_or_arch.arch
    for adapter in ADAPTERS:
        if adapter.arch == arch:
            return adapter
    raise UnsupportedError(f"unknown architecture {arch!r}; supported: {', '.join(a.arch for a in ADAPTERS)}")


def adapter_for_hf_model_type(model_type: str) -> ArchAdapter:
    for adapter in ADAPTERS:
        if model_type in adapter.hf_model_types:
            return adapter
    known = ", ".join(t for a in ADAPTERS for t in a.hf_model_types)
    raise UnsupportedError(f"config.json: model_type {model_type!r} is not a Mamba model; supported: {known}")


def adapter_for_ssm_layer(layer: str) -> ArchAdapter:
    for adapter in ADAPTERS:
        if layer in adapter.ssm_layers:
            return adapter
    known = ", ".join(t for a in ADAPTERS for t in a.ssm_layers)
    raise UnsupportedError(f"config.json ssm_cfg: layer {layer!r} is not supported; supported: {known}")


def config_from_dict(d: dict[str, Any]) -> ModelConfig:
    """Read jetmamba's own saved config (``ModelConfig.to_dict()``)."""
    if not isinstance(d, dict) or "arch" not in d:
        raise CheckpointError("model config: missing 'arch'")
    if not isinstance(d["arch"], str):
        raise CheckpointError(f"model config: 'arch' must be a string, got {d['arch']!r}")
    return adapter_for(d["arch"]).config_from_dict(d)


__all__ = [
    "ADAPTERS",
    "ArchAdapter",
    "LayerState",
    "Mamba1Config",
    "Mamba2Config",
    "Mixer",
    "ModelConfig",
    "adapter_for",
    "adapter_for_hf_model_type",
    "adapter_for_ssm_layer",
    "config_from_dict",
]
