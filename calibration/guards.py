"""Numerical guards: say where a NaN or Inf first appeared, and warn about degenerate ranges.

A non-finite value found at the logits says little: it was produced somewhere upstream, layers
earlier. Calibration names the observed site and window where one first appears
(:class:`~jetmamba.calibration.observers.NonFiniteActivation`); evaluation names the window and,
for models made of ``layers[i].mixer`` (the fp reference model, the QuantizedModel simulation),
re-runs that window to find the first layer whose output is not finite.

A range of zero (an activation site that is all zeros on the calibration data, a weight row of
zeros) cannot set a scale: :func:`jetmamba.compiler.ops.quant.scale_for` gives the smallest
normal fp32 scale instead of dividing by zero, under which the zeros stay zeros. That is valid,
but worth a warning: a real model rarely has a dead site or row, and a broken checkpoint often does.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("jetmamba")

TINY = torch.finfo(torch.float32).tiny  # the scale scale_for gives a zero or denormal range


def warn_degenerate_scale(name: str, scale: torch.Tensor) -> int:
    """Warn when ``scale`` (a scalar or per channel) holds the zero-range floor; returns how many."""
    n = int((torch.as_tensor(scale, dtype=torch.float32) <= TINY).sum())
    if n:
        what = "is all zeros" if torch.as_tensor(scale).numel() == 1 else f"has {n} channel(s) of zeros"
        log.warning(
            "%s %s on the calibration data (or denormal): it gets the smallest normal scale (%.3g), its int8 "
            "values are 0", name, what, TINY,
        )  # fmt: skip
    return n


def warn_zero_weight_rows(module: torch.nn.Module, prefix: str) -> int:
    """Warn about the weight rows (output channels) of ``module``'s matrices that are all zeros;
    their per-channel scale is the floor and they quantize to zeros. Returns how many rows."""
    total = 0
    for name, w in module.named_parameters():
        if w.ndim < 2 or not w.is_floating_point() or name.rsplit(".", 1)[-1] != "weight":
            continue
        zero = int((w.detach().reshape(w.shape[0], -1) == 0).all(dim=1).sum())
        if zero:
            log.warning("%s.%s has %d weight row(s) of zeros: they get the smallest normal scale and stay 0",
                        prefix, name, zero)  # fmt: skip
            total += zero
    return total


@torch.inference_mode()
def first_non_finite_layer(model, input_ids: torch.Tensor) -> str | None:
    """Where a NaN or Inf first appears when ``model`` runs ``input_ids``: ``layers.{i}.mixer
    output``, ``the input of layers.{i}.mixer`` (a norm or the residual sum), ``the embedding or
    layers.0 norm``, ``the final norm or LM head (after the last layer)``; None when the model has no
    ``layers[i].mixer`` to watch or nothing is non-finite."""
    layers = getattr(model, "layers", None)
    if layers is None or not all(isinstance(getattr(b, "mixer", None), torch.nn.Module) for b in layers):
        return None
    seen: list[str] = []

    def watch(name):
        def hook(module, args, output):
            out = output[0] if isinstance(output, tuple) else output
            if not seen and isinstance(args[0], torch.Tensor) and not bool(torch.isfinite(args[0]).all()):
                seen.append("the embedding or layers.0 norm" if name == "layers.0.mixer" else f"the input of {name}")
            if not seen and isinstance(out, torch.Tensor) and not bool(torch.isfinite(out).all()):
                seen.append(f"{name} output")

        return hook

    handles = [block.mixer.register_forward_hook(watch(f"layers.{i}.mixer")) for i, block in enumerate(layers)]
    try:
        logits = model(input_ids)
    finally:
        for h in handles:
            h.remove()
    if seen:
        return seen[0]
    if not bool(torch.isfinite(logits).all()):
        return "the final norm or LM head (after the last layer)"
    return None
