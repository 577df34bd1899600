"""Quantization recipes: named, typed, saved with every QuantizedModel.

A recipe says which function-preserving transforms run, which activation sites are clipped at a
percentile instead of their calibration max, and how weights are scaled. Which tensors are int8
is the quantized mixer's dataflow (the deployed graph's), the same for every recipe.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from jetmamba.errors import UsageError


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    archs: tuple[str, ...]  # architectures it applies to
    fuse_norms: bool = False
    residual_rotation: str | None = None  # None | "hadamard" | "klt" (MambaQuant's K H)
    dt_rotation: str | None = None  # None | "klt": the dt_rank space, where the architecture has one
    smooth_out_proj: float | None = None  # MambaQuant's smoothing of out_proj's input, migration alpha
    out_hadamard: bool = False  # online Hadamard before out_proj, H^T fused into it
    per_channel_weights: bool = True  # False: one scale per weight matrix
    # role (an adapter's site_roles key, e.g. "ssm_input") or site -> alpha; others: calibration max
    percentile: dict[str, float] = field(default_factory=dict)
    # site -> grouping kind for per-group scales ("ssd_group", "clusters"); others: per tensor
    grouped: dict[str, str] = field(default_factory=dict)
    sort_and_cluster: tuple[int, int] | None = None  # Quamba2: (head groups, channel groups) per SSD group
    seed: int = 0  # random signs of rotations

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            "w8a8-naive",
            "per-tensor static RTN of weights and activations, no transforms: the baseline every paper beats",
            archs=("mamba1", "mamba2"),
            per_channel_weights=False,
        ),
        Recipe(
            "w8a8-quamba",
            "Quamba: norms fused, residual stream Hadamard-rotated, SSM input (Mamba1 u, Mamba2 x) clipped "
            "at the 99.95th percentile, online Hadamard before out_proj; per-channel weights, per-tensor "
            "static activations",
            archs=("mamba1", "mamba2"),
            fuse_norms=True,
            residual_rotation="hadamard",
            out_hadamard=True,
            percentile={"ssm_input": 0.9995},
        ),
        Recipe(
            "w8a8-mambaquant",
            "MambaQuant: norms fused, KLT-enhanced rotation of the residual stream and of the dt_rank space, "
            "out_proj input smoothed (S-SiLU / gated-norm weight) then Hadamard-rotated; static per-tensor "
            "activation scales where the paper's are dynamic",
            archs=("mamba1", "mamba2"),
            fuse_norms=True,
            residual_rotation="klt",
            dt_rotation="klt",
            smooth_out_proj=0.5,
            out_hadamard=True,
        ),
        Recipe(
            "w8a8-quamba2",
            "Quamba2 (Mamba2): norms fused, residual Hadamard, sort-and-cluster of the SSM input x "
            "(4 head groups x 4 channel groups per SSD group, weights reordered offline, one scale per "
            "cluster), B and C scaled per SSD group, online Hadamard before out_proj",
            archs=("mamba2",),
            fuse_norms=True,
            residual_rotation="hadamard",
            out_hadamard=True,
            sort_and_cluster=(4, 4),
            grouped={"x": "clusters", "B": "ssd_group", "C": "ssd_group"},
        ),
    )
}


def get_recipe(name: str, arch: str) -> Recipe:
    if name not in RECIPES:
        raise UsageError(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}")
    recipe = RECIPES[name]
    if arch not in recipe.archs:
        raise UsageError(f"recipe {name} does not apply to {arch} models (it is for {', '.join(recipe.archs)})")
    return recipe
