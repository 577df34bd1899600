"""Small bundles of the shared fixtures, made quickly for the runtime tests.

A QuantizedModel calibrated on 4 random windows of 128 bytes (about a second), lowered and written
as a bundle; the tests compare the bundle with the returned model.
"""

from __future__ import annotations

from pathlib import Path

import torch

# the recipe each architecture deploys with
RECIPE = {"mamba1": "w8a8-quamba", "mamba2": "w8a8-quamba2"}


def quantized_bundle(checkpoint: Path, recipe: str, out: Path):
    """(QuantizedModel, bundle directory) of ``checkpoint`` quantized with ``recipe``."""
    from jetmamba.calibration.checkpoint import load_model
    from jetmamba.calibration.quantize import quantize_model
    from jetmamba.calibration.recipes import RECIPES
    from jetmamba.compiler.bundle import write_bundle

    windows = torch.randint(0, 256, (4, 128), generator=torch.Generator().manual_seed(0))
    q = quantize_model(load_model(checkpoint), RECIPES[recipe], windows, show_progress=False)
    write_bundle(q, out, board="orin-nano-8gb")  # byte-level fixtures: no tokenizer file
    return q, out


def fp_bundle(checkpoint: Path, out: Path, dtype=torch.float16):
    """(fp32 reference model, bundle of it lowered unquantized in ``dtype``); an fp32 bundle keeps
    its SSM state in fp32 too, so that decode and chunked prefill are exact."""
    import inspect

    from jetmamba.calibration.checkpoint import load_model
    from jetmamba.compiler.bundle import write_bundle

    model = load_model(checkpoint)
    options = {}
    if dtype == torch.float32 and "ssm_state_dtype" in inspect.signature(write_bundle).parameters:
        options["ssm_state_dtype"] = "float32"  # the compile option (fp32 graphs had an fp32 state before it)
    write_bundle(model, out, board="orin-nano-8gb", dtype=dtype, **options)
    return model, out
