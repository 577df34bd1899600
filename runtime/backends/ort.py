"""The ONNX Runtime backend: the function-body flavour of a bundle's graph (standard ONNX ops
only), on the CPU here and on the CUDA execution provider where onnxruntime-gpu is installed.

It is the backend that runs everywhere: the tests' oracle for the TensorRT backend (``jetmamba
build --verify``) and what ``run`` / ``bench`` use on a machine without TensorRT.
"""

from __future__ import annotations

from pathlib import Path

import torch

from jetmamba.errors import UsageError
from jetmamba.runtime.backends.base import Backend, State

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def available_providers() -> list[str]:
    from jetmamba.compiler.ort import _onnxruntime

    return list(_onnxruntime().get_available_providers())


class OnnxRuntimeBackend(Backend):
    """``bundle``: a bundle directory (verified here); ``device``: ``cpu``, ``cuda`` or ``auto``
    (CUDA when onnxruntime-gpu offers it); ``threads``: intra-op threads (None: ORT's default)."""

    name = "onnxruntime"

    def __init__(self, bundle, *, device: str = "auto", threads: int | None = None):
        from jetmamba.calibration.arch import config_from_dict
        from jetmamba.compiler.bundle import BundleError, verify_bundle
        from jetmamba.compiler.ort import OrtModel

        manifest = verify_bundle(bundle)
        available = available_providers()
        if device == "auto":
            device = "cuda" if PROVIDERS["cuda"] in available else "cpu"
        if device not in PROVIDERS:
            raise UsageError(f"unknown ONNX Runtime device '{device}': choose cpu, cuda or auto")
        if PROVIDERS[device] not in available:
            raise UsageError(
                f"ONNX Runtime here has no {PROVIDERS[device]} (it offers {', '.join(available)}); "
                "for CUDA: pip uninstall onnxruntime && pip install onnxruntime-gpu"
            )
        try:
            self.config = config_from_dict(manifest["config"])
        except (TypeError, ValueError, KeyError) as exc:
            raise BundleError(f"{bundle}: the manifest's model config is not valid ({exc})") from None
        self.manifest = manifest
        self.bundle = Path(bundle)
        self.provider = PROVIDERS[device]
        # CUDA EP falls back to the CPU for ops it lacks; listing the CPU EP last makes that explicit
        providers = [self.provider] + (["CPUExecutionProvider"] if device == "cuda" else [])
        self.model = OrtModel(self.bundle / manifest["graphs"]["onnxruntime"], threads=threads,
                              providers=providers, config=self.config)  # fmt: skip

    def init_state(self, batch_size: int) -> State:
        return self.model.init_state(batch_size)

    def prefill(self, input_ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        self.check_shape(*input_ids.shape)
        return self.model.prefill(input_ids, None if state is None else dict(state))

    def decode(self, input_ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        return self.model.step(input_ids, dict(state))

    def close(self) -> None:
        self.model = None
