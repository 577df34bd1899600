"""ONNX Runtime on the lowered graph vs the QuantizedModel simulation: perplexity and time.

For each fixture and recipe: quantize (calibration on WikiText-2 validation), lower to the
function-body graph, evaluate both executors with the eval protocol on the same tokens:

    python benchmarks/onnx_vs_simulation.py --max-tokens 32768 --samples 64
    python benchmarks/onnx_vs_simulation.py --recipes w4a16-rtn,w4a8-quamba2 ...   # a subset

Prints one JSON object per (model, recipe): both perplexities, their relative difference (the
bundle bound is 0.1 %), lowering time and evaluation times.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shared", default=str(Path(__file__).resolve().parents[1].parent / "shared"))
    p.add_argument("--max-tokens", type=int, default=32768)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--recipes", default="", help="comma-separated recipe names (default: every recipe)")
    args = p.parse_args()

    import torch

    from jetmamba.calibration.checkpoint import load_model, open_checkpoint
    from jetmamba.calibration.data import read_text, sample_windows, tokenize
    from jetmamba.calibration.evaluate import perplexity
    from jetmamba.calibration.quantize import quantize_model
    from jetmamba.calibration.recipes import RECIPES
    from jetmamba.compiler.lowering import lower_quantized
    from jetmamba.compiler.ort import OrtModel
    from jetmamba.compiler.passes import attach_functions, run_pipeline

    shared = Path(args.shared)
    for name in ("mamba1-tiny-wt2", "mamba2-tiny-wt2"):
        ckpt = open_checkpoint(shared / "models" / name)
        tok = ckpt.tokenizer()
        calib = sample_windows(tokenize(read_text(shared / "data" / "wikitext2-valid.txt"), tok), args.samples,
                               args.seq_len, seed=0)  # fmt: skip
        tokens = tokenize(read_text(shared / "data" / "wikitext2-test.txt"), tok, args.max_tokens)
        chosen = [r for r in RECIPES.values() if ckpt.config.arch in r.archs]
        if args.recipes:
            chosen = [r for r in chosen if r.name in args.recipes.split(",")]
        for recipe in chosen:
            q = quantize_model(load_model(ckpt), recipe, calib, show_progress=False)
            start = time.perf_counter()
            graph = attach_functions(run_pipeline(lower_quantized(q).model()))
            lower_s = time.perf_counter() - start
            start = time.perf_counter()
            ort_ppl = perplexity(OrtModel(graph), tokens, args.seq_len, show_progress=False)
            ort_s = time.perf_counter() - start
            start = time.perf_counter()
            sim_ppl = perplexity(q, tokens, args.seq_len, show_progress=False)
            sim_s = time.perf_counter() - start
            print(json.dumps({
                "model": name, "recipe": recipe.name, "windows": ort_ppl.windows,
                "ort_perplexity": ort_ppl.perplexity, "simulation_perplexity": sim_ppl.perplexity,
                "relative_difference": ort_ppl.perplexity / sim_ppl.perplexity - 1,
                "lower_seconds": round(lower_s, 2), "ort_seconds": round(ort_s, 1),
                "simulation_seconds": round(sim_s, 1), "threads": torch.get_num_threads(),
            }), flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
