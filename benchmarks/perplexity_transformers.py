"""Perplexity of a checkpoint under transformers, with exactly `jetmamba eval`'s protocol.

The other half of the comparison `jetmamba eval` is checked against (same tokenizer, same
windows, fp32, CPU); prints the same JSON keys:

    python benchmarks/perplexity_transformers.py --model ../shared/models/mamba1-tiny-wt2 \\
        --data ../shared/data/wikitext2-test.txt --seq-len 2048
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--max-tokens", type=int)
    args = p.parse_args()

    import transformers

    from jetmamba.calibration.checkpoint import open_checkpoint
    from jetmamba.calibration.data import consecutive_windows, read_text, tokenize

    ckpt = open_checkpoint(args.model)
    tokens = tokenize(read_text(args.data), ckpt.tokenizer(), args.max_tokens)
    windows = consecutive_windows(tokens, args.seq_len)
    cfg = transformers.AutoConfig.from_pretrained(args.model)
    cls = transformers.Mamba2ForCausalLM if cfg.model_type == "mamba2" else transformers.AutoModelForCausalLM
    model = cls.from_pretrained(args.model, dtype=torch.float32).eval()
    total, count = 0.0, 0
    start = time.perf_counter()
    with torch.inference_mode():
        for w in windows:
            logits = model(w[None]).logits[0, :-1].float()
            total += float(F.cross_entropy(logits, w[1:], reduction="none").double().sum())
            count += w.numel() - 1
    seconds = time.perf_counter() - start
    print(json.dumps({"perplexity": math.exp(total / count), "tokens": windows.numel(), "windows": len(windows),
                      "seq_len": args.seq_len, "seconds": seconds, "implementation": "transformers"}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
