"""Runtime backends behind one interface (:class:`~jetmamba.runtime.backends.base.Backend`).

``open_backend(bundle, name)`` gives a ready backend for a verified bundle. Each backend module is
imported only when asked for, so that a missing TensorRT or ONNX Runtime is an actionable error
for that backend alone. :class:`~jetmamba.runtime.backends.model.ModelBackend` (name ``model``)
wraps an in-memory PyTorch model instead of a bundle; it is not opened from a bundle.
"""

from __future__ import annotations

import logging

from jetmamba.errors import JetmambaError, UsageError
from jetmamba.runtime.backends.base import Backend, State

__all__ = ["BACKENDS", "Backend", "State", "open_backend", "tensorrt_unavailable_reason"]

log = logging.getLogger(__name__)

# name -> what it runs on; "auto" picks the first that can run here
BACKENDS = {
    "tensorrt": "a TensorRT engine built from the bundle's plugin graph (Jetson or a CUDA workstation)",
    "onnxruntime": "the bundle's function-body graph on ONNX Runtime (CPU, or CUDA with onnxruntime-gpu)",
}
CHOICES = ("auto", *BACKENDS)


def tensorrt_unavailable_reason() -> str | None:
    """Why the TensorRT backend cannot run here (None: it can). Its module is imported only here,
    and a jetmamba without it (or a broken TensorRT install) reads as a reason, not a crash."""
    try:
        from jetmamba.runtime.backends.tensorrt import unavailable_reason
    except ImportError as exc:
        return f"the TensorRT backend cannot be imported ({exc})"
    return unavailable_reason()


def _tensorrt(bundle, **options) -> Backend:
    from jetmamba.runtime.backends.tensorrt import TensorRTBackend

    return TensorRTBackend(bundle, **options)


def open_backend(bundle, name: str = "onnxruntime", **options) -> Backend:
    """A backend running ``bundle``; ``options`` go to the backend's constructor.

    ``auto`` is TensorRT where TensorRT and a GPU are usable, else ONNX Runtime; when TensorRT is
    usable but cannot open this bundle (e.g. no engine built yet), a warning says why and ONNX
    Runtime runs it.
    """
    if name == "auto":
        if tensorrt_unavailable_reason() is None:
            try:
                return _tensorrt(bundle, **options)
            except JetmambaError as exc:
                log.warning("TensorRT cannot run %s (%s); using ONNX Runtime", bundle, exc)
        name = "onnxruntime"
    if name == "onnxruntime":
        from jetmamba.runtime.backends.ort import OnnxRuntimeBackend

        return OnnxRuntimeBackend(bundle, **options)
    if name == "tensorrt":
        reason = tensorrt_unavailable_reason()
        if reason is not None:
            raise UsageError(f"the tensorrt backend cannot run here: {reason}; the onnxruntime backend runs anywhere")
        return _tensorrt(bundle, **options)
    raise UsageError(f"unknown backend '{name}': choose from {', '.join(CHOICES)}")
