"""Runtime backends behind one interface (:class:`~jetmamba.runtime.backends.base.Backend`).

``open_backend(bundle, name)`` gives a ready backend for a verified bundle. Each backend module is
imported only when asked for, so that a missing TensorRT or ONNX Runtime is an actionable error
for that backend alone.
"""

from __future__ import annotations

from jetmamba.errors import UsageError
from jetmamba.runtime.backends.base import Backend, State

__all__ = ["BACKENDS", "Backend", "State", "open_backend"]

# name -> what it runs on; "auto" picks the first that can run here
BACKENDS = {
    "tensorrt": "a TensorRT engine built from the bundle's plugin graph (Jetson or a CUDA workstation)",
    "onnxruntime": "the bundle's function-body graph on ONNX Runtime (CPU, or CUDA with onnxruntime-gpu)",
}


def open_backend(bundle, name: str = "onnxruntime", **options) -> Backend:
    """A backend running ``bundle``; ``options`` go to the backend's constructor."""
    if name == "onnxruntime":
        from jetmamba.runtime.backends.ort import OnnxRuntimeBackend

        return OnnxRuntimeBackend(bundle, **options)
    raise UsageError(f"unknown backend '{name}': choose from {', '.join(BACKENDS)}")
