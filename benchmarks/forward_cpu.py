"""fp32 CPU forward throughput: jetmamba's reference model against transformers.

Each measurement is a whole process (import, load, warm-up, then timed forward passes over the
same token windows), and the two implementations alternate A B A B ... for ``--rounds`` rounds so
that a drift in the machine's speed hits both; the ratio is taken per round and its median
reported. Tokens are the first ``windows * seq_len`` bytes of the data file (byte-level models).

    python benchmarks/forward_cpu.py --model ../shared/models/mamba1-tiny-wt2 \\
        --model ../shared/models/mamba2-tiny-wt2 --data ../shared/data/wikitext2-test.txt

Prints a Markdown table (``--json`` for machine-readable rows). Needs transformers installed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def worker(impl: str, model_dir: str, data: str, windows: int, seq_len: int, repeats: int) -> dict:
    import torch

    raw = open(data, "rb").read(windows * seq_len)
    ids = torch.tensor(list(raw), dtype=torch.int64).view(windows, seq_len)
    if impl == "jetmamba":
        from jetmamba.calibration.checkpoint import load_model

        model = load_model(model_dir)
        forward = model
    else:
        import transformers

        cfg = transformers.AutoConfig.from_pretrained(model_dir)
        cls = transformers.Mamba2ForCausalLM if cfg.model_type == "mamba2" else transformers.AutoModelForCausalLM
        model = cls.from_pretrained(model_dir, dtype=torch.float32).eval()

        def forward(x):
            return model(x).logits

    with torch.inference_mode():
        forward(ids[:1])  # warm-up: first-call allocations, native build/load
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            for w in range(windows):
                forward(ids[w : w + 1])
            times.append(time.perf_counter() - start)
    best = min(times)
    return {
        "impl": impl,
        "seconds_per_window": best / windows,
        "tokens_per_second": windows * seq_len / best,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def run_process(args, impl: str, model_dir: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", impl, "--model", model_dir, "--data", args.data,
           "--windows", str(args.windows), "--seq-len", str(args.seq_len), "--repeats", str(args.repeats)]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{impl} on {model_dir} failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - start
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, help="checkpoint directory (repeatable)")
    p.add_argument("--data", required=True, help="text file the token windows are cut from")
    p.add_argument("--windows", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3, help="timed passes per process (best is kept)")
    p.add_argument("--rounds", type=int, default=3, help="A/B process pairs per model")
    p.add_argument("--json", action="store_true")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.model[0], args.data, args.windows, args.seq_len, args.repeats)))
        return 0

    rows = []
    for model_dir in args.model:
        ours, theirs = [], []
        for _ in range(args.rounds):
            ours.append(run_process(args, "jetmamba", model_dir))
            theirs.append(run_process(args, "transformers", model_dir))
        ratios = [a["tokens_per_second"] / b["tokens_per_second"] for a, b in zip(ours, theirs, strict=True)]
        rows.append({
            "model": model_dir.rstrip("/").split("/")[-1],
            "seq_len": args.seq_len,
            "jetmamba_tokens_per_second": statistics.median(r["tokens_per_second"] for r in ours),
            "transformers_tokens_per_second": statistics.median(r["tokens_per_second"] for r in theirs),
            "speedup_median": statistics.median(ratios),
            "speedup_min": min(ratios),
            "speedup_max": max(ratios),
            "threads": ours[0]["threads"],
            "torch": ours[0]["torch"],
        })  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"| model | window | jetmamba tok/s | transformers tok/s | speed-up (median, min-max of {args.rounds}) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['seq_len']} | {r['jetmamba_tokens_per_second']:,.0f} | "
            f"{r['transformers_tokens_per_second']:,.0f} | {r['speedup_median']:.1f}x "
            f"({r['speedup_min']:.1f}-{r['speedup_max']:.1f}) |"
        )
    print(f"\nfp32, CPU, {rows[0]['threads']} threads, torch {rows[0]['torch']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
