"""fp model + recipe + calibration windows -> QuantizedModel.

1. transform: the recipe's function-preserving rewrites (norm fusion, residual rotation, online
   Hadamard before out_proj);
2. calibrate: the calibration windows stream through the transformed fp model in batches, and an
   observer per (layer, site) keeps the statistic its scale needs: max |x|, or the exact
   alpha-percentile of |x| where the recipe clips. Memory does not grow with the number of
   windows (one batch's activations plus each percentile's tail);
3. quantize: weights to int8 by round-to-nearest, scales from the observers, assembled by each
   layer's adapter into the quantized mixer.
"""

from __future__ import annotations

import copy
import time

import torch

from jetmamba.calibration.cluster import sort_and_cluster
from jetmamba.calibration.hadamard import random_hadamard
from jetmamba.calibration.model import MambaLM, upcast
from jetmamba.calibration.observers import AbsMax, ChannelMeanAbs, Covariance, Percentile
from jetmamba.calibration.quantized import Provenance, QuantizedModel
from jetmamba.calibration.recipes import Recipe
from jetmamba.calibration.transforms import (
    fuse_norms,
    hadamard_before_out_proj,
    klt_rotation,
    reorder_mamba2,
    rotate_dt_rank,
    rotate_residual,
    smooth_out_proj,
)
from jetmamba.compiler.ops.quant import scale_for
from jetmamba.errors import DataError, UnsupportedError
from jetmamba.progress import progress


def transform(
    model: MambaLM, recipe: Recipe, windows: torch.Tensor | None = None, *, batch_size: int = 8,
    show_progress: bool = True, inplace: bool = False,
) -> MambaLM:  # fmt: skip
    """The recipe's function-preserving rewrites, in order; the input model is not modified unless
    ``inplace`` (then it is rewritten and returned: one copy of a large model in memory).

    Rewrites that depend on activations (KLT, smoothing) take their statistics from one pass of
    ``windows`` through the norm-fused model (internal activations do not depend on how the
    residual stream is rotated, so one pass serves them all)."""
    if model.config.arch not in recipe.archs:
        raise UnsupportedError(f"recipe {recipe.name} does not apply to {model.config.arch} models")
    m = model if inplace else copy.deepcopy(model)
    if recipe.fuse_norms or recipe.residual_rotation:
        m = fuse_norms(m, inplace=True)
    dt_klt = recipe.dt_rotation == "klt" and "dt_r" in m.adapter.sites
    wanted = [{} for _ in m.layers]
    ssm_input = m.adapter.site_roles["ssm_input"]
    if recipe.residual_rotation == "klt":
        wanted[0]["in_proj.input"] = Covariance("layers.0.mixer.in_proj.input")
    for i, obs in enumerate(wanted):
        if dt_klt:
            obs["dt_r"] = Covariance(f"layers.{i}.mixer.dt_r")
        if recipe.smooth_out_proj is not None:
            obs["out_proj.input"] = AbsMax(f"layers.{i}.mixer.out_proj.input", per_channel=True)
        if recipe.sort_and_cluster is not None:
            obs[ssm_input] = ChannelMeanAbs(f"layers.{i}.mixer.{ssm_input}")
    if any(wanted):
        if windows is None:
            raise ValueError(f"recipe {recipe.name} needs calibration windows for its rotations")
        observe(m, windows, wanted, batch_size=batch_size, show_progress=show_progress, desc="statistics")
    if recipe.residual_rotation == "hadamard":
        m = rotate_residual(m, random_hadamard(m.config.d_model, seed=recipe.seed), inplace=True)
    elif recipe.residual_rotation == "klt":
        m = rotate_residual(m, klt_rotation(wanted[0]["in_proj.input"].covariance(), seed=recipe.seed), inplace=True)
    elif recipe.residual_rotation is not None:
        raise ValueError(f"unknown residual rotation {recipe.residual_rotation!r}")
    if dt_klt:
        m = rotate_dt_rank(m, [klt_rotation(obs["dt_r"].covariance(), seed=recipe.seed + 1 + i)
                               for i, obs in enumerate(wanted)], inplace=True)  # fmt: skip
    if recipe.smooth_out_proj is not None:
        act = [obs["out_proj.input"].result() for obs in wanted]
        m = smooth_out_proj(m, act, alpha=recipe.smooth_out_proj, inplace=True)
    if recipe.sort_and_cluster is not None:
        heads, dims = recipe.sort_and_cluster
        c = m.config
        m = reorder_mamba2(
            m, [sort_and_cluster(obs[ssm_input].result(), c.n_heads, c.head_dim, c.n_groups, heads, dims)
                for obs in wanted],
            inplace=True,
        )  # fmt: skip
    if recipe.out_hadamard:
        m = hadamard_before_out_proj(m, inplace=True)
    return m


class _SiteStats:
    """The observer of one activation site: the exact alpha-percentile of |x| (per tensor; sized at
    its first update) or the per-channel max |x|, reduced per tensor or per channel group."""

    def __init__(self, name: str, alpha: float | None, windows: int):
        self.name, self.alpha, self.windows = name, alpha, windows
        self.observer: AbsMax | Percentile | None = None if alpha is not None else AbsMax(name, per_channel=True)

    def update(self, x: torch.Tensor) -> None:
        if self.observer is None:
            per_window = x.numel() // x.shape[0]
            self.observer = Percentile(self.alpha, per_window * self.windows, self.name)
        self.observer.update(x)

    def scale_and_saturation(self, groups: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
        """(scale, values clipped on the calibration data): a scalar, or with ``groups`` (a group
        id per channel) a per-channel vector holding each group's scale."""
        if self.observer is None:
            raise DataError(f"no data was observed at {self.name}")
        if isinstance(self.observer, Percentile):
            if groups is not None:
                raise ValueError(f"{self.name}: a percentile scale is per tensor, it cannot be grouped")
            scale = scale_for(self.observer.result())
            return scale, int((self.observer.top > 127.5 * float(scale)).sum())
        absmax = self.observer.result()
        if groups is None:
            return scale_for(absmax.max()), 0
        per_group = torch.zeros(int(groups.max()) + 1, dtype=absmax.dtype).scatter_reduce(
            0, groups, absmax, reduce="amax", include_self=False
        )
        return scale_for(per_group[groups]), 0


@torch.inference_mode()
def observe(model: MambaLM, windows: torch.Tensor, observers: list[dict], *, batch_size: int = 8,
            show_progress: bool = True, desc: str = "calibrating") -> None:  # fmt: skip
    """Stream ``windows`` through ``model``; ``observers[layer][site].update(t)`` sees each site."""
    for i, block in enumerate(model.layers):
        block.mixer.observe = lambda site, t, obs=observers[i]: obs[site].update(t) if site in obs else None
    try:
        with progress(total=windows.shape[0], desc=desc, unit="win", disable=not show_progress) as bar:
            for start in range(0, windows.shape[0], batch_size):
                batch = windows[start : start + batch_size].to(model.device)
                model.run_blocks(batch)
                bar.update(batch.shape[0])
    finally:
        for block in model.layers:
            block.mixer.observe = None


@torch.inference_mode()
def calibrate(
    model: MambaLM, windows: torch.Tensor, recipe: Recipe, *, batch_size: int = 8, show_progress: bool = True
) -> list[dict[str, _SiteStats]]:
    """Observe every site of every layer over ``windows`` ([n, l] token ids)."""
    roles = model.adapter.site_roles
    alpha = {roles.get(k, k): v for k, v in recipe.percentile.items()}
    unknown = sorted(set(alpha) - set(model.adapter.sites))
    if unknown:
        raise ValueError(f"recipe {recipe.name}: no site or role {unknown} in {model.config.arch}")
    stats = [
        {
            site: _SiteStats(f"layers.{i}.mixer.{site}", alpha.get(site), windows.shape[0])
            for site in model.adapter.sites
        }
        for i in range(model.config.n_layer)
    ]
    observe(model, windows, stats, batch_size=batch_size, show_progress=show_progress)
    return stats


def check_finite_weights(model: torch.nn.Module) -> None:
    """Refuse a model with a NaN or Inf weight, naming the tensor: a scale computed from it would
    be NaN and every activation after it too, far from where the fault is."""
    for name, t in model.state_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise DataError(f"non-finite weight (NaN or Inf): {name} has {bad} of {t.numel()} values NaN or Inf")


def quantize_model(
    model: MambaLM,
    recipe: Recipe,
    windows: torch.Tensor,
    *,
    act_dtype: torch.dtype = torch.float16,
    batch_size: int = 8,
    show_progress: bool = True,
    provenance: dict | None = None,
    inplace: bool = False,
) -> QuantizedModel:
    """Transform, calibrate on ``windows`` and quantize ``model`` with ``recipe``.

    ``inplace``: the model is the quantizer's to consume (rewritten, then each layer released as
    soon as it is quantized), so peak memory stays near one copy of the model; with
    ``model.compute_dtype`` set the fp weights can be held in fp16 and every block runs in fp32."""
    start = time.perf_counter()
    if windows.numel() == 0:
        raise DataError("no calibration windows")
    check_finite_weights(model)
    fp = transform(model, recipe, windows, batch_size=batch_size, show_progress=show_progress, inplace=inplace)
    stats = calibrate(fp, windows, recipe, batch_size=batch_size, show_progress=show_progress)
    # built on the meta device, every tensor assigned below: the int8 model grows while the fp
    # layers are released, instead of a zero-filled copy of it existing next to the fp model
    q = QuantizedModel(fp.config, recipe.to_dict(), act_dtype=act_dtype, device="meta")
    q.embedding = fp.embedding.weight.detach().to(act_dtype).clone()
    q.lm_head = fp.lm_head_weight.detach().to(act_dtype).clone()
    q.norm_f_weight = fp.norm_f.weight.detach().float().clone()
    saturation = {}
    for i, (block, qblock) in enumerate(zip(fp.layers, q.layers, strict=True)):
        scales = {}
        for site, s in stats[i].items():
            kind = recipe.grouped.get(site)
            groups = None if kind is None else block.mixer.channel_groups(site, kind)
            scales[site], saturated = s.scale_and_saturation(groups)
            if saturated:
                saturation[s.name] = saturated
        qblock.norm_weight = block.norm.weight.detach().float().clone()
        qblock.in_scale = torch.tensor(float(scales["in_proj.input"]), device=fp.device)
        with upcast(block, fp.compute_dtype):
            qblock.mixer = fp.adapter.quantize_mixer(block.mixer, scales, recipe.to_dict(), act_dtype=act_dtype)
        if inplace:
            fp.layers[i] = torch.nn.Module()  # release the fp layer: its int8 twin now exists
    q.provenance = Provenance(
        calibration={"windows": int(windows.shape[0]), "seq_len": int(windows.shape[1]), **(provenance or {})},
        saturation=saturation,
        seconds=time.perf_counter() - start,
    )
    return q


@torch.inference_mode()
def self_calibration_windows(model: MambaLM, count: int, length: int, seed: int = 0) -> torch.Tensor:
    """[count, length] token windows sampled from the model itself (temperature 1, seeded), for
    users without calibration text: each window starts from a random token and is continued by
    the model, all windows in one batch through the state API."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, model.config.vocab_size, (count,), generator=g)
    out = [tokens]
    # sampled text needs no fp32 maths: with weights held in fp16, upcasting every block at every
    # step would cost more than the step itself, so the model runs in its weights' dtype here
    compute_dtype, model.compute_dtype = model.compute_dtype, None
    try:
        logits, state = model.prefill(tokens[:, None].to(model.device))
        for _ in range(length - 1):
            probs = torch.softmax(logits[:, -1].float().cpu() if logits.ndim == 3 else logits.float().cpu(), -1)
            tokens = torch.multinomial(probs, 1, generator=g).squeeze(-1)
            out.append(tokens)
            logits, state = model.step(tokens.to(model.device), state)
    finally:
        model.compute_dtype = compute_dtype
    return torch.stack(out, dim=1)
