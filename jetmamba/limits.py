"""Upper bounds on what an input file may ask jetmamba to build or read, stated once.

Checkpoints, QuantizedModels and bundles are data from elsewhere: a ``config.json`` that says
``d_model: 10**9`` or a header that declares a terabyte tensor must be refused with a one-line
error before anything is allocated, not discovered by the allocator (or the OOM killer). Every
bound is far above the largest real Mamba (Mamba2-8B, FalconMamba-7B, Codestral Mamba 7B: d_model
4096, 64 layers, vocabularies of 256k and less), so no real model comes near one; the checks that
use them are in :meth:`jetmamba.calibration.arch.base.ModelConfig.validate`,
:mod:`jetmamba.calibration.weights` and :mod:`jetmamba.compiler.bundle`.

``docs/reliability.md`` lists them; a test checks that the list there matches this one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SizeLimits:
    # model config fields (integers >= 1; a field not named here is bounded by ``config_int``)
    d_model: int = 1 << 16
    n_layer: int = 1024
    vocab_size: int = 1 << 21
    d_inner: int = 1 << 18
    d_state: int = 1024
    d_conv: int = 64
    dt_rank: int = 1 << 14
    n_heads: int = 1 << 14
    head_dim: int = 1 << 12
    n_groups: int = 1 << 12
    chunk_size: int = 1 << 16
    config_int: int = 1 << 18
    # weights a config implies (embedding + at least in_proj and out_proj per layer): 10^11 is
    # 200 GB in fp16, a dozen times the largest Mamba
    parameters: int = 10**11
    # files read whole before any check of their own is possible
    config_json_bytes: int = 16 << 20
    manifest_json_bytes: int = 16 << 20
    safetensors_header_bytes: int = 100 << 20
    tensor_rank: int = 8

    def config_field(self, name: str) -> int:
        """The largest value a config's integer field ``name`` may take."""
        return getattr(self, name) if name in _CONFIG_FIELDS else self.config_int


_CONFIG_FIELDS = frozenset(
    ("d_model", "n_layer", "vocab_size", "d_inner", "d_state", "d_conv", "dt_rank", "n_heads", "head_dim",
     "n_groups", "chunk_size")
)  # fmt: skip

LIMITS = SizeLimits()


def implied_parameters(d_model: int, n_layer: int, vocab_size: int, d_inner: int, tie_embeddings: bool) -> int:
    """A lower bound on the parameters a Mamba config implies: the embedding (and an untied LM
    head) plus, per layer, in_proj's 2 * d_inner and out_proj's d_inner rows of d_model (Mamba2's
    in_proj is larger still). Exact integer arithmetic: it never overflows, whatever the config."""
    embedding = vocab_size * d_model * (1 if tie_embeddings else 2)
    return embedding + n_layer * 3 * d_inner * d_model


def describe() -> dict[str, int]:
    """The bounds as a plain dict (for docs and ``--json``)."""
    return {name: getattr(LIMITS, name) for name in LIMITS.__dataclass_fields__}


__all__ = ["LIMITS", "SizeLimits", "describe", "implied_parameters"]
