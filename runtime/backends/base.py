"""The one small interface every runtime backend implements.

A backend runs a bundle's graph: ``prefill(ids, state) -> (logits, state)`` for a prompt (or a
chunk of one), ``decode(token, state) -> (logits, state)`` for one token per sequence, and
``init_state(batch)`` for the zero state. The state is opaque to callers: a dict of the graph's
state inputs (``conv_state.{i}`` / ``ssm_state.{i}``) held wherever the backend keeps them (NumPy
arrays for ONNX Runtime on the CPU, device buffers for TensorRT). A state passed in is consumed:
backends may reuse its memory for the state they return (TensorRT ping-pongs two buffer sets), so
callers keep only the returned one.

Logits come back as fp32 torch tensors on the CPU, whatever the backend, so generation and
benchmarks are backend-agnostic. ``step`` is ``decode`` under the name the calibration models use,
so evaluation takes a backend like a model; :func:`jetmamba.runtime.generate.generate` takes either
(a model through :class:`~jetmamba.runtime.backends.model.ModelBackend`).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

import torch

from jetmamba.errors import UsageError

State = Mapping[str, Any]


class Backend(abc.ABC):
    """``name``: the registry name (``onnxruntime``, ``tensorrt``, ``model``); ``config``: the
    model's ModelConfig; ``max_prompt``: the longest ``prefill`` call the backend accepts (None:
    no limit); ``max_batch``: likewise for the batch; ``device``: where ``prefill`` wants its ids."""

    name: str = ""
    config: Any = None
    max_prompt: int | None = None
    max_batch: int | None = None
    device: torch.device | str = "cpu"

    @abc.abstractmethod
    def init_state(self, batch_size: int) -> State:
        """Zero conv and SSM state of every layer for ``batch_size`` sequences."""

    @abc.abstractmethod
    def prefill(self, input_ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """input_ids [b, l] int64 -> (logits [b, l, vocab] fp32 on the CPU, state after the last token).
        ``state`` None starts from zeros; a state continues a sequence (chunked prefill)."""

    @abc.abstractmethod
    def decode(self, input_ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """input_ids [b] int64, one token per sequence -> (logits [b, vocab] fp32 on the CPU, next state)."""

    def step(self, input_ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        return self.decode(input_ids, state)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.prefill(input_ids)[0]

    __call__ = forward

    def check_shape(self, batch: int, length: int) -> None:
        """A clear error for a call the backend was not built for (longer than its profile's max)."""
        if length < 1:
            raise UsageError("the prompt is empty: a prefill needs at least one token")
        if self.max_prompt is not None and length > self.max_prompt:
            raise UsageError(
                f"the prompt has {length} tokens, more than this {self.name} backend's maximum of {self.max_prompt} "
                "(rebuild with a larger --max-prompt)"
            )
        if self.max_batch is not None and batch > self.max_batch:
            raise UsageError(f"batch {batch} is larger than this {self.name} backend's maximum of {self.max_batch}")

    def close(self) -> None:
        """Release what the backend holds (engines, device memory); idempotent."""
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
