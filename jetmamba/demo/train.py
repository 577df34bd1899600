"""Train the demo's byte-level Mamba1 from scratch on a text file.

This is how ``jetmamba/demo/model`` was made (the weights are ours; the text is not shipped):

    python -m jetmamba.demo.train --data ../shared/data/tinyshakespeare.txt --out jetmamba/demo/model

The last ``--holdout`` fraction of the text is never trained on; its perplexity is reported and
saved in ``training.json`` beside the weights, with the data file's sha256, the seed and the
settings, so the run can be repeated.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from jetmamba.calibration.arch import Mamba1Config
from jetmamba.calibration.checkpoint import save_checkpoint
from jetmamba.calibration.data import read_text, sample_windows
from jetmamba.calibration.evaluate import perplexity
from jetmamba.calibration.model import MambaLM
from jetmamba.calibration.tokenizer import ByteTokenizer


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jetmamba.demo.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--data", required=True, help="training text (file, .jsonl or directory)")
    p.add_argument("--out", required=True, help="output checkpoint directory (replaced atomically)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--lr", type=float, default=4e-3)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--d-state", type=int, default=16)
    p.add_argument("--holdout", type=float, default=0.05, help="fraction of the text (at its end) kept out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    return p


def lr_at(step: int, steps: int, peak: float, warmup: int = 100) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    text = read_text(args.data)
    tokens = torch.tensor(ByteTokenizer().encode(text), dtype=torch.int64)
    split = int(tokens.numel() * (1 - args.holdout))
    train, held = tokens[:split], tokens[split:]

    config = Mamba1Config(
        d_model=args.d_model, n_layer=args.layers, vocab_size=256, d_inner=2 * args.d_model,
        d_state=args.d_state, dt_rank=math.ceil(args.d_model / 16), tie_embeddings=True,
    )  # fmt: skip
    model = MambaLM(config).init_weights(args.seed)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "A_log" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "A_log" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95),
    )  # fmt: skip
    print(f"{model.num_parameters():,} parameters; {train.numel():,} training bytes, {held.numel():,} held out",
          file=sys.stderr)  # fmt: skip

    start = time.time()
    history = []
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr)
        batch = sample_windows(train, args.batch, args.seq_len + 1, seed=args.seed * 1_000_003 + step)
        model.train()
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, 256), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            model.eval()
            ppl = perplexity(model, held, 512, show_progress=False).perplexity
            history.append({"step": step + 1, "train_loss": round(loss.item(), 4), "heldout_ppl": round(ppl, 4)})
            print(f"step {step + 1}: loss {loss.item():.3f}, held-out perplexity {ppl:.3f}, "
                  f"{time.time() - start:.0f} s", file=sys.stderr)  # fmt: skip

    model.eval()
    out = save_checkpoint(model, args.out, format="hf", dtype=torch.float16)
    record = {
        "data": Path(args.data).name,
        "data_sha256": hashlib.sha256(Path(args.data).read_bytes()).hexdigest() if Path(args.data).is_file() else None,
        "settings": {k: v for k, v in vars(args).items() if k not in ("data", "out")},
        "parameters": model.num_parameters(),
        "weights_dtype": "fp16",
        "seconds": round(time.time() - start),
        "history": history,
    }
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"saved {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
