"""QuantizedModel: int8 weights, static activation scales and fp parameters, executable on CPU
(and CUDA) by a simulation built from the op references, saved as safetensors + JSON.

The simulation is the deployed graph's semantics: every int8 tensor of the graph is an int8
tensor here (quantized with ONNX rules by the op references); every fp16 tensor of the graph is
rounded to ``act_dtype`` where the graph stores it (residual stream, scan output, embedding, LM
head), while arithmetic runs in fp32, as the kernels accumulate.

Block structure (Quamba's): ``(x_q, residual) = RMSNormQuant(prev_out, residual)``, then the
architecture's quantized mixer on ``x_q``; the final norm and the LM head stay fp.
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
from jetmamba.compiler.ops.reference import rms_norm_quant
from jetmamba.errors import CheckpointError

FORMAT = "jetmamba-quantized"
FORMAT_VERSION = 1
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
    def __init__(self, config: ModelConfig, mixer: nn.Module, device=None):
        super().__init__()
        self.register_buffer("norm_weight", torch.ones(config.d_model, device=device))
        scale_buffer(self, "in_scale")
        self.norm_eps = config.norm_eps
        self.mixer = mixer


class QuantizedModel(nn.Module):
    """See the module docstring. ``forward``, ``prefill`` and ``step`` as :class:`MambaLM`'s."""

    def __init__(self, config: ModelConfig, recipe: dict[str, Any], *, act_dtype=torch.float16, device=None):
        super().__init__()
        self.config = config
        self.recipe = recipe
        self.act_dtype = act_dtype
        self.adapter = adapter_for(config)
        self.provenance = Provenance()
        # fp tensors of the deployed graph are held in its activation dtype
        table = (config.vocab_size, config.d_model)
        self.register_buffer("embedding", torch.zeros(table, dtype=act_dtype, device=device))
        self.layers = nn.ModuleList(
            QuantBlock(config, self.adapter.quantized_mixer(config, recipe, act_dtype=act_dtype, device=device), device)
            for _ in range(config.n_layer)
        )
        self.register_buffer("norm_f_weight", torch.ones(config.d_model, device=device))
        self.register_buffer("lm_head", torch.zeros(table, dtype=act_dtype, device=device))

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
            x_q, residual = rms_norm_quant(
                residual if out is None else out, None if out is None else residual,
                block.norm_weight, eps=block.norm_eps, out_scale=block.in_scale,
            )  # fmt: skip
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
        """Bytes of the deployed weights: int8 matrices at 1 byte, fp matrices at the activation dtype's width."""
        fp_width = torch.finfo(self.act_dtype).bits // 8
        return sum(
            t.numel() * (1 if t.dtype == torch.int8 else fp_width) for t in self.state_dict().values() if t.ndim >= 2
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
        from safetensors.torch import load_file

        d = Path(directory)
        if not (d / MANIFEST).is_file():
            raise CheckpointError(f"{d}: not a QuantizedModel (no {MANIFEST})")
        try:
            manifest = json.loads((d / MANIFEST).read_text(encoding="utf-8"))
            if manifest.get("format") != FORMAT:
                raise ValueError(f"format is {manifest.get('format')!r}")
            if manifest.get("format_version") != FORMAT_VERSION:
                version = manifest.get("format_version")
                raise ValueError(f"format_version {version} (this jetmamba reads {FORMAT_VERSION})")
            config = config_from_dict(manifest["config"])
            act_dtype = getattr(torch, manifest["act_dtype"])
            model = cls(config, manifest["recipe"], act_dtype=act_dtype, device=device)
            for block, flag in zip(model.layers, manifest["out_hadamard"], strict=True):
                block.mixer.out_hadamard = bool(flag)
            model.provenance = Provenance(**manifest.get("provenance", {}))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{d / MANIFEST}: not a valid QuantizedModel manifest ({exc})") from None
        from jetmamba.calibration.weights import read_safetensors_header

        infos = read_safetensors_header(d / TENSORS)
        expected = {k: (v.dtype, tuple(v.shape)) for k, v in model.state_dict().items()}
        found = {k: (v.dtype, v.shape) for k, v in infos.items()}
        if expected != found:
            bad = sorted(set(expected) ^ set(found)) or sorted(k for k in expected if expected[k] != found[k])
            raise CheckpointError(f"{d / TENSORS}: tensors do not match the manifest's model ({', '.join(bad[:4])})")
        model.load_state_dict(load_file(str(d / TENSORS), device=str(device)), strict=True)
        return model


def is_quantized_model(directory: str | os.PathLike) -> bool:
    return (Path(directory) / MANIFEST).is_file()
