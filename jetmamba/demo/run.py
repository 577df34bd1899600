"""``jetmamba demo``: the pipeline as far as it exists, on the built-in model, no arguments.

The built-in model is a small byte-level Mamba1 trained by :mod:`jetmamba.demo.train` (its
``training.json`` records how); the held-out text is seven Shakespeare sonnets, which are not in
its training text. Each stage that exists runs and is reported:

1. load the checkpoint through the same loader users' checkpoints take;
2. evaluate perplexity on the held-out sonnets (the ``eval`` protocol);
3. check the decode path: prefill + single steps reproduce the full forward's logits;
4. generate text with the state API and time prefill and decode on this CPU;
5. quantize it with every W8A8 recipe for its architecture, calibrated on text the model samples
   itself (``--calib self``: the demo ships no calibration text), and compare each recipe's
   held-out perplexity with the fp model's.
"""

from __future__ import annotations

import json
import platform
import textwrap
import time
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
CALIB_WINDOWS, CALIB_SEQ_LEN = 64, 256  # self-sampled calibration text, bytes
QUANT_TOLERANCE_PERCENT = 3.0  # a non-naive recipe further than this from fp fails the demo


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


def quantize_compare(ckpt, tokens: torch.Tensor, base_ppl: float, seed: int, show_progress: bool) -> dict:
    """Every W8A8 recipe of the model's architecture, calibrated on self-sampled text, evaluated on
    the held-out tokens; what ``jetmamba compare --calib self`` does."""
    from jetmamba.calibration.quantize import quantize_model, self_calibration_windows
    from jetmamba.calibration.recipes import RECIPES

    arch = ckpt.config.arch
    windows = self_calibration_windows(load_model(ckpt), CALIB_WINDOWS, CALIB_SEQ_LEN, seed)
    rows = []
    for name, recipe in RECIPES.items():
        if arch not in recipe.archs:
            continue
        start = time.perf_counter()
        q = quantize_model(load_model(ckpt), recipe, windows, show_progress=show_progress, inplace=True)
        ppl = perplexity(q, tokens, HELDOUT_SEQ_LEN, show_progress=show_progress).perplexity
        delta = 100 * (ppl / base_ppl - 1)
        rows.append({
            "recipe": name, "perplexity": ppl, "delta_percent": delta, "weight_bytes": q.weight_bytes(),
            "seconds": time.perf_counter() - start,
            "ok": name == "w8a8-naive" or abs(delta) <= QUANT_TOLERANCE_PERCENT,
        })  # fmt: skip
    return {"calibration": f"{CALIB_WINDOWS} x {CALIB_SEQ_LEN} bytes sampled from the model (seed {seed})",
            "tolerance_percent": QUANT_TOLERANCE_PERCENT, "recipes": rows}  # fmt: skip


def run_demo(seed: int = 0, show_progress: bool = True) -> dict:
    ckpt = open_checkpoint(model_dir())
    training = json.loads((ckpt.path / "training.json").read_text(encoding="utf-8"))
    tokenizer = ckpt.tokenizer()
    model = load_model(ckpt)
    tokens = tokenize(read_text(heldout_path()), tokenizer)

    ppl = perplexity(model, tokens, HELDOUT_SEQ_LEN, show_progress=show_progress)
    check = decode_check(model, tokens)
    gen = generate(model, tokenizer.encode(PROMPT), NEW_TOKENS, temperature=TEMPERATURE, seed=seed)
    quant = quantize_compare(ckpt, tokens, ppl.perplexity, seed, show_progress)
    quant_ok = all(r["ok"] for r in quant["recipes"])
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
        "quantization": quant,
        "stages": {
            "load": "ok", "evaluate": "ok", "decode": "ok" if check["ok"] else "FAILED", "generate": "ok",
            "quantize": "ok" if quant_ok else "FAILED",
        },
    }  # fmt: skip
    if not check["ok"]:
        raise JetmambaError(
            f"demo decode check failed: step logits differ from the full forward by {check['max_abs_logit_diff']:.3g} "
            f"(tolerance {DECODE_CHECK_TOLERANCE})"
        )
    if not quant_ok:
        bad = [r for r in quant["recipes"] if not r["ok"]]
        raise JetmambaError(
            "demo quantization check failed: "
            + ", ".join(f"{r['recipe']} {r['delta_percent']:+.2f} %" for r in bad)
            + f" perplexity vs fp (tolerance {QUANT_TOLERANCE_PERCENT} %)"
        )
    return report


def format_report(r: dict) -> str:
    m, p, c, g, q = r["model"], r["perplexity"], r["decode_check"], r["generation"], r["quantization"]
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
            f"quantize    W8A8 recipes, calibrated on {q['calibration']}; held-out perplexity:",
            f"    {'fp32':<18} {p['perplexity']:8.3f}            {2 * m['parameters'] / 1e6:6.2f} MB (fp16)",
            *(
                f"    {x['recipe']:<18} {x['perplexity']:8.3f} {x['delta_percent']:+7.2f} %  "
                f"{x['weight_bytes'] / 1e6:6.2f} MB  {x['seconds']:5.1f} s"
                for x in q["recipes"]
            ),
            "stages      "
            + "  ".join(f"{k}: {v}" for k, v in r["stages"].items())
            + "  (compile and the Jetson runtime come in later versions)",
        ]
    )
