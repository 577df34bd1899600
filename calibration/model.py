"""The fp reference model: a compact Mamba1 / Mamba2 language model with an explicit state API.

    logits = model(input_ids)                       # full sequence from a zero state
    logits, state = model.prefill(prompt_ids)       # ... and the state after the prompt
    logits, state = model.step(next_ids, state)     # one token per call

``prefill`` then ``step`` ... gives the same logits as ``forward`` over the whole sequence
(tested). Everything architecture-specific is in the mixer its adapter builds.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from jetmamba.calibration.arch import LayerState, ModelConfig, adapter_for
from jetmamba.calibration.arch.base import RMSNorm

_HEAD_CHUNK_ROWS = 8192  # LM head rows upcast at a time when compute_dtype differs from the weights


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

    def __init__(
        self, config: ModelConfig, *, dtype: torch.dtype = torch.float32, device=None, scan_impl="auto",
        compute_dtype: torch.dtype | None = None,
    ):  # fmt: skip
        super().__init__()
        self.config = config
        self.adapter = adapter_for(config)
        self.scan_impl = scan_impl
        # compute_dtype: weights are held in `dtype` but each block runs in compute_dtype, upcast
        # one block at a time (a large model calibrated on a CPU machine: fp16 memory, fp32 maths)
        self.compute_dtype = compute_dtype
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
        if self.compute_dtype is None or w.dtype == self.compute_dtype:
            return F.linear(hidden.to(w.dtype), w).float()
        # a vocab x d_model head upcast whole would be the largest transient of a calibration run
        hidden = hidden.to(self.compute_dtype)
        return torch.cat(
            [F.linear(hidden, rows.to(self.compute_dtype)).float() for rows in w.split(_HEAD_CHUNK_ROWS)], dim=-1
        )

    def _run_blocks(self, hidden: torch.Tensor, state: ModelState | None, run_mixer):
        if self.compute_dtype is not None:
            hidden = hidden.to(self.compute_dtype)
        residual = hidden
        new_layers = []
        for i, block in enumerate(self.layers):
            with upcast(block, self.compute_dtype):
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

    def run_blocks(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The residual stream after the last block (no final norm, no LM head): what a calibration
        pass needs, without materialising [b, l, vocab] logits."""
        return self._run_blocks(
            self.embedding(input_ids), None, lambda mixer, h, s: mixer(h, s, scan_impl=self.scan_impl)
        )[0]

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


@contextlib.contextmanager
def upcast(module: nn.Module, dtype: torch.dtype | None):
    """Run ``module`` with its floating parameters in ``dtype``; the originals are put back as they
    were (not re-rounded), so memory holds one upcast block at a time."""
    if dtype is None:
        yield
        return
    saved = {}
    for name, p in module.named_parameters():
        if p.is_floating_point() and p.dtype != dtype:
            saved[name] = p.data
            p.data = p.data.to(dtype)
    try:
        yield
    finally:
        params = dict(module.named_parameters())
        for name, data in saved.items():
            params[name].data = data
