"""``jetmamba demo``: the pipeline as far as it exists, on the built-in model, no arguments.

The built-in model is a small byte-level Mamba1 trained by :mod:`jetmamba.demo.train` (its
``training.json`` records how); the held-out text is seven Shakespeare sonnets, which are not in
its training text. Each stage that exists runs and is reported:

1. load the checkpoint through the same loader users' checkpoints take;
2. evaluate perplexity on the held-out sonnets (the ``eval`` protocol);
3. check the decode path: prefill + single steps reproduce the full forward's logits;
4. generate text with the state API and time prefill and decode on this CPU.
"""

from __future__ import annotations

import json
import platform
import textwrap
from importlib import resources
from pathlib import Path

import torch

from jetmamba import __version__
from jetmamba.calibration.checkpoint import load_model, open_checkpoint
from jetmamba.calibration.data import read_text, tokenize
from jetmamba.calibration.evaluate import perplexity
from jetmamba.calibration.generate import generate
from jetmamba.errors import JetmambaError

HELDOUT_SEQ_LEN = 256
DECODE_CHECK_PROMPT, DECODE_CHECK_STEPS = 64, 32
DECODE_CHECK_TOLERANCE = 1e-3  # max |logit difference|, fp32
PROMPT = "ROMEO:\n"
NEW_TOKENS = 240
TEMPERATURE = 0.8


def model_dir() -> Path:
    return Path(str(resources.files("jetmamba.demo") / "model"))


def heldout_path() -> Path:
    return Path(str(resources.files("jetmamba.demo") / "heldout.txt"))


@torch.inference_mode()
def decode_check(model, tokens: torch.Tensor) -> dict:
    """Prefill a prompt, take single steps, compare every logit with the full forward."""
    n = DECODE_CHECK_PROMPT + DECODE_CHECK_STEPS
    ids = tokens[:n].unsqueeze(0)
    full = model(ids)
    logits, state = model.prefill(ids[:, :DECODE_CHECK_PROMPT])
    worst = float((logits - full[:, :DECODE_CHECK_PROMPT]).abs().max())
    for t in range(DECODE_CHECK_PROMPT, n - 1):
        step_logits, state = model.step(ids[:, t], state)
        worst = max(worst, float((step_logits - full[:, t]).abs().max()))
    return {
        "prompt_tokens": DECODE_CHECK_PROMPT,
        "steps": DECODE_CHECK_STEPS - 1,
        "max_abs_logit_diff": worst,
        "tolerance": DECODE_CHECK_TOLERANCE,
        "ok": worst <= DECODE_CHECK_TOLERANCE,
    }


def run_demo(seed: int = 0, show_progress: bool = True) -> dict:
    ckpt = open_checkpoint(model_dir())
    training = json.loads((ckpt.path / "training.json").read_text(encoding="utf-8"))
    tokenizer = ckpt.tokenizer()
    model = load_model(ckpt)
    tokens = tokenize(read_text(heldout_path()), tokenizer)

    ppl = perplexity(model, tokens, HELDOUT_SEQ_LEN, show_progress=show_progress)
    check = decode_check(model, tokens)
    gen = generate(model, tokenizer.encode(PROMPT), NEW_TOKENS, temperature=TEMPERATURE, seed=seed)
    final = training["history"][-1] if training.get("history") else {}
    report = {
        "jetmamba": __version__,
        "machine": f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "model": {
            "arch": ckpt.config.arch,
            "d_model": ckpt.config.d_model,
            "n_layer": ckpt.config.n_layer,
            "parameters": model.num_parameters(),
            "weights_bytes": sum(f.stat().st_size for f in ckpt.weights.files),
            "trained_on": training.get("data"),
            "training_steps": training.get("settings", {}).get("steps"),
            "training_heldout_perplexity": final.get("heldout_ppl"),
        },
        "perplexity": {**ppl.to_dict(), "data": "Shakespeare sonnets 18, 29, 55, 60, 73, 116, 130 (bytes)"},
        "decode_check": check,
        "generation": {
            "prompt": PROMPT,
            "text": tokenizer.decode(gen.tokens),
            "new_tokens": len(gen.tokens),
            "temperature": TEMPERATURE,
            "seed": seed,
            "prefill_seconds": gen.prefill_seconds,
            "decode_tokens_per_second": gen.decode_tokens_per_second,
        },
        "stages": {"load": "ok", "evaluate": "ok", "decode": "ok" if check["ok"] else "FAILED", "generate": "ok"},
    }
    if not check["ok"]:
        raise JetmambaError(
            f"demo decode check failed: step logits differ from the full forward by {check['max_abs_logit_diff']:.3g} "
            f"(tolerance {DECODE_CHECK_TOLERANCE})"
        )
    return report


def format_report(r: dict) -> str:
    m, p, c, g = r["model"], r["perplexity"], r["decode_check"], r["generation"]
    sample = textwrap.indent((g["prompt"] + g["text"]).rstrip(), "    | ")
    rate = p["tokens"] / p["seconds"] if p["seconds"] > 0 else float("nan")
    return "\n".join(
        [
            f"jetmamba {r['jetmamba']} demo  ({r['machine']})",
            f"model       built-in byte-level {m['arch']}: {m['n_layer']} layers, d_model {m['d_model']}, "
            f"{m['parameters'] / 1e6:.2f} M parameters ({m['weights_bytes'] / 1e6:.1f} MB), "
            f"trained on {m['trained_on']} for {m['training_steps']} steps",
            f"perplexity  {p['perplexity']:.3f} per byte on held-out sonnets ({p['windows']} windows x "
            f"{p['seq_len']} bytes; uniform guessing: 256), fp32 CPU {rate:,.0f} tokens/s",
            f"decode      prefill {c['prompt_tokens']} + {c['steps']} steps vs full forward: "
            f"max |logit diff| {c['max_abs_logit_diff']:.2e} ({'ok' if c['ok'] else 'FAILED'})",
            f"generate    {g['new_tokens']} bytes at {g['decode_tokens_per_second']:,.0f} tokens/s "
            f"(seed {g['seed']}, temperature {g['temperature']}):",
            sample,
            "stages      "
            + "  ".join(f"{k}: {v}" for k, v in r["stages"].items())
            + "  (quantize, compile and the Jetson runtime come in later versions)",
        ]
    )
