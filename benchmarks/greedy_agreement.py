"""Greedy generation through bundles (ONNX Runtime) against the models they were compiled from.

For each fixture: a QuantizedModel (Mamba1 w8a8-quamba, Mamba2 w8a8-quamba2; calibration 4 x 128
random bytes, as the tests make them) and the fp32 model lowered to an fp16 bundle. Prompts are
48-character windows of WikiText-2 test every 12000 characters:

    python benchmarks/greedy_agreement.py --prompts 17 --new-tokens 64

Prints one JSON object per (model, bundle): how many prompts agree token for token, and for each
that does not, the first differing position and the reference's logit margin between its token and
the bundle's there (a small margin is a rounding tie; docs/runtime.md).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shared", default=str(Path(__file__).resolve().parents[1].parent / "shared"))
    p.add_argument("--prompts", type=int, default=17)
    p.add_argument("--new-tokens", type=int, default=64)
    args = p.parse_args()

    import torch

    from jetmamba.calibration.checkpoint import load_model
    from jetmamba.calibration.quantize import quantize_model
    from jetmamba.calibration.recipes import RECIPES
    from jetmamba.compiler.bundle import write_bundle
    from jetmamba.runtime.backends import open_backend
    from jetmamba.runtime.backends.model import ModelBackend
    from jetmamba.runtime.generate import generate

    shared = Path(args.shared)
    text = (shared / "data" / "wikitext2-test.txt").read_text(encoding="utf-8")
    prompts = [list(text[i : i + 48].encode("utf-8")) for i in range(1000, 1000 + 12000 * args.prompts, 12000)]
    for name, recipe in (("mamba1-tiny-wt2", "w8a8-quamba"), ("mamba2-tiny-wt2", "w8a8-quamba2")):
        windows = torch.randint(0, 256, (4, 128), generator=torch.Generator().manual_seed(0))
        quantized = quantize_model(load_model(shared / "models" / name), RECIPES[recipe], windows, show_progress=False)
        for kind, model in ((recipe, quantized), ("fp16", load_model(shared / "models" / name))):
            with tempfile.TemporaryDirectory() as tmp:
                write_bundle(model, Path(tmp) / "b", board="orin-nano-8gb")
                reference = ModelBackend(model)
                start, equal, differences = time.perf_counter(), 0, []
                with open_backend(Path(tmp) / "b", "onnxruntime", device="cpu", threads=1) as backend:
                    for k, ids in enumerate(prompts):
                        want = generate(reference, ids, max_new_tokens=args.new_tokens).tokens
                        got = generate(backend, ids, max_new_tokens=args.new_tokens).tokens
                        if got == want:
                            equal += 1
                            continue
                        n = next(i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b)
                        logits = reference.prefill(torch.tensor([ids + want[:n]]))[0][0, -1]
                        differences.append({"prompt": k, "position": n,
                                            "margin": float(logits[want[n]] - logits[got[n]])})  # fmt: skip
            row = {"model": name, "bundle": kind, "against": "simulation" if kind != "fp16" else "fp32 model",
                   "prompts": len(prompts), "new_tokens": args.new_tokens, "equal": equal,
                   "differences": differences, "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
