"""Every numerical tolerance the tests use, stated once, as data.

A comparison names its entry; ``assert_close`` checks both the worst element (max absolute error)
and the whole tensor (normalised mean squared error, sum((a - e)^2) / sum(e^2)). Where a bound
is relative to the reference's scale, that is said in the entry's note.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Tolerance:
    max_abs: float
    nmse: float
    note: str = ""


TOLERANCES: dict[str, Tolerance] = {
    # fp32 implementations against the fp64 reference, inputs of unit scale
    "scan.fp32": Tolerance(max_abs=5e-4, nmse=1e-10, note="selective scan / SSD, any fp32 implementation"),
    "conv.fp32": Tolerance(max_abs=1e-5, nmse=1e-12, note="causal conv1d native vs PyTorch, fp32"),
    "norm.fp32": Tolerance(max_abs=1e-5, nmse=1e-12),
    # whole models, fp32, ours vs transformers; logits of magnitude ~10
    "logits.vs_transformers": Tolerance(max_abs=2e-4, nmse=1e-10),
    # decode path (prefill + single steps) against the full forward, same model, fp32
    "logits.decode": Tolerance(max_abs=2e-4, nmse=1e-10),
    # the same model computed in a half-precision dtype against fp32
    "logits.fp16": Tolerance(max_abs=0.5, nmse=1e-4, note="loose: fp16 weights and activations"),
    "logits.bf16": Tolerance(max_abs=2.0, nmse=2e-3, note="loose: bf16 has 8 mantissa bits"),
    # fp16-held weights computed in fp32 (the quantizer's model) against an fp32 model of the same
    # weights: the same maths, only the LM head's chunking changes the summation order
    "logits.compute_dtype": Tolerance(max_abs=1e-5, nmse=1e-12),
    # an fp checkpoint lowered unquantized in fp32 and run by ONNX Runtime against the fp32 model:
    # the same maths, summation orders differ
    "logits.onnx_fp32": Tolerance(max_abs=2e-4, nmse=1e-11),
    # an op's ONNX function body run by ONNX Runtime against its reference, fp16 outputs of unit
    # scale: fp32 maths in both, the difference is the summation order plus one fp16 rounding
    "op.onnx_body.fp16": Tolerance(max_abs=4e-3, nmse=1e-6, note="fp16 outputs: one rounding step apart"),
    # ... with fp32 outputs (the CPU flavour): only the summation order differs
    "op.onnx_body.fp32": Tolerance(max_abs=2e-5, nmse=1e-11),
    # gradients of the PyTorch scans (demo training, GPUs) against the reference's
    "scan.grad": Tolerance(max_abs=1e-3, nmse=1e-9),
}

# perplexity: relative difference |ours - theirs| / theirs
PERPLEXITY_REL = {"vs_transformers": 1e-4, "format_copy": 1e-6}


def nmse(actual: torch.Tensor, expected: torch.Tensor) -> float:
    a, e = actual.double(), expected.double()
    return float(((a - e) ** 2).sum() / (e**2).sum().clamp_min(1e-300))


def assert_close(actual: torch.Tensor, expected: torch.Tensor, key: str) -> None:
    tol = TOLERANCES[key]
    assert actual.shape == expected.shape, f"{key}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(actual).all(), f"{key}: non-finite values"
    err = float((actual.double() - expected.double()).abs().max()) if actual.numel() else 0.0
    e = nmse(actual, expected) if actual.numel() else 0.0
    assert err <= tol.max_abs and e <= tol.nmse, (
        f"{key}: max abs error {err:.3g} (limit {tol.max_abs:g}), NMSE {e:.3g} (limit {tol.nmse:g})"
    )
