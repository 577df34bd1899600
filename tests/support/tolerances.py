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
    # the CausalConv1dFp kernel (fp32 maths, fused multiply-adds) against its reference: a few fp32 ulps
    # of outputs up to ~250 (observed 5e-7); fp16 outputs below 32 one rounding step apart (observed 4.9e-4)
    "conv.kernel.fp32": Tolerance(max_abs=5e-5, nmse=1e-12, note="CausalConv1dFp kernel vs reference, fp32"),
    "conv.kernel.fp16": Tolerance(max_abs=1.6e-2, nmse=1e-6, note="CausalConv1dFp kernel vs reference, fp16"),
    "norm.fp32": Tolerance(max_abs=1e-5, nmse=1e-12),
    # the RMSNorm / GatedRMSNorm kernels against their references, outputs below 8: the sums of squares
    # are added in another order, so an fp32 output is an ulp or two apart (observed 7e-7) and an fp16
    # output one rounding step (2^-8 below 8; observed 2e-3)
    "norm.kernel.fp32": Tolerance(max_abs=1e-5, nmse=1e-12, note="RMSNorm / GatedRMSNorm kernels, fp32"),
    "norm.kernel.fp16": Tolerance(max_abs=4e-3, nmse=1e-7, note="RMSNorm / GatedRMSNorm kernels, fp16"),
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
    # the SelectiveScan(Fp) kernels against their fp32 reference, both divided by the reference's
    # largest magnitude: fp16 outputs are one rounding (<= 2^-11) apart (emulated: 4.7e-4, NMSE 2e-7);
    # fp32 outputs differ by the exponentials (the GPU's ex2.approx) and summation order (emulated: 4.5e-7)
    "kernel.scan.fp16": Tolerance(max_abs=1e-3, nmse=1e-6, note="relative to max |reference|"),
    "kernel.scan.fp32": Tolerance(max_abs=1e-5, nmse=1e-10, note="relative to max |reference|"),
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
