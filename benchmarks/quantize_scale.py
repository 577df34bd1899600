"""Quantizing a large model on a CPU machine: peak memory and time per layer.

Builds a randomly initialised Mamba1 with mamba-790m's shape (d_model 1536, 48 layers, vocab
50280; ~790 M parameters), saves it as an fp16 checkpoint, then times ``jetmamba quantize`` on it
as a whole process and reads its peak RSS from the kernel (``ru_maxrss`` of the child):

    python benchmarks/quantize_scale.py --work scale-work --recipe w8a8-quamba --samples 16

Prints the fp16 size, the peak RSS, their ratio (the target is < 2) and the time per layer.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def build(directory: Path, layers: int, d_model: int, seed: int) -> int:
    import torch

    from jetmamba.calibration.arch import Mamba1Config
    from jetmamba.calibration.checkpoint import save_checkpoint
    from jetmamba.calibration.model import MambaLM

    config = Mamba1Config(
        d_model=d_model, n_layer=layers, vocab_size=50280, d_inner=2 * d_model, d_state=16,
        dt_rank=-(-d_model // 16), tie_embeddings=True,
    )  # fmt: skip
    model = MambaLM(config, dtype=torch.float16).init_weights(seed)
    save_checkpoint(model, directory, format="hf", dtype=torch.float16)
    return model.num_parameters()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="scratch directory (the checkpoint and the output)")
    p.add_argument("--recipe", default="w8a8-quamba")
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--layers", type=int, default=48)
    p.add_argument("--d-model", type=int, default=1536)
    args = p.parse_args()

    work = Path(args.work)
    ckpt = work / "random-790m"
    if not (ckpt / "config.json").exists():
        build(ckpt, args.layers, args.d_model, seed=0)
    from jetmamba.calibration.inspect import describe_checkpoint

    params = describe_checkpoint(ckpt)["parameters"]
    fp16_bytes = (ckpt / "model.safetensors").stat().st_size
    cmd = [sys.executable, "-m", "jetmamba", "quantize", "--model", str(ckpt), "--recipe", args.recipe,
           "--calib", "self", "--samples", str(args.samples), "--calib-seq-len", str(args.seq_len),
           "--out", str(work / "q"), "--force", "--json", "-q"]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # kB on Linux
    report = json.loads(proc.stdout)
    result = {
        "parameters": params,
        "fp16_checkpoint_bytes": fp16_bytes,
        "peak_rss_bytes": peak,
        "peak_over_fp16": peak / fp16_bytes,
        "process_seconds": seconds,
        "quantize_seconds": report["seconds"],
        "seconds_per_layer": report["seconds"] / args.layers,
        "recipe": args.recipe,
        "calibration": f"{args.samples} windows x {args.seq_len} tokens sampled from the model (--calib self)",
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
