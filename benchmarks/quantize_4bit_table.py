"""Perplexity of quantization recipes on the shared fixtures with the tests' protocol (24 x 512
calibration tokens of WikiText-2 validation, seed 0; the first 16,384 tokens of WikiText-2 test in
512-token windows), for docs/quantization.md.

    python benchmarks/quantize_4bit_table.py MAMBA2_RECIPES [MAMBA1_RECIPES]   (comma-separated)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from jetmamba.calibration.checkpoint import load_model
from jetmamba.calibration.data import read_text, sample_windows, tokenize
from jetmamba.calibration.evaluate import perplexity
from jetmamba.calibration.quantize import quantize_model
from jetmamba.calibration.recipes import RECIPES
from jetmamba.calibration.tokenizer import ByteTokenizer

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"


def main(argv: list[str]) -> None:
    tok = ByteTokenizer()
    calib = tokenize(read_text(SHARED / "data" / "wikitext2-valid.txt"), tok)
    test = tokenize(read_text(SHARED / "data" / "wikitext2-test.txt"), tok, max_tokens=16384)
    windows = sample_windows(calib, 24, 512, seed=0)
    lists = [a.split(",") for a in argv] + [[], []]
    for fixture, names in (("mamba2-tiny-wt2", lists[0]), ("mamba1-tiny-wt2", lists[1])):
        model = load_model(SHARED / "models" / fixture)
        base = perplexity(model, test, 512, show_progress=False).perplexity
        print(f"{fixture} fp32 {base:.4f}", flush=True)
        for name in filter(None, names):
            start = time.perf_counter()
            q = quantize_model(model, RECIPES[name], windows, show_progress=False)
            ppl = perplexity(q, test, 512, show_progress=False).perplexity
            print(f"{fixture} {name} {ppl:.4f} {100 * (ppl / base - 1):+.2f} % {q.weight_bytes() / 1e6:.2f} MB "
                  f"layer_act_bits={q.layer_act_bits} {time.perf_counter() - start:.1f} s", flush=True)  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
