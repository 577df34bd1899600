"""The fp reference model: a compact Mamba1 / Mamba2 language model with an explicit state API.

    logits = model(input_ids)                       # full sequence from a zero state
    logits, state = model.prefill(prompt_ids)       # ... and the state after the prompt
    logits, state = model.step(next_ids, state)     # one token per call

``prefill`` then ``step`` ... gives the same logits as ``forward`` over the whole sequence
(tested). Everything architecture-specific is in the mixer its adapter builds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from jetmamba.calibration.arch import LayerState, ModelConfig, adapter_for
from jetmamba.calibration.arch.base import RMSNorm


@dataclass
class ModelState:
    """Recurrent state of every layer (see :class:`LayerState` for shapes)."""

    layers: list[LayerState]

    def clone(self) -> ModelState:
        return ModelState([LayerState(s.conv.clone(), s.ssm.clone()) for s in self.layers])

    @property
    def batch_size(self) -> int:
        return self.layers[0].ssm.shape[0]

    def nbytes(self) -> int:
        return sum(s.conv.nbytes + s.ssm.nbytes for s in self.layers)


class Block(nn.Module):
    def __init__(self, config: ModelConfig, mixer: nn.Module, *, dtype, device):
        super().__init__()
        self.norm = RMSNorm(config.d_model, config.norm_eps, dtype=dtype, device=device)
        self.mixer = mixer


class MambaLM(nn.Module):
    """Embedding, ``n_layer`` pre-norm residual blocks, final norm, LM head (tied or not).

    Parameter names follow the checkpoints with the ``backbone.`` prefix dropped:
    ``embedding.weight``, ``layers.{i}.norm.weight``, ``layers.{i}.mixer.*``, ``norm_f.weight``
    and ``lm_head.weight`` when it is not tied. ``scan_impl`` chooses the sequence scan
    implementation (``auto``, ``native``, ``parallel``/``chunked``, ``ref``).
    """

    def __init__(self, config: ModelConfig, *, dtype: torch.dtype = torch.float32, device=None, scan_impl="auto"):
        super().__init__()
        self.config = config
        self.adapter = adapter_for(config)
        self.scan_impl = scan_impl
        kw = {"dtype": dtype, "device": device}
        self.embedding = nn.Embedding(config.vocab_size, config.d_model, **kw)
        self.layers = nn.ModuleList(
            Block(config, self.adapter.mixer(config, **kw), **kw) for _ in range(config.n_layer)
        )
        self.norm_f = RMSNorm(config.d_model, config.norm_eps, **kw)
        self.lm_head = None if config.tie_embeddings else nn.Linear(config.d_model, config.vocab_size, bias=False, **kw)

    # ---------------------------------------------------------------- properties

    @property
    def dtype(self) -> torch.dtype:
        return self.embedding.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.embedding.weight.device

    @property
    def lm_head_weight(self) -> torch.Tensor:
        return self.embedding.weight if self.lm_head is None else self.lm_head.weight

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---------------------------------------------------------------- state

    def init_state(self, batch_size: int, device=None) -> ModelState:
        """Zero state: conv state in the model dtype, SSM state fp32."""
        device = self.device if device is None else device
        conv_shape, ssm_shape = self.adapter.state_shapes(self.config, batch_size)
        return ModelState(
            [
                LayerState(
                    torch.zeros(conv_shape, dtype=self.dtype, device=device),
                    torch.zeros(ssm_shape, dtype=torch.float32, device=device),
                )
                for _ in range(self.config.n_layer)
            ]
        )

    # ---------------------------------------------------------------- forward paths

    def _logits(self, residual: torch.Tensor) -> torch.Tensor:
        hidden = self.norm_f(residual)
        w = self.lm_head_weight
        return F.linear(hidden.to(w.dtype), w).float()

    def _run_blocks(self, hidden: torch.Tensor, state: ModelState | None, run_mixer):
        residual = hidden
        new_layers = []
        for i, block in enumerate(self.layers):
            normed = block.norm(residual.to(block.norm.weight.dtype))
            out, layer_state = run_mixer(block.mixer, normed, None if state is None else state.layers[i])
            if self.config.residual_in_fp32:
                residual = residual.float()
            residual = residual + out
            new_layers.append(layer_state)
        return residual, ModelState(new_layers)

    def prefill(self, input_ids: torch.Tensor, state: ModelState | None = None):
        """input_ids: [b, l] -> (logits [b, l, vocab] fp32, state after the last token).

        ``state`` continues a sequence (chunked prefill); None starts from zeros.
        """
        hidden = self.embedding(input_ids)
        residual, new_state = self._run_blocks(hidden, state, lambda mixer, h, s: mixer(h, s, scan_impl=self.scan_impl))
        return self._logits(residual), new_state

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids: [b, l] -> logits [b, l, vocab] (fp32), from a zero state."""
        return self.prefill(input_ids)[0]

    def step(self, input_ids: torch.Tensor, state: ModelState):
        """input_ids: [b] (one token per sequence) -> (logits [b, vocab] fp32, next state)."""
        hidden = self.embedding(input_ids)
        residual, new_state = self._run_blocks(hidden, state, lambda mixer, h, s: mixer.step(h, s))
        return self._logits(residual), new_state

    # ---------------------------------------------------------------- initialisation

    @torch.no_grad()
    def init_weights(self, seed: int = 0) -> MambaLM:
        """Standard Mamba initialisation from a seed (for training from scratch and tests)."""
        g = torch.Generator(device=self.device).manual_seed(seed)
        self.embedding.weight.normal_(0.0, 0.02, generator=g)
        for block in self.layers:
            block.norm.weight.fill_(1.0)
            block.mixer.reset_parameters(g)
        self.norm_f.weight.fill_(1.0)
        if self.lm_head is not None:
            self.lm_head.weight.normal_(0.0, 0.02, generator=g)
        return self
