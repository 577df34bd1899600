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
   held-out perplexity with the fp model's;
6. compile the best recipe and the unquantized fp16 baseline to bundles (in a temporary
   directory), run both through ONNX Runtime and check them against the models they came from;
7. deploy the best recipe's bundle as the device would: generate text from it on the best backend
   available here (TensorRT where it runs, else ONNX Runtime), a short ``bench`` run, and the plan
   for Orin Nano (memory fit and roofline floors) beside the measured figures.

``jetmamba demo --model BUNDLE`` runs stages 2-4 on a bundle instead, through ONNX Runtime.
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
from jetmamba.errors import JetmambaError
from jetmamba.runtime.generate import generate

HELDOUT_SEQ_LEN = 256
DECODE_CHECK_PROMPT, DECODE_CHECK_STEPS = 64, 32
DECODE_CHECK_TOLERANCE = 1e-3  # max |logit difference|, fp32
PROMPT = "ROMEO:\n"
NEW_TOKENS = 240
DEPLOY_NEW_TOKENS = 120  # generated from the compiled bundle at the end
TEMPERATURE = 0.8
CALIB_WINDOWS, CALIB_SEQ_LEN = 64, 256  # self-sampled calibration text, bytes
QUANT_TOLERANCE_PERCENT = 3.0  # a non-naive recipe further than this from fp fails the demo
# a bundle's perplexity against the model it was compiled from: the compiler's own bound (0.1 %)
# for a QuantizedModel; an fp16 bundle against the fp32 model adds fp16 rounding
BUNDLE_TOLERANCE_PERCENT = {"quantized": 0.1, "fp16": 0.5}
# a bundle's SSM state crosses every decode call in fp16 where a prefill keeps it in fp32, and an
# int8 code one rounding tie away may flip: checked as logits NMSE, the bound the compiler's
# tests hold bundles to (docs/compiler.md)
BUNDLE_DECODE_NMSE = 1e-3


def model_dir() -> Path:
    return Path(str(resources.files("jetmamba.demo") / "model"))


def heldout_path() -> Path:
    return Path(str(resources.files("jetmamba.demo") / "heldout.txt"))


@torch.inference_mode()
def decode_check(model, tokens: torch.Tensor, tolerance: float = DECODE_CHECK_TOLERANCE,
                 nmse_tolerance: float | None = None) -> dict:  # fmt: skip
    """Prefill a prompt, take single steps, compare every logit with the full forward: the worst
    absolute difference (against ``tolerance``), and the NMSE over all of them (against
    ``nmse_tolerance`` instead, where given)."""
    n = DECODE_CHECK_PROMPT + DECODE_CHECK_STEPS
    ids = tokens[:n].unsqueeze(0)
    full = model(ids)
    logits, state = model.prefill(ids[:, :DECODE_CHECK_PROMPT])
    got = [logits[0]]
    for t in range(DECODE_CHECK_PROMPT, n - 1):
        step_logits, state = model.step(ids[:, t], state)
        got.append(step_logits)
    got, want = torch.cat(got).double(), full[0, : n - 1].double()
    worst = float((got - want).abs().max())
    nmse = float(((got - want) ** 2).sum() / (want**2).sum())
    ok = worst <= tolerance if nmse_tolerance is None else nmse <= nmse_tolerance
    return {
        "prompt_tokens": DECODE_CHECK_PROMPT,
        "steps": DECODE_CHECK_STEPS - 1,
        "max_abs_logit_diff": worst,
        "logits_nmse": nmse,
        "tolerance": {"max_abs": tolerance} if nmse_tolerance is None else {"nmse": nmse_tolerance},
        "ok": ok,
    }


def quantize_compare(ckpt, tokens: torch.Tensor, base_ppl: float, seed: int, show_progress: bool) -> dict:
    """Every W8A8 recipe of the model's architecture, calibrated on self-sampled text, evaluated on
    the held-out tokens; what ``jetmamba compare --calib self`` does."""
    from jetmamba.calibration.quantize import quantize_model, self_calibration_windows
    from jetmamba.calibration.recipes import RECIPES

    arch = ckpt.config.arch
    windows = self_calibration_windows(load_model(ckpt), CALIB_WINDOWS, CALIB_SEQ_LEN, seed)
    rows, best = [], None
    for name, recipe in RECIPES.items():
        if arch not in recipe.archs or (recipe.weight_bits, recipe.act_bits) != (8, 8):
            continue  # the 4-bit recipes take GPTQ's time; `jetmamba compare` covers them
        start = time.perf_counter()
        q = quantize_model(load_model(ckpt), recipe, windows, show_progress=show_progress, inplace=True)
        ppl = perplexity(q, tokens, HELDOUT_SEQ_LEN, show_progress=show_progress).perplexity
        delta = 100 * (ppl / base_ppl - 1)
        if best is None or ppl < best[1]:
            best = (q, ppl)
        rows.append({
            "recipe": name, "perplexity": ppl, "delta_percent": delta, "weight_bytes": q.weight_bytes(),
            "seconds": time.perf_counter() - start,
            "ok": name == "w8a8-naive" or abs(delta) <= QUANT_TOLERANCE_PERCENT,
        })  # fmt: skip
    report = {"calibration": f"{CALIB_WINDOWS} x {CALIB_SEQ_LEN} bytes sampled from the model (seed {seed})",
              "tolerance_percent": QUANT_TOLERANCE_PERCENT, "recipes": rows}  # fmt: skip
    return report, best


def compile_check(ckpt, best, tokens: torch.Tensor, base_ppl: float, show_progress: bool, seed: int = 0) -> dict:
    """The best recipe's QuantizedModel and the fp16 baseline compiled to bundles for Orin Nano,
    each evaluated through ONNX Runtime against the model it came from."""
    import tempfile

    from jetmamba.compiler.bundle import load_bundle, verify_bundle, write_bundle

    q, q_ppl = best
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        runnable = False  # the bundles are still written and verified; nothing runs them
    else:
        runnable = True
    rows, deployed = [], None
    with tempfile.TemporaryDirectory(prefix="jetmamba-demo-") as tmp:
        for kind, model, want in (("quantized", q, q_ppl), ("fp16", load_model(ckpt), base_ppl)):
            start = time.perf_counter()
            out = Path(tmp) / kind
            manifest = write_bundle(model, out, board="orin-nano-8gb")
            seconds = time.perf_counter() - start
            verify_bundle(out)
            ppl = delta = None
            if runnable:
                _, graph = load_bundle(out)
                ppl = perplexity(graph, tokens, HELDOUT_SEQ_LEN, show_progress=show_progress).perplexity
                delta = 100 * (ppl / want - 1)
            if runnable and kind == "quantized":
                deployed = deploy_check(out, ckpt.tokenizer(), seed)
            rows.append({
                "bundle": manifest["recipe"]["name"], "against": "simulation" if kind == "quantized" else "fp32 model",
                "perplexity": ppl, "delta_percent": delta, "compile_seconds": seconds,
                "bytes": sum(f["bytes"] for f in manifest["files"].values()),
                "ok": delta is None or abs(delta) <= BUNDLE_TOLERANCE_PERCENT[kind],
            })  # fmt: skip
    runtime = "ONNX Runtime (CPU)" if runnable else "nothing: onnxruntime is not installed (pip install onnxruntime)"
    return {"board": "orin-nano-8gb", "runtime": runtime, "ran": runnable,
            "tolerance_percent": BUNDLE_TOLERANCE_PERCENT, "bundles": rows, "deploy": deployed}  # fmt: skip


def deploy_check(bundle: Path, tokenizer, seed: int) -> dict:
    """The bundle as the device runs it: text generated through the best backend here, a short
    benchmark (one 64-token prompt, 32 new tokens), and the plan for the bundle's board beside it."""
    from jetmamba.boards import load_board
    from jetmamba.runtime.backends import open_backend
    from jetmamba.runtime.bench import BenchConfig, run_bench
    from jetmamba.runtime.plan import make_plan, read_model_source

    with open_backend(bundle, "auto") as backend:
        gen = generate(backend, tokenizer.encode(PROMPT), max_new_tokens=DEPLOY_NEW_TOKENS,
                            temperature=TEMPERATURE, seed=seed, tokenizer=tokenizer)  # fmt: skip
        bench = run_bench(BenchConfig(bundle=bundle, backend=backend.name, prompt_lens=(64,), gen_len=32,
                                      warmup=1, repeats=1), show_progress=False, backend=backend)  # fmt: skip
    source = read_model_source(bundle)
    board = load_board(bench["floors"]["board"])
    row = next(r for r in make_plan(source, board, board.power_mode(bench["floors"]["power_mode"])).rows
               if r.recipe == source.recipe)  # fmt: skip
    result = bench["results"][0]
    return {
        "backend": backend.name,
        "text": gen.text,
        "new_tokens": len(gen.tokens),
        "bench": {"prompt_len": result["prompt_len"], "ttft_ms": result["ttft_ms"]["median"],
                  "tpot_ms_p50": result["tpot_ms"]["p50"], "decode_tokens_per_s": result["decode_tokens_per_s"]},
        "plan": {"board": board.name, "power_mode": row.power_mode, "recipe": row.recipe, "fits": row.fits,
                 "total_bytes": row.total_bytes, "ttft_floor_ms": result["floor"]["ttft_ms"],
                 "decode_floor_ms": row.decode_floor_ms},
    }  # fmt: skip


def run_demo(seed: int = 0, show_progress: bool = True) -> dict:
    ckpt = open_checkpoint(model_dir())
    training = json.loads((ckpt.path / "training.json").read_text(encoding="utf-8"))
    tokenizer = ckpt.tokenizer()
    model = load_model(ckpt)
    tokens = tokenize(read_text(heldout_path()), tokenizer)

    ppl = perplexity(model, tokens, HELDOUT_SEQ_LEN, show_progress=show_progress)
    check = decode_check(model, tokens)
    gen = generate(
        model,
        tokenizer.encode(PROMPT),
        max_new_tokens=NEW_TOKENS,
        temperature=TEMPERATURE,
        seed=seed,
        tokenizer=tokenizer,
    )
    quant, best = quantize_compare(ckpt, tokens, ppl.perplexity, seed, show_progress)
    quant_ok = all(r["ok"] for r in quant["recipes"])
    compiled = compile_check(ckpt, best, tokens, ppl.perplexity, show_progress, seed)
    compile_ok = all(r["ok"] for r in compiled["bundles"])
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
            "text": gen.text,
            "new_tokens": len(gen.tokens),
            "temperature": TEMPERATURE,
            "seed": seed,
            "prefill_seconds": gen.prefill_seconds,
            "decode_tokens_per_second": gen.decode_tokens_per_second,
        },
        "quantization": quant,
        "compile": compiled,
        "stages": {
            "load": "ok", "evaluate": "ok", "decode": "ok" if check["ok"] else "FAILED", "generate": "ok",
            "quantize": "ok" if quant_ok else "FAILED",
            "compile": ("ok" if compiled["ran"] else "ok (not run)") if compile_ok else "FAILED",
            "deploy": "ok" if compiled["deploy"] is not None else "not run (no onnxruntime)",
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
    if not compile_ok:
        bad = [r for r in compiled["bundles"] if not r["ok"]]
        raise JetmambaError(
            "demo compile check failed: "
            + ", ".join(f"{r['bundle']} bundle {r['delta_percent']:+.3f} % vs its {r['against']}" for r in bad)
        )
    return report


def run_bundle_demo(bundle, seed: int = 0, show_progress: bool = True) -> dict:
    """Stages 2-4 on a bundle, through ONNX Runtime: held-out perplexity, the decode check and
    generation (the prompt and held-out text are bytes; a bundle with a tokenizer encodes them)."""
    from jetmamba.calibration.tokenizer import load_tokenizer
    from jetmamba.compiler.bundle import load_bundle

    bundle = Path(bundle)
    manifest, model = load_bundle(bundle)
    tokenizer = load_tokenizer(bundle, model.config.vocab_size, None)
    tokens = tokenize(read_text(heldout_path()), tokenizer)
    ppl = perplexity(model, tokens, HELDOUT_SEQ_LEN, show_progress=show_progress)
    check = decode_check(model, tokens, nmse_tolerance=BUNDLE_DECODE_NMSE)
    gen = generate(
        model,
        tokenizer.encode(PROMPT),
        max_new_tokens=NEW_TOKENS,
        temperature=TEMPERATURE,
        seed=seed,
        tokenizer=tokenizer,
    )
    report = {
        "jetmamba": __version__,
        "machine": f"{platform.machine()}, onnxruntime (CPU)",
        "bundle": {"path": str(bundle), "arch": model.config.arch, "recipe": manifest["recipe"]["name"],
                   "board": manifest["board"]["name"], "n_layer": model.config.n_layer,
                   "bytes": sum(f["bytes"] for f in manifest["files"].values())},
        "perplexity": {**ppl.to_dict(), "data": "Shakespeare sonnets 18, 29, 55, 60, 73, 116, 130"},
        "decode_check": check,
        "generation": {"prompt": PROMPT, "text": gen.text, "new_tokens": len(gen.tokens),
                       "temperature": TEMPERATURE, "seed": seed, "prefill_seconds": gen.prefill_seconds,
                       "decode_tokens_per_second": gen.decode_tokens_per_second},
        "stages": {"verify": "ok", "evaluate": "ok", "decode": "ok" if check["ok"] else "FAILED", "generate": "ok"},
    }  # fmt: skip
    if not check["ok"]:
        raise JetmambaError(
            f"demo decode check failed on {bundle}: step logits differ from the full forward with NMSE "
            f"{check['logits_nmse']:.3g} (tolerance {BUNDLE_DECODE_NMSE})"
        )
    return report


def format_bundle_report(r: dict) -> str:
    b, p, c, g = r["bundle"], r["perplexity"], r["decode_check"], r["generation"]
    sample = textwrap.indent((g["prompt"] + g["text"]).rstrip(), "    | ", lambda _: True)
    return "\n".join([
        f"jetmamba {r['jetmamba']} demo on a bundle  ({r['machine']})",
        f"bundle      {b['path']}: {b['arch']}, {b['recipe']}, for {b['board']}, {b['bytes'] / 1e6:.2f} MB (verified)",
        f"perplexity  {p['perplexity']:.3f} per token on held-out sonnets ({p['windows']} windows x {p['seq_len']})",
        f"decode      prefill {c['prompt_tokens']} + {c['steps']} steps vs full forward: "
        f"logits NMSE {c['logits_nmse']:.2e}, max |diff| {c['max_abs_logit_diff']:.2e} "
        f"({'ok' if c['ok'] else 'FAILED'}, NMSE tolerance {c['tolerance']['nmse']:g})",
        f"generate    {g['new_tokens']} tokens at {g['decode_tokens_per_second']:,.0f} tokens/s "
        f"(seed {g['seed']}, temperature {g['temperature']}):",
        sample,
        "stages      " + "  ".join(f"{k}: {v}" for k, v in r["stages"].items()),
    ])  # fmt: skip


def format_report(r: dict) -> str:
    m, p, c, g, q = r["model"], r["perplexity"], r["decode_check"], r["generation"], r["quantization"]
    c2 = r["compile"]
    sample = textwrap.indent((g["prompt"] + g["text"]).rstrip(), "    | ", lambda _: True)
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
            f"compile     bundles for {c2['board']}, run by {c2['runtime']}"
            + ("; held-out perplexity:" if c2["ran"] else ":"),
            *(
                (
                    f"    {x['bundle']:<18} {x['perplexity']:8.3f} {x['delta_percent']:+7.3f} % "
                    f"vs its {x['against']:<11} "
                    if c2["ran"]
                    else f"    {x['bundle']:<18} written and verified, "
                )
                + f"{x['bytes'] / 1e6:6.2f} MB  {x['compile_seconds']:5.1f} s"
                for x in c2["bundles"]
            ),
            *_deploy_lines(c2["deploy"]),
            "stages      " + "  ".join(f"{k}: {v}" for k, v in r["stages"].items()),
        ]
    )


def _deploy_lines(d: dict | None) -> list[str]:
    if d is None:
        return []
    b, p = d["bench"], d["plan"]
    sample = textwrap.indent((PROMPT + d["text"]).rstrip(), "    | ", lambda _: True)
    fits = "fits" if p["fits"] else "does NOT fit"
    return [
        f"deploy      {p['recipe']} bundle on {d['backend']}: {d['new_tokens']} bytes generated",
        sample,
        f"    bench here   prompt {b['prompt_len']}: TTFT {b['ttft_ms']:.1f} ms, TPOT p50 {b['tpot_ms_p50']:.2f} ms "
        f"(mean {b['decode_tokens_per_s']:,.0f} tokens/s)",
        f"    plan         {p['board']} at {p['power_mode']}: {fits} ({p['total_bytes'] / 1e6:.0f} MB with the "
        f"engine), floors TTFT {p['ttft_floor_ms']:.3f} ms, decode {p['decode_floor_ms']:.3f} ms per token",
        "    (the floors are the board's bandwidth and compute limits; `jetmamba build` and `bench` on the board "
        "measure it: docs/jetson.md)",
    ]
