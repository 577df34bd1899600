"""Quantization recipes: named, typed, saved with every QuantizedModel.

A recipe says which function-preserving transforms run, which activation sites are clipped at a
percentile instead of their calibration max, and how weights are quantized: int8 per output
channel, or 4-bit (the adapter's ``int4_linears``: in_proj, out_proj and Mamba1's x_proj) by
round-to-nearest or GPTQ on the packed int4 layout. Which tensors are int8 is the quantized
mixer's dataflow (the deployed graph's): the same for every W8A8 / W4A8 recipe; W4A16 layers keep
fp16 activations through the mixer. The embedding and the LM head stay fp16 in every recipe.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from jetmamba.calibration.gptq import GPTQConfig
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
    weight_bits: int = 8  # 8: int8 per output channel; 4: the packed int4 layout (int4_linears)
    act_bits: int = 8  # 8: int8 activations (static scales); 16: fp16 activations through the mixer
    weight_method: str = "rtn"  # "rtn" | "gptq" (4-bit weights)
    group_size: int = 128  # 4-bit weights: input channels per fp16 scale (the layout falls back to 64, 32)
    gptq: GPTQConfig = field(default_factory=GPTQConfig)
    # W4AX: the most sensitive layers (calibration loss when the layer alone is W4A8) go W4A16, the
    # others W4A8; how many: w4a16_layers when set, else round(w4a16_fraction * n_layer)
    mixed_activations: bool = False
    w4a16_layers: int | None = None
    w4a16_fraction: float = 0.25  # Quamba2's W4AX of Mamba2-8B: 14 of 56 layers W4A16

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
        Recipe(
            "w4a16-rtn",
            "baseline: Quamba's transforms (norms fused, residual Hadamard, online Hadamard before out_proj), "
            "round-to-nearest int4 weights (group 128), fp16 activations",
            archs=("mamba1", "mamba2"),
            fuse_norms=True,
            residual_rotation="hadamard",
            out_hadamard=True,
            weight_bits=4,
            act_bits=16,
        ),
        Recipe(
            "w4a8-rtn",
            "baseline: w8a8-quamba's transforms and int8 activations with round-to-nearest int4 weights (group 128)",
            archs=("mamba1", "mamba2"),
            fuse_norms=True,
            residual_rotation="hadamard",
            out_hadamard=True,
            percentile={"ssm_input": 0.9995},
            weight_bits=4,
        ),
        Recipe(
            "w4a16-quamba2",
            "Quamba2 W4A16 (Mamba2): w8a8-quamba2's transforms (reordering, Hadamards), GPTQ int4 weights "
            "(group 128, damping 0.01), fp16 activations",
            archs=("mamba2",),
            fuse_norms=True,
            residual_rotation="hadamard",
            out_hadamard=True,
            sort_and_cluster=(4, 4),
            grouped={"x": "clusters", "B": "ssd_group", "C": "ssd_group"},
            weight_bits=4,
            act_bits=16,
            weight_method="gptq",
        ),
        Recipe(
            "w4a8-quamba2",
            "Quamba2 W4A8 (Mamba2): w8a8-quamba2 with GPTQ int4 weights (group 128, on int8-quantized inputs)",
            archs=("mamba2",),
            fuse_norms=True,
            residual_rotation="hadamard",
            out_hadamard=True,
            sort_and_cluster=(4, 4),
            grouped={"x": "clusters", "B": "ssd_group", "C": "ssd_group"},
            weight_bits=4,
            weight_method="gptq",
        ),
        Recipe(
            "w4a8-mambaquant",
            "MambaQuant W4A8: w8a8-mambaquant's rotations and smoothing, GPTQ int4 weights (group 128), "
            "static int8 activations",
            archs=("mamba1", "mamba2"),
            fuse_norms=True,
            residual_rotation="klt",
            dt_rotation="klt",
            smooth_out_proj=0.5,
            out_hadamard=True,
            weight_bits=4,
            weight_method="gptq",
        ),
        Recipe(
            "w4ax-quamba2",
            "Quamba2 W4AX (Mamba2): GPTQ int4 weights; per layer W4A8 or W4A16, the layers whose W4A8 raises "
            "the calibration loss most go W4A16 (a quarter of them by default, --w4a16-layers)",
            archs=("mamba2",),
            fuse_norms=True,
            residual_rotation="hadamard",
            out_hadamard=True,
            sort_and_cluster=(4, 4),
            grouped={"x": "clusters", "B": "ssd_group", "C": "ssd_group"},
            weight_bits=4,
            weight_method="gptq",
            mixed_activations=True,
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
