"""Loading (and writing) Mamba checkpoints from local directories.

Formats read:

- Hugging Face: ``config.json`` with ``model_type`` ``mamba``, ``falcon_mamba`` or ``mamba2``,
  weights in ``model.safetensors``, sharded safetensors with an index, or ``pytorch_model.bin``
  (sharded or not);
- mamba_ssm's own (``state-spaces/mamba-*``, ``state-spaces/mamba2-*``): ``config.json`` with
  ``d_model``, ``n_layer``, ``ssm_cfg`` ... and ``pytorch_model.bin``.

A hub id (``org/name``) is accepted only when it is already in the local Hugging Face cache;
nothing is ever downloaded. The config is checked against the weights, tensor by tensor, before
any tensor data is read where the format allows (safetensors).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from jetmamba.atomic import atomic_directory
from jetmamba.calibration.arch import ModelConfig, adapter_for, adapter_for_hf_model_type, adapter_for_ssm_layer
from jetmamba.calibration.model import MambaLM
from jetmamba.calibration.tokenizer import Tokenizer, load_tokenizer
from jetmamba.calibration.weights import (
    PYTORCH_BIN,
    SAFETENSORS,
    TensorInfo,
    WeightFiles,
    find_weight_files,
    iter_tensors,
    read_tensor_infos,
)
from jetmamba.errors import CheckpointError, UnsupportedError
from jetmamba.limits import LIMITS
from jetmamba.progress import progress

CONFIG_FILE = "config.json"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class Checkpoint:
    """A checkpoint directory, read as far as its config and the list of weight files."""

    path: Path
    format: str  # "hf" | "mamba_ssm"
    config: ModelConfig
    weights: WeightFiles
    raw_config: dict[str, Any] = field(repr=False)

    def tokenizer(self, override: str | Path | None = None) -> Tokenizer:
        return load_tokenizer(self.path, self.config.vocab_size, override)


# ---------------------------------------------------------------- locating and reading configs


def resolve_model_dir(spec: str | os.PathLike) -> Path:
    """A local directory, or a hub id already in the local Hugging Face cache."""
    p = Path(spec).expanduser()
    if p.is_dir():
        return p
    if p.exists():
        raise CheckpointError(f"{spec}: not a directory; pass the checkpoint directory that holds {CONFIG_FILE}")
    if isinstance(spec, str) and _HUB_ID.match(spec) and not spec.startswith((".", "/")):
        return _from_hf_cache(spec)
    raise CheckpointError(f"{spec}: no such directory")


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, from the environment as huggingface_hub resolves it."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "huggingface" / "hub"


def _from_hf_cache(repo_id: str) -> Path:
    cache = hf_cache_dir()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, cache_dir=str(cache), local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached, or a cache we cannot read
        raise CheckpointError(
            f"{repo_id}: not a local directory and not in the local Hugging Face cache ({cache}); "
            "jetmamba never downloads: fetch the checkpoint elsewhere and pass its directory"
        ) from None


def read_config(directory: Path) -> tuple[ModelConfig, str, dict[str, Any]]:
    """(config, format, raw dict) from ``directory/config.json``."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory}: no {CONFIG_FILE}; is this a checkpoint directory?")
    try:
        size = path.stat().st_size
        if size > LIMITS.config_json_bytes:
            raise CheckpointError(f"{path}: {size} bytes is not a model config (jetmamba reads at most "
                                  f"{LIMITS.config_json_bytes})")  # fmt: skip
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({type(exc).__name__}: {_first_line(exc)})") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    raw = _special_floats(raw)
    try:
        return (*config_from_raw(raw), raw)
    except (CheckpointError, UnsupportedError) as exc:
        raise type(exc)(_naming_file(str(exc), path)) from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


def _naming_file(message: str, path: Path) -> str:
    """The adapters' messages say ``config.json: ...`` or ``config: ...``; the user gets the file's path."""
    if message.startswith(CONFIG_FILE):
        return f"{path}{message[len(CONFIG_FILE) :]}"
    if message.startswith("config: "):
        return f"{path}: {message[len('config: ') :]}"
    return f"{path}: {message}"


def _special_floats(value: Any) -> Any:
    """transformers >= 5 writes non-finite floats as {"__float__": "Infinity"}; older writers
    use the bare JSON extension Infinity, which json already reads."""
    if isinstance(value, dict):
        if set(value) == {"__float__"} and value["__float__"] in ("Infinity", "-Infinity", "NaN"):
            return float(value["__float__"].lower().replace("infinity", "inf"))
        return {k: _special_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_special_floats(v) for v in value]
    return value


def config_from_raw(raw: dict[str, Any]) -> tuple[ModelConfig, str]:
    """Detect the format of a config dict and read it with the right adapter."""
    if "model_type" in raw:
        if not isinstance(raw["model_type"], str):
            raise CheckpointError(f"config.json: model_type must be a string, got {raw['model_type']!r}")
        return adapter_for_hf_model_type(raw["model_type"]).config_from_hf(raw), "hf"
    if "d_model" in raw and "n_layer" in raw:
        _refuse_mamba_ssm_extras(raw)
        ssm_cfg = raw.get("ssm_cfg") or {}
        if not isinstance(ssm_cfg, dict):
            raise CheckpointError(f"config.json: ssm_cfg must be an object, got {ssm_cfg!r}")
        layer = ssm_cfg.get("layer", "Mamba1")
        return adapter_for_ssm_layer(layer).config_from_mamba_ssm(raw, ssm_cfg), "mamba_ssm"
    raise CheckpointError(
        "config.json is neither a Hugging Face Mamba config (no model_type) nor a mamba_ssm config "
        "(no d_model / n_layer)"
    )


def _refuse_mamba_ssm_extras(raw: dict[str, Any]) -> None:
    if raw.get("d_intermediate", 0):
        raise UnsupportedError("config.json: d_intermediate > 0 (MLP blocks between mixers) is not supported")
    if raw.get("attn_layer_idx"):
        raise UnsupportedError("config.json: attention layers (attn_layer_idx, hybrid models) are not supported")
    if raw.get("rms_norm", True) is not True:
        raise UnsupportedError("config.json: rms_norm=false (LayerNorm blocks) is not supported")


def open_checkpoint(spec: str | os.PathLike) -> Checkpoint:
    """Resolve, read the config, find the weight files; no tensor is loaded."""
    directory = resolve_model_dir(spec)
    config, fmt, raw = read_config(directory)
    return Checkpoint(directory, fmt, config, find_weight_files(directory), raw)


# ---------------------------------------------------------------- weights -> model


def _canonical_name(key: str) -> str:
    """Checkpoint tensor name -> MambaLM parameter name."""
    for prefix in ("backbone.", "model."):
        if key.startswith(prefix):
            key = key[len(prefix) :]
            break
    if key in ("embeddings.weight", "embedding.weight"):
        return "embedding.weight"
    return key


def expected_tensors(config: ModelConfig) -> dict[str, TensorInfo]:
    with torch.device("meta"):
        model = MambaLM(config)
    return {k: TensorInfo(v.dtype, tuple(v.shape)) for k, v in model.state_dict().items()}


def check_weights_match(
    expected: dict[str, TensorInfo], found: dict[str, tuple[int, ...]], config: ModelConfig
) -> dict[str, str]:
    """Match checkpoint names to model names; one-line error naming what disagrees.

    Returns {model name: checkpoint name}. An ``lm_head.weight`` beside tied embeddings is ignored
    (mamba_ssm saves both).
    """
    mapping: dict[str, str] = {}
    unexpected = []
    for key in found:
        name = _canonical_name(key)
        if name == "lm_head.weight" and config.tie_embeddings:
            continue
        if name in expected and name not in mapping:
            mapping[name] = key
        else:
            unexpected.append(key)
    missing = sorted(set(expected) - set(mapping))
    if missing:
        hint = " (the config says untied embeddings)" if "lm_head.weight" in missing else ""
        raise CheckpointError(
            f"weights lack {len(missing)} tensor(s) the config implies: {', '.join(missing[:4])}"
            f"{' ...' if len(missing) > 4 else ''}{hint}"
        )
    for name, key in mapping.items():
        want, got = expected[name].shape, tuple(found[key])
        if want != got:
            raise CheckpointError(
                f"config disagrees with the weights: {key} has shape {list(got)}, the config implies {list(want)}"
            )
    if unexpected:
        raise CheckpointError(
            f"weights hold {len(unexpected)} tensor(s) this {config.arch} config does not use: "
            f"{', '.join(sorted(unexpected)[:4])}{' ...' if len(unexpected) > 4 else ''}"
        )
    return mapping


def _counted(items, bar):
    for item in items:
        yield item
        bar.update(1)


def load_model(
    spec: str | os.PathLike | Checkpoint,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    scan_impl: str = "auto",
    show_progress: bool = False,
    compute_dtype: torch.dtype | None = None,
) -> MambaLM:
    """Load a checkpoint into a :class:`MambaLM` (eval mode) in ``dtype`` on ``device``.

    SSM parameters (A_log, D, dt_bias) stay fp32 whatever ``dtype`` is; ``compute_dtype`` runs each
    block in that dtype instead (weights stay in ``dtype``). ``show_progress`` shows a bar over the
    tensors on stderr (on a terminal), for checkpoints that take a while.
    """
    ckpt = spec if isinstance(spec, Checkpoint) else open_checkpoint(spec)
    config = ckpt.config
    expected = expected_tensors(config)
    infos = read_tensor_infos(ckpt.weights)
    bar = progress(total=len(expected), desc="loading weights", unit="tensor", disable=not show_progress)
    if infos is not None:  # safetensors: everything is checked before any data is read
        mapping = check_weights_match(expected, {k: v.shape for k, v in infos.items()}, config)
        wanted = set(mapping.values())
        tensors = dict(_counted(iter_tensors(ckpt.weights, wanted), bar))
    else:
        tensors = dict(_counted(iter_tensors(ckpt.weights), bar))
        mapping = check_weights_match(expected, {k: tuple(v.shape) for k, v in tensors.items()}, config)
    for key, t in tensors.items():
        if not t.is_floating_point():
            raise CheckpointError(f"weights: {key} has dtype {t.dtype}; Mamba weights are floating point")

    with torch.device("meta"):
        model = MambaLM(config, dtype=dtype, scan_impl=scan_impl, compute_dtype=compute_dtype)
    target = {k: v.dtype for k, v in model.state_dict().items()}
    state = {name: tensors[key].to(device=device, dtype=target[name]) for name, key in mapping.items()}
    model.load_state_dict(state, strict=True, assign=True)
    bar.close()
    return model.eval().requires_grad_(False)


# ---------------------------------------------------------------- writing


def save_checkpoint(model: MambaLM, directory: str | os.PathLike, *, format: str = "hf", dtype=None) -> Path:
    """Write ``model`` as a checkpoint that transformers (``hf``) or mamba_ssm (``mamba_ssm``) reads.

    hf: config.json + model.safetensors; mamba_ssm: config.json + pytorch_model.bin with the
    ``backbone.embedding`` naming and the tied lm_head saved too, as mamba_ssm does. ``dtype``
    converts the weights (not A_log, D, dt_bias). The directory is replaced atomically.
    """
    from safetensors.torch import save_file

    if any(block.mixer.has_online_transforms() for block in model.layers):
        raise UnsupportedError(
            "this model computes an online Hadamard or a smoothed gate, which neither checkpoint format "
            "can express; save it as a QuantizedModel instead"
        )
    adapter = adapter_for(model.config)
    cfg = adapter.hf_config(model.config) if format == "hf" else None
    if format == "mamba_ssm":
        cfg = adapter.mamba_ssm_config(model.config)
    elif format != "hf":
        raise UnsupportedError(f"unknown checkpoint format {format!r} (hf or mamba_ssm)")
    embedding = "backbone.embeddings.weight" if format == "hf" else "backbone.embedding.weight"
    named = {}
    for k, v in model.state_dict().items():
        if dtype is not None and k.rsplit(".", 1)[-1] not in _FP32_PARAMS:
            v = v.to(dtype)
        name = embedding if k == "embedding.weight" else k if k == "lm_head.weight" else f"backbone.{k}"
        named[name] = v.detach().cpu().contiguous()
    with atomic_directory(directory) as out:
        if format == "hf":
            save_file(named, str(out / SAFETENSORS), metadata={"format": "pt"})
        else:
            if model.config.tie_embeddings:  # mamba_ssm saves the tied head too
                named["lm_head.weight"] = named[embedding].clone()
            torch.save(named, out / PYTORCH_BIN)
        (out / CONFIG_FILE).write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    return Path(directory)


_FP32_PARAMS = ("A_log", "D", "dt_bias")  # kept fp32 in every dtype, as mamba_ssm does
