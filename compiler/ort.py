"""ONNX Runtime on a lowered graph, with the fp model's interface (``forward``, ``prefill``,
``step``, ``init_state``), so evaluation and generation take it like any model.

The CPU executor of the function-body flavour; onnxruntime is imported lazily (it is a test
extra, and onnxruntime-gpu provides the same module on CUDA workstations).
"""

from __future__ import annotations

import numpy as np
import torch

from jetmamba.errors import CheckpointError, UsageError

NUMPY = {"int8": np.int8, "float16": np.float16, "float32": np.float32, "int64": np.int64}


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise UsageError(
            "running an ONNX graph needs ONNX Runtime: pip install onnxruntime (or onnxruntime-gpu)"
        ) from None
    return onnxruntime


class OrtModel:
    """``source``: an onnx_ir Model, serialized ONNX bytes, or a path to a .onnx file."""

    def __init__(self, source, *, threads: int | None = None, providers=("CPUExecutionProvider",), config=None):
        ort = _onnxruntime()
        if not isinstance(source, (bytes, str)) and not hasattr(source, "__fspath__"):
            import onnx_ir as ir

            source = ir.to_proto(source).SerializeToString()
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if isinstance(source, bytes):
            self.session = ort.InferenceSession(source, options, providers=list(providers))
        else:
            # a file (a bundle's graph) is data from elsewhere: ONNX Runtime's refusal is the user's
            # one-line error, not a traceback
            try:
                self.session = ort.InferenceSession(str(source), options, providers=list(providers))
            except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidGraph/... types
                lines = str(exc).strip().splitlines()
                raise CheckpointError(
                    f"{source}: ONNX Runtime cannot load this graph ({lines[0][:300] if lines else type(exc).__name__})"
                ) from None
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.n_layer = sum(name.startswith("conv_state.") for name in self.inputs)
        self.device = "cpu"
        self.config = config  # the model's ModelConfig, where known (a bundle's manifest has it)

    def init_state(self, batch_size: int) -> dict[str, np.ndarray]:
        """Zero conv and SSM states of every layer, shaped and typed as the graph declares them."""
        state = {}
        for name, info in self.inputs.items():
            if name == "input_ids":
                continue
            shape = [batch_size if isinstance(d, str) or d is None else d for d in info.shape]
            kind = info.type[len("tensor(") : -1]  # e.g. "int8", "float16", "float"
            state[name] = np.zeros(shape, dtype=NUMPY["float32" if kind == "float" else kind])
        return state

    def prefill(self, input_ids: torch.Tensor, state: dict | None = None):
        """ids [b, l] -> (logits [b, l, vocab] fp32 tensor, next state)."""
        ids = np.ascontiguousarray(input_ids.cpu().numpy().astype(np.int64))
        feeds = {"input_ids": ids, **(self.init_state(ids.shape[0]) if state is None else state)}
        outs = dict(zip(self.output_names, self.session.run(None, feeds), strict=True))
        next_state = {k.replace("_out.", "."): v for k, v in outs.items() if k != "logits"}
        return torch.from_numpy(outs["logits"]), next_state

    def step(self, input_ids: torch.Tensor, state: dict):
        logits, state = self.prefill(input_ids[:, None], state)
        return logits[:, 0], state

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.prefill(input_ids)[0]

    __call__ = forward
