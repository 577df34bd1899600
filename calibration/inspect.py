"""``jetmamba inspect``: what a checkpoint is, from its config and weight headers only."""

from __future__ import annotations

import math
import os

from jetmamba.calibration.arch import adapter_for
from jetmamba.calibration.checkpoint import check_weights_match, expected_tensors, open_checkpoint
from jetmamba.calibration.weights import read_tensor_infos
from jetmamba.errors import CheckpointError


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def describe_checkpoint(spec: str | os.PathLike, tokenizer: str | None = None) -> dict:
    """Format, config, parameter count, weight bytes, state bytes and tokenizer, as a dict.

    Safetensors weights are checked against the config from their headers; ``.bin`` weights are
    pickles and are only checked when loaded (``eval``).
    """
    ckpt = open_checkpoint(spec)
    config = ckpt.config
    expected = expected_tensors(config)
    infos = read_tensor_infos(ckpt.weights)
    weights = {"files": [p.name for p in ckpt.weights.files], "kind": ckpt.weights.kind, "checked": False}
    if infos is not None:
        check_weights_match(expected, {k: v.shape for k, v in infos.items()}, config)
        weights.update(
            checked=True,
            bytes=sum(math.prod(v.shape) * v.dtype.itemsize for v in infos.values()),
            dtypes=sorted({str(v.dtype).replace("torch.", "") for v in infos.values()}),
        )
    conv = (config.d_conv - 1) * config.conv_dim
    ssm = math.prod(adapter_for(config).state_shapes(config, 1)[1])
    try:
        tok = ckpt.tokenizer(tokenizer)
        tok_name, tok_vocab = tok.name, tok.vocab_size
    except CheckpointError as exc:
        tok_name, tok_vocab = f"none ({exc})", None
    return {
        "path": str(ckpt.path),
        "format": ckpt.format,
        "model_type": ckpt.raw_config.get("model_type"),
        "config": config.to_dict(),
        "parameters": sum(math.prod(v.shape) for v in expected.values()),
        "weights": weights,
        # per sequence, all layers: conv state in fp16 and SSM state in fp32 (the fp reference)
        "state_bytes_per_sequence": {
            "conv_fp16": 2 * conv * config.n_layer,
            "ssm_fp32": 4 * ssm * config.n_layer,
        },
        "tokenizer": {"name": tok_name, "vocab_size": tok_vocab},
    }


def format_description(info: dict) -> str:
    c = info["config"]
    shape = ", ".join(f"{k} {v}" for k, v in c.items() if k not in ("arch",) and v is not None)
    w = info["weights"]
    if w["checked"]:
        wline = f"{', '.join(w['files'])}: {_human_bytes(w['bytes'])} {'/'.join(w['dtypes'])}, match the config"
    else:
        wline = f"{', '.join(w['files'])} (pickled: checked when loaded)"
    s = info["state_bytes_per_sequence"]
    return "\n".join(
        [
            f"model      {info['path']}  ({info['format']}"
            + (f", model_type {info['model_type']})" if info["model_type"] else ")"),
            f"arch       {c['arch']}: {shape}",
            f"params     {info['parameters']:,}",
            f"weights    {wline}",
            f"state      {_human_bytes(s['conv_fp16'] + s['ssm_fp32'])} per sequence "
            f"(conv {_human_bytes(s['conv_fp16'])} fp16, ssm {_human_bytes(s['ssm_fp32'])} fp32)",
            f"tokenizer  {info['tokenizer']['name']}",
        ]
    )
