"""fp model + recipe + calibration windows -> QuantizedModel.

1. transform: the recipe's function-preserving rewrites (norm fusion, residual rotation, online
   Hadamard before out_proj);
2. calibrate: the calibration windows stream through the transformed fp model in batches, and an
   observer per (layer, site) keeps the statistic its scale needs: max |x|, or the exact
   alpha-percentile of |x| where the recipe clips. Memory does not grow with the number of
   windows (one batch's activations plus each percentile's tail);
3. quantize: weights to int8 by round-to-nearest (4-bit recipes: the adapter's ``int4_linears``
   to int4 by round-to-nearest or GPTQ, layer by layer: one layer's Hessians in memory at a time),
   scales from the observers, assembled by each layer's adapter into the quantized mixer;
4. W4AX: each layer's W4A8 and W4A16 mixers share their int4 weights; the layers whose W4A8 raises
   the calibration loss most keep W4A16 (the recipe's budget), the choice recorded per layer.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from jetmamba.calibration.cluster import sort_and_cluster
from jetmamba.calibration.gptq import Hessian, gptq_int4
from jetmamba.calibration.guards import warn_degenerate_scale, warn_zero_weight_rows
from jetmamba.calibration.hadamard import random_hadamard
from jetmamba.calibration.model import MambaLM, upcast
from jetmamba.calibration.observers import AbsMax, ChannelMeanAbs, Covariance, NonFiniteActivation, Percentile
from jetmamba.calibration.qlayers import QuantLinear4, int4_group_size, rtn_int4
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
from jetmamba.compiler.ops.quant import fake_quantize, scale_for
from jetmamba.errors import DataError, UnsupportedError, UsageError
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
            return scale, self.observer.saturated(scale)
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
                try:
                    model.run_blocks(batch)
                except NonFiniteActivation as exc:  # name the window, not just the site
                    raise exc.on_windows(start, batch.shape[0], windows.shape[0]) from None
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
    check_weight_layout(model, recipe)
    fp = transform(model, recipe, windows, batch_size=batch_size, show_progress=show_progress, inplace=inplace)
    stats = calibrate(fp, windows, recipe, batch_size=batch_size, show_progress=show_progress)
    # built on the meta device, every tensor assigned below: the int8 model grows while the fp
    # layers are released, instead of a zero-filled copy of it existing next to the fp model
    q = QuantizedModel(fp.config, recipe.to_dict(), act_dtype=act_dtype, device="meta")
    q.embedding = fp.embedding.weight.detach().to(act_dtype).clone()
    q.lm_head = fp.lm_head_weight.detach().to(act_dtype).clone()
    q.norm_f_weight = fp.norm_f.weight.detach().float().clone()
    saturation = {}
    layer_scales = []
    for i, block in enumerate(fp.layers):
        scales = {}
        for site, s in stats[i].items():
            kind = recipe.grouped.get(site)
            groups = None if kind is None else block.mixer.channel_groups(site, kind)
            scales[site], saturated = s.scale_and_saturation(groups)
            warn_degenerate_scale(s.name, scales[site])
            if saturated:
                saturation[s.name] = saturated
        layer_scales.append(scales)
    if recipe.weight_bits == 4 and recipe.weight_method == "gptq":
        # W4A8's GEMMs read int8 inputs, so their Hessians are taken on the quantized inputs; W4AX's
        # int4 weights serve both activation widths and are fitted to the fp inputs
        int8_inputs = recipe.act_bits == 8 and not recipe.mixed_activations
        int4 = gptq_layers(fp, recipe, windows, layer_scales if int8_inputs else None, act_dtype=act_dtype,
                           batch_size=batch_size, show_progress=show_progress)  # fmt: skip
    else:
        int4 = itertools.repeat(None)  # round to nearest inside the adapters
    both_widths = []  # W4AX: (W4A8 mixer, W4A16 mixer) of each layer, sharing their int4 weights
    for i, (block, qblock, scales) in enumerate(zip(fp.layers, q.layers, layer_scales, strict=True)):
        linears = next(int4)
        qblock.norm_weight = block.norm.weight.detach().float().clone()
        qblock.in_scale = torch.tensor(float(scales["in_proj.input"]), device=fp.device)
        rd = recipe.to_dict()
        warn_zero_weight_rows(block.mixer, f"layers.{i}.mixer")
        with upcast(block, fp.compute_dtype):
            if recipe.mixed_activations:
                if linears is None:  # rounded once, shared by both mixers
                    linears = {name: _rtn_linear(getattr(block.mixer, name), recipe, act_dtype)
                               for name in fp.adapter.int4_linears}  # fmt: skip
                both_widths.append(tuple(
                    fp.adapter.quantize_mixer(block.mixer, scales, rd, act_dtype=act_dtype, act_bits=bits,
                                              linears=linears)
                    for bits in (8, 16)
                ))  # fmt: skip
                qblock.mixer = both_widths[-1][0]
            else:
                qblock.mixer = fp.adapter.quantize_mixer(
                    block.mixer, scales, rd, act_dtype=act_dtype, act_bits=recipe.act_bits, linears=linears
                )
                qblock.act_bits = recipe.act_bits
        if inplace:
            fp.layers[i] = torch.nn.Module()  # release the fp layer: its quantized twin now exists
    calibration = {"windows": int(windows.shape[0]), "seq_len": int(windows.shape[1]), **(provenance or {})}
    if recipe.mixed_activations:
        calibration["w4ax"] = choose_w4a16_layers(
            q, both_widths, w4a16_budget(recipe, fp.config.n_layer), windows, batch_size=batch_size,
            show_progress=show_progress,
        )  # fmt: skip
    q.provenance = Provenance(calibration=calibration, saturation=saturation, seconds=time.perf_counter() - start)
    return q


def check_weight_layout(model: MambaLM, recipe: Recipe) -> None:
    """Refuse a 4-bit recipe on a model whose int4 GEMMs cannot hold the packed layout's groups."""
    if recipe.weight_bits != 4:
        return
    mixer = model.layers[0].mixer
    for name in model.adapter.int4_linears:
        k = getattr(mixer, name).weight.shape[1]
        if k % 2 or int4_group_size(k, recipe.group_size) is None:
            raise UnsupportedError(
                f"recipe {recipe.name}: {name} has {k} input channels, not a multiple of 32 (int4 groups of "
                "128, 64 or 32); use an 8-bit recipe"
            )


def w4a16_budget(recipe: Recipe, n_layer: int) -> int:
    """How many layers a W4AX recipe keeps W4A16."""
    n = recipe.w4a16_layers if recipe.w4a16_layers is not None else round(recipe.w4a16_fraction * n_layer)
    if not 0 <= n <= n_layer:
        raise UsageError(f"--w4a16-layers: {n} is not between 0 and the model's {n_layer} layers")
    return n


def with_w4a16_budget(recipe: Recipe, value: str) -> Recipe:
    """The recipe with a W4AX budget from the command line: a layer count ("12") or a fraction
    of the layers ("0.25", "25%")."""
    if not recipe.mixed_activations:
        raise UsageError(f"--w4a16-layers applies to W4AX recipes only, not {recipe.name}")
    text = value.strip()
    try:
        if text.endswith("%"):
            fraction = float(text[:-1]) / 100
        elif "." in text:
            fraction = float(text)
        else:
            count = int(text)
            if count < 0:
                raise ValueError
            return dataclasses.replace(recipe, w4a16_layers=count)
    except ValueError:
        raise UsageError(f"--w4a16-layers: {value!r} is not a layer count or a fraction (0.25, 25%)") from None
    if not 0 <= fraction <= 1:
        raise UsageError(f"--w4a16-layers: a fraction must lie in [0, 1], got {value!r}")
    return dataclasses.replace(recipe, w4a16_layers=None, w4a16_fraction=fraction)


def _rtn_linear(lin: torch.nn.Linear, recipe: Recipe, act_dtype) -> QuantLinear4:
    codes, scales = rtn_int4(lin.weight, int4_group_size(lin.weight.shape[1], recipe.group_size))
    return QuantLinear4.from_codes(codes, scales, lin.bias, out_dtype=act_dtype)


@torch.inference_mode()
def gptq_layers(
    fp: MambaLM, recipe: Recipe, windows: torch.Tensor, int8_scales: list[dict] | None, *,
    act_dtype=torch.float16, batch_size: int = 8, show_progress: bool = True,
) -> Iterator[dict[str, QuantLinear4]]:  # fmt: skip
    """GPTQ of every layer's int4 GEMMs, one layer at a time: yields, per layer, its name -> packed
    layer. The residual stream of every window is kept between layers (one [n, l, d_model] fp32
    tensor); a layer's Hessians exist only while that layer is quantized. The inputs are the fp
    model's (each layer sees the fp outputs of the layers before it). ``int8_scales``: the static
    scale of each layer's sites, to take the Hessians on int8-quantized inputs (W4A8)."""
    sites = fp.adapter.int4_linears
    device = fp.device
    stream = []
    for start in range(0, windows.shape[0], batch_size):
        h = fp.embedding(windows[start : start + batch_size].to(device))
        stream.append(h.to(fp.compute_dtype) if fp.compute_dtype is not None else h)
    with progress(total=fp.config.n_layer, desc="GPTQ", unit="layer", disable=not show_progress) as bar:
        for i, block in enumerate(fp.layers):
            mixer = block.mixer
            hessians = {name: Hessian(getattr(mixer, name).weight.shape[1], device) for name in sites}
            readers = {}
            for name, site in sites.items():
                readers.setdefault(site, []).append(hessians[name])

            def accumulate(site, t, readers=readers, scales=None if int8_scales is None else int8_scales[i]):
                if site in readers:
                    x = t.float() if scales is None else fake_quantize(t.float(), scales[site])
                    for hessian in readers[site]:
                        hessian.update(x)

            mixer.observe = accumulate
            try:
                with upcast(block, fp.compute_dtype):
                    for j, residual in enumerate(stream):
                        out, _ = mixer(block.norm(residual.to(block.norm.weight.dtype)), None, scan_impl=fp.scan_impl)
                        stream[j] = (residual.float() if fp.config.residual_in_fp32 else residual) + out
            finally:
                mixer.observe = None
            layers = {}
            with upcast(block, fp.compute_dtype):
                for name, hessian in hessians.items():
                    lin = getattr(mixer, name)
                    group = int4_group_size(lin.weight.shape[1], recipe.group_size)
                    codes, scales = gptq_int4(lin.weight, hessian.result(), group, recipe.gptq)
                    layers[name] = QuantLinear4.from_codes(codes.to(device), scales.to(device), lin.bias,
                                                           out_dtype=act_dtype)  # fmt: skip
            del hessians, readers
            bar.update(1)
            yield layers


@torch.inference_mode()
def calibration_loss(model, windows: torch.Tensor, batch_size: int = 8) -> float:
    """Mean next-token cross-entropy of ``model`` over ``windows``."""
    total, count = 0.0, 0
    for start in range(0, windows.shape[0], batch_size):
        batch = windows[start : start + batch_size].to(model.device)
        logits = model(batch)[:, :-1]
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1), reduction="sum")
        total, count = total + float(nll), count + batch[:, 1:].numel()
    return total / count


SENSITIVITY_WINDOWS = 32  # calibration windows the W4AX sensitivity is measured on (n_layer + 1 passes)


def choose_w4a16_layers(q: QuantizedModel, both_widths: list[tuple], budget: int, windows: torch.Tensor, *,
                        batch_size: int = 8, show_progress: bool = True) -> dict:  # fmt: skip
    """W4AX: with every layer W4A16, the calibration loss when one layer alone goes W4A8 is that
    layer's sensitivity; the ``budget`` most sensitive layers stay W4A16, the others go W4A8.
    Sets each block's mixer and ``act_bits``; returns the measurement (saved in the provenance)."""
    windows = windows[:SENSITIVITY_WINDOWS]

    def use(i, bits):
        q.layers[i].mixer = both_widths[i][0 if bits == 8 else 1]
        q.layers[i].act_bits = bits

    for i in range(len(q.layers)):
        use(i, 16)
    base = calibration_loss(q, windows, batch_size)
    sensitivity = []
    with progress(total=len(q.layers), desc="W4AX sensitivity", unit="layer", disable=not show_progress) as bar:
        for i in range(len(q.layers)):
            use(i, 8)
            sensitivity.append(calibration_loss(q, windows, batch_size) - base)
            use(i, 16)
            bar.update(1)
    keep = set(sorted(range(len(q.layers)), key=lambda i: -sensitivity[i])[:budget])
    for i in range(len(q.layers)):
        use(i, 16 if i in keep else 8)
    return {
        "metric": "calibration loss increase (nats/token) when the layer alone is W4A8, the others W4A16",
        "windows": int(windows.shape[0]),
        "w4a16_loss": base,
        "sensitivity": sensitivity,
        "w4a16_layers": sorted(keep),
    }


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
