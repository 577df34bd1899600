"""QuantizedModel: int8 or packed int4 weights, static activation scales and fp parameters, executable on CPU
(and CUDA) by a simulation built from the op references, saved as safetensors + JSON.

The simulation is the deployed graph's semantics: every int8 tensor of the graph is an int8
tensor here (quantized with ONNX rules by the op references); every fp16 tensor of the graph is
rounded to ``act_dtype`` where the graph stores it (residual stream, scan output, embedding, LM
head), while arithmetic runs in fp32, as the kernels accumulate.

Block structure (Quamba's): ``(x_q, residual) = RMSNormQuant(prev_out, residual)``, then the
architecture's quantized mixer on ``x_q``; the final norm and the LM head stay fp. A W4A16 layer
(``act_bits`` 16: every layer of a W4A16 recipe, some of a W4AX one) takes ``RMSNorm``'s fp output
instead and keeps fp activations through its mixer.

Format versions: 1 (int8 weights, every layer int8 activations) still loads; 2 adds the packed
int4 weights and ``layer_act_bits`` in the manifest.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from jetmamba import __version__
from jetmamba.atomic import atomic_directory
from jetmamba.calibration.arch import ModelConfig, adapter_for, config_from_dict
from jetmamba.calibration.functional import rms_norm
from jetmamba.calibration.model import ModelState
from jetmamba.calibration.qlayers import scale_buffer
from jetmamba.compiler.ops.reference import rms_norm_fp, rms_norm_quant
from jetmamba.errors import CheckpointError

FORMAT = "jetmamba-quantized"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST = "quantized.json"
TENSORS = "tensors.safetensors"


# ---------------------------------------------------------------- the model


@dataclass
class Provenance:
    """Where a QuantizedModel came from; saved in its manifest."""

    source: str = ""
    calibration: dict[str, Any] = field(default_factory=dict)
    saturation: dict[str, int] = field(default_factory=dict)  # per activation site, on calibration data
    seconds: float = 0.0  # how long quantizing took: reported, not saved (artifacts are reproducible)


class QuantBlock(nn.Module):
    def __init__(self, config: ModelConfig, mixer: nn.Module, device=None, act_bits: int = 8):
        super().__init__()
        self.act_bits = act_bits  # 8: RMSNormQuant feeds the mixer int8; 16: RMSNorm feeds it fp16
        self.register_buffer("norm_weight", torch.ones(config.d_model, device=device))
        scale_buffer(self, "in_scale")
        self.norm_eps = config.norm_eps
        self.mixer = mixer


class QuantizedModel(nn.Module):
    """See the module docstring. ``forward``, ``prefill`` and ``step`` as :class:`MambaLM`'s."""

    def __init__(self, config: ModelConfig, recipe: dict[str, Any], *, act_dtype=torch.float16, device=None,
                 layer_act_bits: list[int] | None = None):  # fmt: skip
        super().__init__()
        if layer_act_bits is None:
            layer_act_bits = [int(recipe.get("act_bits", 8))] * config.n_layer
        if len(layer_act_bits) != config.n_layer or any(b not in (8, 16) for b in layer_act_bits):
            raise ValueError(f"layer_act_bits must be 8 or 16 for each of {config.n_layer} layers: {layer_act_bits}")
        self.config = config
        self.recipe = recipe
        self.act_dtype = act_dtype
        self.adapter = adapter_for(config)
        self.provenance = Provenance()
        # fp tensors of the deployed graph are held in its activation dtype
        table = (config.vocab_size, config.d_model)
        self.register_buffer("embedding", torch.zeros(table, dtype=act_dtype, device=device))
        self.layers = nn.ModuleList(
            QuantBlock(
                config,
                self.adapter.quantized_mixer(config, recipe, act_dtype=act_dtype, device=device, act_bits=bits),
                device,
                act_bits=bits,
            )
            for bits in layer_act_bits
        )
        self.register_buffer("norm_f_weight", torch.ones(config.d_model, device=device))
        self.register_buffer("lm_head", torch.zeros(table, dtype=act_dtype, device=device))

    @property
    def layer_act_bits(self) -> list[int]:
        return [b.act_bits for b in self.layers]

    @property
    def device(self) -> torch.device:
        return self.embedding.device

    def round_act(self, t: torch.Tensor) -> torch.Tensor:
        """Round to the graph's activation dtype, keep computing in fp32."""
        return t.to(self.act_dtype).float()

    def init_state(self, batch_size: int, device=None) -> ModelState:
        device = self.device if device is None else device
        return ModelState([b.mixer.init_state(batch_size, device) for b in self.layers])

    def _run(self, input_ids, state, run_mixer):
        # the residual stream and each mixer's output are tensors of the activation dtype, as in
        # the deployed graph (RMSNormQuant adds them in fp32 and stores the sum in that dtype)
        residual = self.embedding[input_ids].to(self.act_dtype)
        out = None
        layers = []
        for i, block in enumerate(self.layers):
            x, res = (residual, None) if out is None else (out, residual)
            if block.act_bits == 16:
                x_q, residual = rms_norm_fp(x, res, block.norm_weight, eps=block.norm_eps)
            else:
                x_q, residual = rms_norm_quant(x, res, block.norm_weight, eps=block.norm_eps, out_scale=block.in_scale)
            out, layer_state = run_mixer(block.mixer, x_q, block.in_scale, None if state is None else state.layers[i])
            out = out.to(self.act_dtype)
            layers.append(layer_state)
        residual = self.round_act(residual.float() + out.float())
        hidden = self.round_act(rms_norm(residual, self.norm_f_weight, self.config.norm_eps))
        return torch.nn.functional.linear(hidden, self.lm_head.float()), ModelState(layers)

    @torch.inference_mode()
    def prefill(self, input_ids: torch.Tensor, state: ModelState | None = None):
        if state is None:
            state = self.init_state(input_ids.shape[0])
        return self._run(input_ids, state, lambda m, x, s, st: m(x, s, st))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.prefill(input_ids)[0]

    @torch.inference_mode()
    def step(self, input_ids: torch.Tensor, state: ModelState):
        logits, state = self._run(input_ids[:, None], state, lambda m, x, s, st: m(x, s, st))
        return logits[:, 0], state

    def weight_bytes(self) -> int:
        """Bytes of the deployed weights: integer matrices as stored (int8 codes at 1 byte, packed
        int4 at two codes a byte), fp matrices (fp16 group scales included) at the activation dtype's width."""
        fp_width = torch.finfo(self.act_dtype).bits // 8
        return sum(
            t.numel() * (fp_width if t.is_floating_point() else t.element_size())
            for t in self.state_dict().values()
            if t.ndim >= 2
        )

    # ---------------------------------------------------------------- save / load

    def save(self, directory: str | os.PathLike, *, tokenizer_file: Path | None = None) -> Path:
        """Write the model as ``tensors.safetensors`` + ``quantized.json`` (atomically), with the
        source checkpoint's ``tokenizer.json`` when it has one, so the directory is self-contained."""
        from safetensors.torch import save_file

        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "jetmamba": __version__,
            "torch": torch.__version__,
            "config": self.config.to_dict(),
            "recipe": self.recipe,
            "act_dtype": str(self.act_dtype).replace("torch.", ""),
            "out_hadamard": [bool(b.mixer.out_hadamard) for b in self.layers],
            "layer_act_bits": self.layer_act_bits,
            # byte-identical for the same inputs and seed: nothing run-dependent (times) is saved
            "provenance": {k: v for k, v in dataclasses.asdict(self.provenance).items() if k != "seconds"},
        }
        with atomic_directory(directory) as tmp:
            save_file(tensors, str(tmp / TENSORS), metadata={"format": FORMAT})
            if tokenizer_file is not None:
                shutil.copyfile(tokenizer_file, tmp / "tokenizer.json")
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        return Path(directory)

    @classmethod
    def load(cls, directory: str | os.PathLike, device="cpu") -> QuantizedModel:
        """The QuantizedModel saved in ``directory``. Its files are data from elsewhere: the model
        the manifest describes is built on the meta device first and checked against the tensors
        file's header, so nothing is allocated before both agree (and within the size bounds)."""
        from jetmamba.calibration.weights import WeightFiles, iter_tensors, read_safetensors_header

        d = Path(directory)
        if not (d / MANIFEST).is_file():
            raise CheckpointError(f"{d}: not a QuantizedModel (no {MANIFEST})")
        try:
            manifest = _read_manifest(d / MANIFEST)
            config = config_from_dict(manifest["config"])
            if manifest["act_dtype"] not in ACT_DTYPES:
                raise ValueError(f"act_dtype {manifest['act_dtype']!r} is not one of {sorted(ACT_DTYPES)}")
            act_dtype = ACT_DTYPES[manifest["act_dtype"]]
            # version 1 had int8 activations in every layer
            layer_act_bits = manifest.get("layer_act_bits", [8] * config.n_layer)
            out_hadamard = [bool(flag) for flag in manifest["out_hadamard"]]
            provenance = Provenance(**manifest.get("provenance", {}))

            def build(dev) -> QuantizedModel:
                model = cls(config, manifest["recipe"], act_dtype=act_dtype, device=dev, layer_act_bits=layer_act_bits)
                for block, flag in zip(model.layers, out_hadamard, strict=True):
                    block.mixer.out_hadamard = flag
                model.provenance = provenance
                return model

            skeleton = build("meta")
        except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError, CheckpointError) as exc:
            raise CheckpointError(f"{d / MANIFEST}: not a valid QuantizedModel manifest ({exc})") from None
        infos = read_safetensors_header(d / TENSORS)
        expected = {k: (v.dtype, tuple(v.shape)) for k, v in skeleton.state_dict().items()}
        found = {k: (v.dtype, v.shape) for k, v in infos.items()}
        if expected != found:
            bad = sorted(set(expected) ^ set(found)) or sorted(k for k in expected if expected[k] != found[k])
            raise CheckpointError(f"{d / TENSORS}: tensors do not match the manifest's model ({', '.join(bad[:4])})")
        model = build(device)
        tensors = dict(iter_tensors(WeightFiles("safetensors", (d / TENSORS,), None)))
        model.load_state_dict({k: t.to(device) for k, t in tensors.items()}, strict=True)
        return model


ACT_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def _read_manifest(path: Path) -> dict[str, Any]:
    from jetmamba.limits import LIMITS

    size = path.stat().st_size
    if size > LIMITS.manifest_json_bytes:
        raise ValueError(f"{size} bytes is not a manifest (at most {LIMITS.manifest_json_bytes})")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if not isinstance(manifest, dict):
        raise ValueError("not a JSON object")
    if manifest.get("format") != FORMAT:
        raise ValueError(f"format is {manifest.get('format')!r}")
    if manifest.get("format_version") not in READABLE_VERSIONS:
        version = manifest.get("format_version")
        raise ValueError(f"format_version {version} (this jetmamba reads {READABLE_VERSIONS})")
    recipe = manifest.get("recipe")
    if not isinstance(recipe, dict) or not isinstance(recipe.get("name"), str):
        raise ValueError("'recipe' must be an object with a string 'name'")
    return manifest


def is_quantized_model(directory: str | os.PathLike) -> bool:
    return (Path(directory) / MANIFEST).is_file()
