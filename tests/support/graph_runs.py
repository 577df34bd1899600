"""Running lowered graphs through ONNX Runtime in tests: sessions, zero states, chained decode."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import torch


def nmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a - b) ** 2).sum() / (b**2).sum())


def session(model: ir.Model) -> ort.InferenceSession:
    proto = ir.to_proto(model)
    onnx.checker.check_model(proto, full_check=True)
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def feeds(q, ids: torch.Tensor, state=None) -> dict:
    """A QuantizedModel's (zero or given) state as the graph's inputs, with ``ids``."""
    state = q.init_state(ids.shape[0]) if state is None else state
    out = {"input_ids": ids.numpy().astype(np.int64)}
    for i, layer in enumerate(state.layers):
        out[f"conv_state.{i}"] = layer.conv.numpy()
        out[f"ssm_state.{i}"] = layer.ssm.numpy()
    return out


def zero_feeds(sess) -> dict:
    """Zeros of every state input of ``sess`` (batch 1), in the dtype the graph declares."""
    from jetmamba.compiler.ort import NUMPY

    out = {}
    for i in sess.get_inputs()[1:]:
        kind = i.type[len("tensor(") : -1]
        out[i.name] = np.zeros([1 if isinstance(d, str) else d for d in i.shape], NUMPY.get(kind, np.float32))
    return out


def decode_nmse(sess, zero_state: dict, n_layer: int, prompt: int = 24, steps: int = 32) -> float:
    """NMSE between the full-sequence logits and a ``prompt``-token prefill followed by ``steps``
    single-token calls that feed the state outputs back as inputs."""
    return nmse(*decode_logits(sess, zero_state, prompt, steps))


def decode_logits(sess, zero_state: dict, prompt: int = 24, steps: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(logits of a ``prompt``-token prefill and ``steps`` single-token calls, each call fed the
    previous one's state outputs ``<name>_out.{i}`` as ``<name>.{i}``; the full-sequence logits)."""
    names = [o.name for o in sess.get_outputs()]
    ids = torch.randint(0, 256, (2, prompt + steps), generator=torch.Generator().manual_seed(3)).numpy()
    state = {k: np.repeat(v, 2, axis=0) if v.shape[0] != 2 else v for k, v in zero_state.items() if k != "input_ids"}
    full = sess.run(["logits"], {"input_ids": ids, **state})[0]
    out = dict(zip(names, sess.run(None, {"input_ids": ids[:, :prompt], **state}), strict=True))
    got = [out["logits"]]
    for t in range(prompt, prompt + steps):
        f = {"input_ids": ids[:, t : t + 1], **{n.replace("_out.", "."): out[n] for n in names[1:]}}
        out = dict(zip(names, sess.run(None, f), strict=True))
        got.append(out["logits"])
    return np.concatenate(got, axis=1), full
