"""The ``model`` backend: a PyTorch model behind the Backend interface.

It wraps anything with the calibration models' state API — the fp reference model
(:class:`~jetmamba.calibration.model.MambaLM`), the QuantizedModel simulation, or an
:class:`~jetmamba.compiler.ort.OrtModel` — so that the one generation loop
(:func:`jetmamba.runtime.generate.generate`) talks only to backends, and a bundle's output can be
compared with the model it was compiled from through the very same code.
"""

from __future__ import annotations

import torch

from jetmamba.errors import UsageError
from jetmamba.runtime.backends.base import Backend, State


class ModelBackend(Backend):
    """``model``: an object with ``config``, ``prefill(ids, state=None)``, ``step(ids, state)`` and
    ``init_state(batch)``. Its state (a ModelState, or a dict of arrays) stays opaque."""

    name = "model"

    def __init__(self, model):
        missing = [m for m in ("prefill", "step", "init_state") if not callable(getattr(model, m, None))]
        if missing or getattr(model, "config", None) is None:
            what = ", ".join(missing) if missing else "config"
            raise UsageError(f"{type(model).__name__} cannot run as a backend: it has no {what}")
        self.model = model
        self.config = model.config
        self.device = getattr(model, "device", "cpu")

    def init_state(self, batch_size: int) -> State:
        return self.model.init_state(batch_size)

    @torch.inference_mode()
    def prefill(self, input_ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        self.check_shape(*input_ids.shape)
        logits, state = self.model.prefill(input_ids.to(self.device), state)
        return logits.float().cpu(), state

    @torch.inference_mode()
    def decode(self, input_ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        logits, state = self.model.step(input_ids.to(self.device), state)
        return logits.float().cpu(), state


def as_backend(runner) -> Backend:
    """``runner`` itself when it is a Backend, else the model wrapped in a :class:`ModelBackend`."""
    return runner if isinstance(runner, Backend) else ModelBackend(runner)
