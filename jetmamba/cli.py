"""The ``jetmamba`` command: thin subcommands over the library.

Human-readable output goes to stdout, or one JSON object with ``--json``; progress bars and
messages go to stderr. Errors in the user's input are one line (``jetmamba: error: ...``) with a
non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass

from jetmamba import __version__
from jetmamba.errors import JetmambaError, UsageError


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _add_model_args(p: argparse.ArgumentParser, runnable: bool = False) -> None:
    what = "checkpoint directory (Hugging Face or mamba_ssm format), or a hub id already in the local HF cache"
    extra = "; or a QuantizedModel directory, or a bundle (run by ONNX Runtime)" if runnable else ""
    p.add_argument("--model", required=True, metavar="DIR", help=what + extra)
    p.add_argument("--tokenizer", metavar="PATH", help="tokenizer.json (or its directory) when the checkpoint has none")


def _add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of text")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _check_out(out, force: bool, is_artifact: Callable[[object], bool], what: str) -> None:
    """An --out that exists is replaced only with --force, and only when it is an earlier artifact
    of the same kind or an empty directory: --force must never delete a directory of the user's."""
    if not out.exists() and not out.is_symlink():
        return
    if not force:
        raise UsageError(f"--out {out} exists; pass --force to replace it")
    if out.is_dir() and not out.is_symlink() and (is_artifact(out) or not any(out.iterdir())):
        return
    raise UsageError(
        f"--out {out} exists and is not a {what} (nor an empty directory); --force replaces only an earlier {what}"
    )


def _emit(args, payload: dict, text: str) -> None:
    if args.json:
        print(json.dumps(payload, indent=None, sort_keys=False))
    else:
        print(text)


# ---------------------------------------------------------------- demo


def _demo_args(p):
    _add_output_args(p)
    p.add_argument("--seed", type=int, default=0, help="sampling seed for the generated text (default 0)")
    p.add_argument("--model", metavar="BUNDLE",
                   help="run the demo's evaluation, decode check and generation on this bundle (through ONNX "
                        "Runtime) instead of the built-in model")  # fmt: skip


def _demo(args) -> int:
    from jetmamba.demo.run import format_bundle_report, format_report, run_bundle_demo, run_demo

    if args.model is not None:
        from jetmamba.compiler.bundle import verify_bundle

        verify_bundle(args.model)  # a clear error for anything that is not an intact bundle
        report = run_bundle_demo(args.model, seed=args.seed, show_progress=not args.quiet)
        _emit(args, report, format_bundle_report(report))
        return 0
    report = run_demo(seed=args.seed, show_progress=not args.quiet)
    _emit(args, report, format_report(report))
    return 0


# ---------------------------------------------------------------- eval


def _eval_args(p):
    _add_model_args(p, runnable=True)
    p.add_argument(
        "--data", required=True, metavar="PATH", help="text file, .jsonl with a 'text' field, or directory of .txt"
    )
    p.add_argument("--seq-len", type=_int_at_least(2), default=2048, help="window length in tokens (default 2048)")
    p.add_argument("--max-tokens", type=_int_at_least(2), help="use only the first N tokens of the data")
    p.add_argument("--batch-size", type=_int_at_least(1), default=1, help="windows per forward pass (default 1)")
    p.add_argument(
        "--dtype", choices=("fp32", "fp16", "bf16"), default="fp32",
        help="compute dtype of an fp checkpoint (default fp32; a QuantizedModel runs as it was saved)",
    )  # fmt: skip
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    _add_output_args(p)


def _device(name: str):
    import torch

    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name}: not a device (cpu, cuda, cuda:N)") from None


def _load_for_eval(args, device):
    """An fp checkpoint or a QuantizedModel directory -> (model, tokenizer, path, arch, kind)."""
    from jetmamba.calibration.checkpoint import DTYPES, load_model, open_checkpoint, resolve_model_dir
    from jetmamba.calibration.quantized import QuantizedModel, is_quantized_model
    from jetmamba.calibration.tokenizer import load_tokenizer

    path = resolve_model_dir(args.model)
    from jetmamba.compiler.bundle import is_bundle

    if is_bundle(path):
        from jetmamba.calibration.arch import config_from_dict
        from jetmamba.compiler.bundle import load_bundle

        if device.type != "cpu":
            raise UsageError("a bundle is evaluated with ONNX Runtime on the CPU here: drop --device")
        manifest, model = load_bundle(path)
        config = config_from_dict(manifest["config"])
        tokenizer = load_tokenizer(path, config.vocab_size, args.tokenizer)
        recipe = (manifest.get("recipe") or {}).get("name", "fp16")
        return model, tokenizer, path, config.arch, f"{recipe} bundle (ONNX Runtime)"
    if is_quantized_model(path):
        model = QuantizedModel.load(path, device=device)
        tokenizer = load_tokenizer(path, model.config.vocab_size, args.tokenizer)
        return model, tokenizer, path, model.config.arch, model.recipe["name"]
    ckpt = open_checkpoint(path)
    tokenizer = ckpt.tokenizer(args.tokenizer)
    model = load_model(ckpt, dtype=DTYPES[args.dtype], device=device, show_progress=not args.quiet)
    return model, tokenizer, ckpt.path, ckpt.config.arch, args.dtype


def _eval(args) -> int:
    from jetmamba.calibration.data import read_text, tokenize
    from jetmamba.calibration.evaluate import perplexity

    device = _device(args.device)
    model, tokenizer, path, arch, kind = _load_for_eval(args, device)
    tokens = tokenize(read_text(args.data), tokenizer, args.max_tokens)
    result = perplexity(model, tokens, args.seq_len, batch_size=args.batch_size, show_progress=not args.quiet)
    payload = {
        **result.to_dict(),
        "model": str(path),
        "arch": arch,
        "precision": kind,
        "data": args.data,
        "tokenizer": tokenizer.name,
        "device": str(device),
    }
    rate = result.tokens / result.seconds if result.seconds > 0 else float("nan")
    text = (
        f"perplexity {result.perplexity:.4f}  ({path.name}, {args.data})\n"
        f"  {result.windows} windows x {result.seq_len} tokens = {result.tokens} tokens "
        f"({result.predictions} predictions), {kind} on {device}, {result.seconds:.1f} s ({rate:,.0f} tokens/s)"
    )
    _emit(args, payload, text)
    return 0


# ---------------------------------------------------------------- quantize


def _calib_args(p):
    p.add_argument(
        "--calib", required=True, metavar="PATH|self",
        help="calibration text (file, .jsonl, directory), or 'self': text sampled from the model itself",
    )  # fmt: skip
    p.add_argument("--samples", type=_int_at_least(1), default=512, help="calibration windows (default 512)")
    p.add_argument("--calib-seq-len", type=_int_at_least(2), default=512, help="tokens per window (default 512)")
    p.add_argument("--seed", type=int, default=0, help="seed of the window sampling (default 0)")
    p.add_argument("--batch-size", type=_int_at_least(1), default=8, help="windows per calibration pass (default 8)")
    p.add_argument(
        "--w4a16-layers", metavar="N|FRACTION",
        help="W4AX recipes: how many layers keep fp16 activations (W4A16), the most sensitive ones on the "
        "calibration data; a count (12) or a fraction of the layers (0.25, 25%%); default: the recipe's quarter",
    )  # fmt: skip


def _quantize_args(p):
    from jetmamba.calibration.recipes import RECIPES

    _add_model_args(p)
    p.add_argument(
        "--recipe", required=True, help="one of: " + "; ".join(f"{k} ({r.description})" for k, r in RECIPES.items())
    )
    _calib_args(p)
    p.add_argument("--out", required=True, metavar="DIR", help="QuantizedModel directory to write")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    _add_output_args(p)


def _calibration_windows(args, model, tokenizer):
    from jetmamba.calibration.data import read_text, sample_windows, tokenize
    from jetmamba.calibration.quantize import self_calibration_windows

    if args.calib == "self":
        return self_calibration_windows(model, args.samples, args.calib_seq_len, args.seed), {"data": "self"}
    tokens = tokenize(read_text(args.calib), tokenizer)
    return sample_windows(tokens, args.samples, args.calib_seq_len, args.seed), {"data": args.calib}


def _quantizable(ckpt, args):
    """The fp model as the quantizer takes it: weights held in fp16 (the precision they deploy in),
    every block computed in fp32, one block upcast at a time, so a large model fits in memory."""
    import torch

    from jetmamba.calibration.checkpoint import load_model
    from jetmamba.heap import return_freed_memory_promptly

    return_freed_memory_promptly()
    return load_model(ckpt, dtype=torch.float16, compute_dtype=torch.float32, show_progress=not args.quiet)


def _quantize_one(args, ckpt, model, recipe_name, windows, calib_info):
    """Quantize ``model`` (consumed: rewritten in place and released layer by layer)."""
    from jetmamba.calibration.quantize import quantize_model, with_w4a16_budget
    from jetmamba.calibration.recipes import get_recipe

    recipe = get_recipe(recipe_name, ckpt.config.arch)
    if args.w4a16_layers is not None and recipe.mixed_activations:
        recipe = with_w4a16_budget(recipe, args.w4a16_layers)
    info = {**calib_info, "samples": args.samples, "seq_len": args.calib_seq_len, "seed": args.seed}
    q = quantize_model(
        model, recipe, windows, batch_size=args.batch_size, show_progress=not args.quiet, provenance=info, inplace=True
    )
    q.provenance.source = str(ckpt.path)
    return q


def _quantize(args) -> int:
    from pathlib import Path

    from jetmamba.calibration.checkpoint import open_checkpoint
    from jetmamba.calibration.quantized import is_quantized_model
    from jetmamba.calibration.recipes import get_recipe

    out = Path(args.out)
    _check_out(out, args.force, is_quantized_model, "QuantizedModel")
    ckpt = open_checkpoint(args.model)
    if out.resolve() == ckpt.path.resolve():
        raise UsageError("--out must not be the checkpoint directory itself")
    recipe = get_recipe(args.recipe, ckpt.config.arch)  # refuse a bad recipe (or budget) before any work
    if args.w4a16_layers is not None:
        from jetmamba.calibration.quantize import w4a16_budget, with_w4a16_budget

        w4a16_budget(with_w4a16_budget(recipe, args.w4a16_layers), ckpt.config.n_layer)
    tokenizer = None if args.calib == "self" else ckpt.tokenizer(args.tokenizer)  # none needed to sample
    model = _quantizable(ckpt, args)
    n_params = model.num_parameters()
    windows, calib_info = _calibration_windows(args, model, tokenizer)
    q = _quantize_one(args, ckpt, model, args.recipe, windows, calib_info)
    del model
    tok_file = ckpt.path / "tokenizer.json"
    q.save(out, tokenizer_file=tok_file if tok_file.is_file() else None)
    sat = q.provenance.saturation
    payload = {
        "out": str(out),
        "model": str(ckpt.path),
        "recipe": args.recipe,
        "seconds": q.provenance.seconds,
        "weight_bytes": q.weight_bytes(),
        "fp16_weight_bytes": 2 * n_params,
        "calibration": q.provenance.calibration,
        "saturation": sat,
        "layer_act_bits": q.layer_act_bits,
    }
    worst = sorted(sat.items(), key=lambda kv: -kv[1])[:3]
    text = "\n".join(
        [
            f"quantized {ckpt.path.name} with {args.recipe} -> {out}  ({q.provenance.seconds:.1f} s)",
            f"  calibration  {windows.shape[0]} windows x {windows.shape[1]} tokens of {calib_info['data']} "
            f"(seed {args.seed})",
            f"  weights      {q.weight_bytes() / 1e6:.2f} MB (fp16: {2 * n_params / 1e6:.2f} MB)",
            f"  saturation   {sum(sat.values())} calibration values clipped to int8 at {len(sat)} tensors"
            + (": " + ", ".join(f"{k} {v}" for k, v in worst) if worst else ""),
        ]
        + (
            [
                f"  activations  W4A16 in layers {[i for i, b in enumerate(q.layer_act_bits) if b == 16]}, "
                "W4A8 in the others"
            ]
            if recipe.mixed_activations
            else []
        )
    )
    _emit(args, payload, text)
    return 0


# ---------------------------------------------------------------- compare


def _compare_args(p):
    _add_model_args(p)
    p.add_argument("--data", required=True, metavar="PATH", help="evaluation text (never the calibration text)")
    p.add_argument("--recipes", help="comma-separated recipes (default: every recipe for the model's architecture)")
    _calib_args(p)
    p.add_argument("--seq-len", type=_int_at_least(2), default=512, help="evaluation window (default 512)")
    p.add_argument("--max-tokens", type=_int_at_least(2), help="evaluate the first N tokens only")
    p.add_argument("--markdown", metavar="FILE", help="also write the table to FILE as markdown")
    _add_output_args(p)


def _compare(args) -> int:
    import time
    from pathlib import Path

    from jetmamba.calibration.checkpoint import load_model, open_checkpoint
    from jetmamba.calibration.data import read_text, tokenize
    from jetmamba.calibration.evaluate import perplexity
    from jetmamba.calibration.recipes import RECIPES, get_recipe

    ckpt = open_checkpoint(args.model)
    arch = ckpt.config.arch
    names = [n.strip() for n in args.recipes.split(",") if n.strip()] if args.recipes else [
        n for n, r in RECIPES.items() if arch in r.archs]  # fmt: skip
    for name in names:
        get_recipe(name, arch)
    tokenizer = ckpt.tokenizer(args.tokenizer)
    tokens = tokenize(read_text(args.data), tokenizer, args.max_tokens)
    model = load_model(ckpt, show_progress=not args.quiet)
    start = time.perf_counter()
    base = perplexity(model, tokens, args.seq_len, show_progress=not args.quiet)
    rows = [{"recipe": "fp32", "perplexity": base.perplexity, "delta_percent": 0.0,
             "weight_bytes": 2 * model.num_parameters(), "seconds": time.perf_counter() - start}]  # fmt: skip
    windows, calib_info = _calibration_windows(args, model, tokenizer)
    for name in names:
        start = time.perf_counter()
        q = _quantize_one(args, ckpt, _quantizable(ckpt, args), name, windows, calib_info)
        ppl = perplexity(q, tokens, args.seq_len, show_progress=not args.quiet).perplexity
        rows.append({"recipe": name, "perplexity": ppl, "delta_percent": 100 * (ppl / base.perplexity - 1),
                     "weight_bytes": q.weight_bytes(), "seconds": time.perf_counter() - start})  # fmt: skip
    header = (
        f"{ckpt.path.name}: perplexity on {Path(args.data).name} ({base.windows} windows x {args.seq_len} tokens), "
        f"calibration {windows.shape[0]} x {windows.shape[1]} tokens of {calib_info['data']}"
    )
    table = ["| recipe | perplexity | vs fp32 | weights | time |", "|---|---|---|---|---|"] + [
        f"| {r['recipe']} | {r['perplexity']:.4f} | {r['delta_percent']:+.2f} % | "
        f"{r['weight_bytes'] / 1e6:.2f} MB | {r['seconds']:.1f} s |"
        for r in rows
    ]
    text = header + "\n\n" + "\n".join(table)
    if args.markdown:
        from jetmamba.atomic import atomic_write_text

        atomic_write_text(args.markdown, text + "\n")
    _emit(args, {"model": str(ckpt.path), "data": args.data, "calibration": calib_info, "rows": rows}, text)
    return 0


# ---------------------------------------------------------------- compile


def _compile_args(p):
    from jetmamba.boards import BOARD_ARCH

    p.add_argument("--model", required=True, metavar="DIR",
                   help="QuantizedModel directory (from jetmamba quantize), or an fp checkpoint directory to "
                        "lower unquantized: the baseline a quantized bundle is compared with")  # fmt: skip
    p.add_argument("--board", required=True, help="target board: " + ", ".join(BOARD_ARCH))
    p.add_argument("--out", required=True, metavar="BUNDLE", help="bundle directory to write")
    p.add_argument("--dtype", choices=("fp16", "fp32"),
                   help="float type of an unquantized bundle (default fp16, what the device runs; fp32 checks "
                        "the graph against the fp model on a CPU); a QuantizedModel keeps its own")  # fmt: skip
    p.add_argument("--ssm-state", choices=("fp16", "fp32", "int8"), default="fp16",
                   help="dtype of the SSM state the graph takes and gives (default fp16; fp32 for CPU checks; int8, "
                        "Mamba1 QuantizedModels only: codes plus a dynamic scale per channel, ssm_state_scale.{i}: "
                        "d_state + 4 bytes a channel each way instead of 2 d_state)")  # fmt: skip
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    _add_output_args(p)


def _compile(args) -> int:
    import time
    from pathlib import Path

    import torch

    from jetmamba.boards import board_arch
    from jetmamba.calibration.checkpoint import load_model, open_checkpoint, resolve_model_dir
    from jetmamba.calibration.quantized import QuantizedModel, is_quantized_model
    from jetmamba.compiler.bundle import is_bundle, write_bundle

    board_arch(args.board)  # refuse an unknown board before any work
    out = Path(args.out)
    _check_out(out, args.force, is_bundle, "bundle")
    path = resolve_model_dir(args.model)
    if out.resolve() == path.resolve():
        raise UsageError("--out must not be the model directory itself")
    if is_bundle(path):
        raise UsageError(f"{path} is already a bundle: compile takes a QuantizedModel or an fp checkpoint")
    start = time.perf_counter()
    dtype = {"fp16": torch.float16, "fp32": torch.float32, None: torch.float16}[args.dtype]
    if is_quantized_model(path):
        if args.dtype is not None:
            raise UsageError("--dtype applies to an fp checkpoint; a QuantizedModel keeps its own activation dtype")
        model = QuantizedModel.load(path)
    else:
        model = load_model(open_checkpoint(path), dtype=dtype, show_progress=not args.quiet)  # or a clear error
    tok = path / "tokenizer.json"
    tokenizer_file = tok if tok.is_file() else None
    state = {"fp16": "float16", "fp32": "float32", "int8": "int8"}[args.ssm_state]
    manifest = write_bundle(model, out, board=args.board, tokenizer_file=tokenizer_file, source=str(path),
                            dtype=dtype, ssm_state_dtype=state)  # fmt: skip
    seconds = time.perf_counter() - start
    recipe = manifest["recipe"]["name"]
    total = sum(f["bytes"] for f in manifest["files"].values())
    payload = {"out": str(out), "model": str(path), "board": manifest["board"], "recipe": recipe,
               "seconds": seconds, "bytes": total, "files": manifest["files"]}  # fmt: skip
    text = "\n".join([
        f"compiled {path.name} ({recipe}) for {args.board} -> {out}  ({seconds:.1f} s)",
        *(f"  {name:<40} {f['bytes'] / 1e6:9.2f} MB" for name, f in manifest["files"].items()
          if not name.startswith("plugins/")),
        f"  plugins/ ({sum(n.startswith('plugins/') for n in manifest['files'])} source files)",
    ])  # fmt: skip
    _emit(args, payload, text)
    return 0


# ---------------------------------------------------------------- build


def _build_args(p):
    p.add_argument("--bundle", required=True, metavar="DIR", help="a bundle from jetmamba compile (verified first)")
    p.add_argument("--max-prompt", type=_int_at_least(1), default=2048,
                   help="longest prompt (prefill chunk) the engine accepts (default 2048); run / bench must "
                        "use the same value to find this engine")  # fmt: skip
    p.add_argument("--max-batch", type=_int_at_least(1), default=1, help="most sequences per call (default 1)")
    p.add_argument("--opt-level", type=int, choices=range(6), default=3, metavar="0-5",
                   help="TensorRT builder optimization level: higher builds longer for a faster engine "
                        "(default 3, TensorRT's own)")  # fmt: skip
    p.add_argument("--device", type=_int_at_least(0), default=0, help="CUDA device (default 0)")
    p.add_argument("--verify", action="store_true",
                   help="then run seeded prompts through TensorRT and ONNX Runtime and compare logits and greedy "
                        "tokens; exit 1 on a mismatch")  # fmt: skip
    p.add_argument("--force", action="store_true", help="rebuild the plugin library and the engine even if cached")
    p.add_argument("--trust-bundle-plugins", action="store_true",
                   help="build the bundle's own plugin sources where they differ from this jetmamba's (that runs "
                        "the bundle author's code: only for bundles you trust)")  # fmt: skip
    _add_output_args(p)


def _build(args) -> int:
    from jetmamba.compiler.bundle import verify_bundle
    from jetmamba.runtime.backends.tensorrt import unavailable_reason
    from jetmamba.runtime.build import (
        TensorRTUnavailableError,
        ensure_engine,
        format_verify,
        plugin_source_root,
        verify_build,
    )
    from jetmamba.runtime.engine import EngineOptions

    verify_bundle(args.bundle)  # a clear error for anything that is not an intact bundle
    plugin_source_root(args.bundle, trust_bundle_sources=args.trust_bundle_plugins)  # never run a bundle's code

    reason = unavailable_reason()  # checked before anything is written
    if reason is not None:
        raise TensorRTUnavailableError(f"jetmamba build needs TensorRT and a CUDA device: {reason}")
    options = EngineOptions(max_prompt=args.max_prompt, max_batch=args.max_batch, opt_level=args.opt_level)
    result = ensure_engine(args.bundle, options, device=args.device, force=args.force, quiet=args.quiet,
                           verbose=args.verbose, trust_bundle_sources=args.trust_bundle_plugins)  # fmt: skip
    how = "found in the cache" if result.cached else f"built in {result.seconds:.1f} s"
    lines = [f"engine {result.engine}  ({how})", f"  plugin library {result.plugin_library}",
             f"  TensorRT {result.target.tensorrt_version} on {result.target.gpu_name} "
             f"(sm {result.target.compute_capability}), max prompt {options.max_prompt}, max batch "
             f"{options.max_batch}, opt level {options.opt_level}"]  # fmt: skip
    if args.verify:
        result.verify = verify_build(args.bundle, result, device=args.device, quiet=args.quiet)
        lines.append(format_verify(result.verify))
    _emit(args, result.to_dict(), "\n".join(lines))
    return 0 if result.verify is None or result.verify.ok else 1


# ---------------------------------------------------------------- inspect


def _inspect_args(p):
    _add_model_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of text")


def _inspect(args) -> int:
    from jetmamba.calibration.inspect import describe_checkpoint, format_description
    from jetmamba.compiler.bundle import describe_bundle, format_bundle, is_bundle

    if is_bundle(args.model):
        info = describe_bundle(args.model)
        _emit(args, info, format_bundle(info))
        return 0
    info = describe_checkpoint(args.model, tokenizer=args.tokenizer)
    _emit(args, info, format_description(info))
    return 0


# ---------------------------------------------------------------- plan


def _plan_args(p):
    from jetmamba.boards import BOARD_ARCH
    from jetmamba.runtime.plan import DEFAULT_CTX

    p.add_argument("--model", metavar="DIR|QDIR|BUNDLE",
                   help="a checkpoint directory (its config.json alone is enough: plan before downloading "
                        "weights), a QuantizedModel directory or a bundle (its own recipe first, its real "
                        "size)")  # fmt: skip
    p.add_argument("--board", help="target board: " + ", ".join(BOARD_ARCH))
    p.add_argument("--recipe", help="plan this recipe only (default: fp16 and every recipe for the architecture)")
    p.add_argument("--batch", type=_int_at_least(1), default=1, help="sequences decoded together (default 1)")
    p.add_argument("--ctx", type=_int_at_least(1), default=DEFAULT_CTX,
                   help=f"prompt tokens: time to first token, activations (default {DEFAULT_CTX})")  # fmt: skip
    p.add_argument("--power-mode", metavar="MODE",
                   help="nvpmodel mode name or id, or 'all' (default: the board's maximum)")  # fmt: skip
    p.add_argument("--headless", action="store_true",
                   help="count the memory a console-only boot leaves instead of a desktop's")  # fmt: skip
    p.add_argument("--list-boards", action="store_true", help="list the boards and their power modes, then exit")
    p.add_argument("--json", action="store_true", help="print a JSON list (one object per recipe and power mode)")


def _plan(args) -> int:
    from jetmamba.boards import list_boards, load_board
    from jetmamba.runtime.plan import format_boards, format_plan, make_plan, read_model_source

    if args.list_boards:
        boards = list_boards()
        text = format_boards(boards)
        print(json.dumps([b.to_dict() for b in boards]) if args.json else text)
        return 0
    if not args.model or not args.board:
        raise UsageError("plan needs --model and --board (or --list-boards)")
    board = load_board(args.board)  # an unknown board is refused before the model is read
    modes = board.power_modes if (args.power_mode or "").lower() == "all" else (board.power_mode(args.power_mode),)
    source = read_model_source(args.model)
    plans = [make_plan(source, board, mode, recipe=args.recipe, batch=args.batch, ctx=args.ctx,
                       headless=args.headless) for mode in modes]  # fmt: skip
    if args.json:  # a list, as the issue specifies: one object per recipe (and power mode)
        print(json.dumps([row.to_dict() for plan in plans for row in plan.rows]))
    else:
        print("\n\n".join(format_plan(plan) for plan in plans))
    return 0


# ---------------------------------------------------------------- run


def _run_args(p):
    p.add_argument("--bundle", required=True, metavar="DIR", help="a bundle from jetmamba compile (verified first)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", metavar="TEXT", help="the text to continue")
    source.add_argument("--prompt-file", metavar="FILE", help="the text to continue: this UTF-8 file, exactly")
    source.add_argument("--interactive", action="store_true",
                        help="read prompts from stdin, one per line, each from a fresh state; EOF (Ctrl-D) or "
                             "Ctrl-C ends")  # fmt: skip
    p.add_argument("--backend", choices=("auto", "onnxruntime", "tensorrt"), default="auto",
                   help="auto (default): TensorRT where it can run, else ONNX Runtime")  # fmt: skip
    p.add_argument("--max-new-tokens", type=_int_at_least(1), default=128, metavar="N",
                   help="tokens to generate (default 128)")  # fmt: skip
    p.add_argument("--temperature", type=float, default=0.0, metavar="T",
                   help="0 (default): greedy, the most likely token each step; T > 0: sample from "
                        "softmax(logits / T)")  # fmt: skip
    p.add_argument("--top-k", type=int, metavar="K", help="sample among the K most likely tokens only")
    p.add_argument("--top-p", type=float, default=1.0, metavar="P",
                   help="sample among the fewest most likely tokens whose probability reaches P, in (0, 1] "
                        "(default 1: all)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, metavar="S",
                   help="sampling seed: the same seed gives the same text (default 0)")  # fmt: skip
    p.add_argument("--stop", action="extend", nargs="+", default=[], metavar="STR",
                   help="end the text before the first of these strings (e.g. --stop $'\\n\\n')")  # fmt: skip
    p.add_argument("--ignore-eos", action="store_true", help="keep generating past the tokenizer's end-of-text token")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per prompt (text, tokens, stop reason, timings) instead of "
                        "streaming")  # fmt: skip
    p.add_argument("-q", "--quiet", action="store_true", help="no stats line on stderr")


def _run(args) -> int:
    from dataclasses import replace

    from jetmamba.runtime.backends import open_backend
    from jetmamba.runtime.generate import GenerationConfig, eos_token_ids, generate
    from jetmamba.runtime.run import bundle_tokenizer, encode_prompt, format_stats, read_prompt_file, report

    config = GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                              top_p=args.top_p, seed=args.seed, stop=tuple(args.stop),
                              ignore_eos=args.ignore_eos)  # fmt: skip
    config.validate()  # bad settings are refused before the bundle is read
    prompt = read_prompt_file(args.prompt_file) if args.prompt_file is not None else args.prompt
    if prompt == "":
        raise UsageError("--prompt is empty: give some text to continue")
    with open_backend(args.bundle, args.backend) as backend:
        from jetmamba.compiler.bundle import verify_bundle

        manifest = getattr(backend, "manifest", None) or verify_bundle(args.bundle)
        tokenizer = bundle_tokenizer(args.bundle, manifest, backend.config.vocab_size)
        config = replace(config, eos_token_ids=eos_token_ids(tokenizer))

        def stream(piece: str) -> None:
            sys.stdout.write(piece)
            sys.stdout.flush()

        def one(text: str) -> None:
            result = generate(backend, encode_prompt(tokenizer, text), config, tokenizer=tokenizer,
                              on_text=None if args.json else stream)  # fmt: skip
            r = report(result, prompt=text, bundle=args.bundle, backend=backend.name, config=config)
            if args.json:
                print(json.dumps(r), flush=True)
                return
            stream("\n")
            if not args.quiet:
                print(format_stats(r), file=sys.stderr, flush=True)

        if not args.interactive:
            one(prompt)
            return 0
        try:  # each line a prompt; EOF or Ctrl-C (while reading or generating) ends the session
            while True:
                if sys.stdin.isatty() and not args.quiet:
                    print("> ", end="", file=sys.stderr, flush=True)
                line = sys.stdin.readline()
                if not line:
                    break
                if line.strip():
                    one(line.rstrip("\r\n"))
        except KeyboardInterrupt:
            print(file=sys.stderr)
    return 0


# ---------------------------------------------------------------- kernels


def _kernels_args(p):
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="compile every kernel for the target archs; registers, spills, shared memory",
                       description="Compile every plugins/<op>/*.cu for each --arch and print ptxas's figures, one "
                                   "line per kernel instantiation and arch. Exit 1 on a compile error or on spills "
                                   "for sm_87 (Orin).")  # fmt: skip
    b.add_argument("--arch", default="sm_87,sm_110", help="comma-separated GPU archs (default sm_87,sm_110)")
    b.add_argument("--toolchain", choices=("nvcc", "nvrtc"), default="nvcc",
                   help="nvcc: the local CUDA toolkit (default); nvrtc: NVRTC + ptxas 12.6 from NVIDIA's PyPI wheels, "
                        "JetPack 6.2's CUDA (pip install 'jetmamba[cuda126]')")  # fmt: skip
    _add_output_args(b)


def _kernels(args) -> int:
    import re

    from jetmamba.plugins.kernels import build, format_report

    archs = [a.strip() for a in args.arch.split(",") if a.strip()]
    bad = [a for a in archs if not re.fullmatch(r"sm_\d{2,3}a?", a)]
    if not archs or bad:
        raise UsageError(f"--arch {args.arch!r}: expected names such as sm_87,sm_110")
    progress = None if args.quiet else (lambda what: print(f"compiling {what}", file=sys.stderr))
    report = build(archs, args.toolchain, progress=progress)
    _emit(args, report.to_dict(), format_report(report))
    return 0 if report.ok else 1


# ---------------------------------------------------------------- bench


def _bench_args(p):
    what = p.add_mutually_exclusive_group()
    what.add_argument("--kernels", action="store_true",
                      help="time every kernel's launcher on one decode step and one prefill chunk of a real layer "
                           "(Mamba-2.8B, Mamba2-2.7B): achieved bandwidth against the GPU's peak")  # fmt: skip
    what.add_argument("--bundle", metavar="B",
                      help="benchmark a bundle on a backend: time to first token, time per output token "
                           "(p50/p90/p99), tokens/s, peak memory, and on a Jetson power and energy per token, beside "
                           "the roofline floors of `jetmamba plan`")  # fmt: skip
    p.add_argument("--backend", metavar="NAME",
                   help="with --kernels: gpu (the local CUDA GPU, default) or emu (the CPU emulator on tiny shapes, a "
                        "smoke test); with --bundle: auto (default), onnxruntime or tensorrt")  # fmt: skip
    p.add_argument("--repeats", type=_int_at_least(1),
                   help="with --kernels: timed launches per case (default 50); with --bundle: timed runs per prompt "
                        "length (default 3)")  # fmt: skip
    p.add_argument("--only", metavar="K1,K2", help="--kernels: a comma-separated subset of the kernels")
    bundle = p.add_argument_group("--bundle options")
    bundle.add_argument("--prompt-len", default="64,512,2048", metavar="N1,N2",
                        help="prompt lengths in tokens, comma-separated (default 64,512,2048)")  # fmt: skip
    bundle.add_argument("--gen-len", type=_int_at_least(1), default=128,
                        help="tokens generated per run: the prefill's, then decode steps (default 128)")  # fmt: skip
    bundle.add_argument("--batch", type=_int_at_least(1), default=1, help="sequences per run (default 1)")
    bundle.add_argument("--warmup", type=_int_at_least(0), default=1, help="untimed runs per prompt length (default 1)")
    bundle.add_argument("--seed", type=int, default=0, help="seed of the random prompts (default 0)")
    bundle.add_argument("--plot", metavar="OUT.png",
                        help="also write latency vs prompt length (TTFT, TPOT and their floors) as a PNG; needs "
                             "matplotlib (pip install 'jetmamba[plot]')")  # fmt: skip
    _add_output_args(p)


KERNEL_BACKENDS = ("gpu", "emu")
BUNDLE_BACKENDS = ("auto", "onnxruntime", "tensorrt")


def _bench(args) -> int:
    if args.kernels == (args.bundle is not None):
        raise UsageError("bench needs exactly one of --kernels (time the CUDA kernels) or --bundle B (a bundle)")
    if args.kernels:
        return _bench_kernels(args)
    return _bench_bundle(args)


def _bench_kernels(args) -> int:
    from jetmamba.plugins import bench

    backend = args.backend or "gpu"
    if backend not in KERNEL_BACKENDS:
        raise UsageError(f"--kernels --backend {backend}: choose from {', '.join(KERNEL_BACKENDS)}")
    only = [k.strip() for k in args.only.split(",")] if args.only else None
    unknown = sorted(set(only or ()) - set(bench.KERNELS))
    if unknown:
        raise UsageError(f"--only: unknown kernels {unknown}; choose from {', '.join(bench.KERNELS)}")
    progress = None if args.quiet else (lambda what: print(f"timing {what}", file=sys.stderr))
    shapes = "real" if backend == "gpu" else "tiny"
    report = bench.run(backend, shapes, args.repeats or 50, only, progress)
    _emit(args, report, bench.format_report(report))
    return 0


def _bench_bundle(args) -> int:
    from pathlib import Path

    from jetmamba.runtime.bench import BenchConfig, format_report, parse_lengths, plot_report, run_bench

    backend = args.backend or "auto"
    if backend not in BUNDLE_BACKENDS:
        raise UsageError(f"--bundle --backend {backend}: choose from {', '.join(BUNDLE_BACKENDS)}")
    if args.only:
        raise UsageError("--only selects kernels: it goes with --kernels, not --bundle")
    if args.plot:
        from jetmamba.runtime.bench import _matplotlib

        _matplotlib()  # a missing matplotlib is an error before minutes of benchmarking, not after
    config = BenchConfig(bundle=Path(args.bundle), backend=backend, prompt_lens=parse_lengths(args.prompt_len),
                         gen_len=args.gen_len, batch=args.batch, warmup=args.warmup, repeats=args.repeats or 3,
                         seed=args.seed)  # fmt: skip
    report = run_bench(config, show_progress=not args.quiet)
    for warning in report["warnings"]:
        print(f"jetmamba: warning: {warning}", file=sys.stderr)
    if args.plot:
        plot_report(report, args.plot)
    _emit(args, report, format_report(report))
    return 0


# ---------------------------------------------------------------- doctor


def _doctor_args(p):
    p.add_argument("--bundle", metavar="B", help="also check that this bundle verifies and was compiled for this GPU")
    _add_output_args(p)


def _doctor(args) -> int:
    from jetmamba.runtime.doctor import format_doctor, run_doctor

    report = run_doctor(args.bundle)
    _emit(args, report, format_doctor(report))
    return 0  # the checks ran: what is missing is in the report, not the exit status


# ---------------------------------------------------------------- parser


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    example: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS = (
    Command(
        "demo",
        "run the built-in demo: a small trained byte-level Mamba, evaluated, checked and sampled",
        "jetmamba demo\n  jetmamba demo --json | python -m json.tool",
        _demo_args,
        _demo,
    ),
    Command(
        "eval",
        "perplexity of a checkpoint on a text (non-overlapping windows, as the papers report it)",
        "jetmamba eval --model ../shared/models/mamba1-tiny-wt2 --data ../shared/data/wikitext2-test.txt \\\n"
        "      --seq-len 2048 --max-tokens 65536 --json",
        _eval_args,
        _eval,
    ),
    Command(
        "quantize",
        "calibrate and quantize a checkpoint with a recipe into a QuantizedModel directory",
        "jetmamba quantize --model ../shared/models/mamba1-tiny-wt2 --recipe w8a8-quamba \\\n"
        "      --calib ../shared/data/wikitext2-valid.txt --samples 128 --out mamba1-w8a8",
        _quantize_args,
        _quantize,
    ),
    Command(
        "compare",
        "quantize with several recipes and compare their perplexity, size and time with fp32",
        "jetmamba compare --model ../shared/models/mamba1-tiny-wt2 --calib ../shared/data/wikitext2-valid.txt \\\n"
        "      --data ../shared/data/wikitext2-test.txt --max-tokens 100000 --markdown table.md",
        _compare_args,
        _compare,
    ),
    Command(
        "compile",
        "lower a QuantizedModel (or an fp checkpoint, unquantized) to a verified bundle: ONNX graphs "
        "(ONNX Runtime and TensorRT), weights, manifest",
        "jetmamba compile --model mamba1-w8a8 --board orin-nano-8gb --out mamba1-w8a8.bundle\n"
        "  jetmamba compile --model ../shared/models/mamba1-tiny-wt2 --board orin-nano-8gb --out mamba1-fp16.bundle\n"
        "  jetmamba eval --model mamba1-w8a8.bundle --data ../shared/data/wikitext2-test.txt",
        _compile_args,
        _compile,
    ),
    Command(
        "run",
        "generate text from a bundle: greedy or sampled (temperature, top-k, top-p, seed), stop strings and "
        "EOS, streamed to stdout, TTFT and decode speed to stderr",
        "jetmamba run --bundle mamba1-w8a8.bundle --prompt 'The history of ' --max-new-tokens 64\n"
        "  jetmamba run --bundle mamba1-w8a8.bundle --prompt-file prompt.txt --temperature 0.8 --top-p 0.95 --seed 1\n"
        "  jetmamba run --bundle mamba1-w8a8.bundle --interactive --stop $'\\n'\n"
        "  jetmamba run --bundle mamba1-w8a8.bundle --prompt 'Hello' --json | python -m json.tool",
        _run_args,
        _run,
    ),
    Command(
        "kernels",
        "the CUDA kernels: 'kernels build' compiles them for Jetson archs and reports registers and spills",
        "jetmamba kernels build --arch sm_87,sm_110\n  jetmamba kernels build --toolchain nvrtc --arch sm_87 --json",
        _kernels_args,
        _kernels,
    ),
    Command(
        "bench",
        "benchmarks: 'bench --bundle B' measures a bundle's latency, throughput, memory and (on a Jetson) "
        "energy beside the roofline floors; 'bench --kernels' times each CUDA kernel and its achieved bandwidth",
        "jetmamba bench --bundle mamba1-w8a8.bundle --backend onnxruntime --prompt-len 64,512 --plot bench.png\n"
        "  jetmamba bench --bundle B --json | python -m json.tool\n"
        "  jetmamba bench --kernels --json\n  jetmamba bench --kernels --backend emu   # no GPU: a smoke test",
        _bench_args,
        _bench,
    ),
    Command(
        "doctor",
        "what this machine has for running bundles (JetPack/L4T, board, power mode, clocks, CUDA, GPU, TensorRT, "
        "cuda-python, ONNX Runtime, cmake, plugin library), with the fix for each missing piece",
        "jetmamba doctor\n  sudo jetmamba doctor --bundle mamba1-w8a8.bundle --json",
        _doctor_args,
        _doctor,
    ),
    Command(
        "build",
        "on the device: build a bundle's TensorRT plugin library (CMake) and engine (prefill and decode "
        "profiles), cached next to the bundle; --verify compares it with ONNX Runtime",
        "jetmamba build --bundle mamba1-w8a8.bundle --verify\n"
        "  jetmamba build --bundle mamba1-w8a8.bundle --max-prompt 4096 --opt-level 5 --json",
        _build_args,
        _build,
    ),
    Command(
        "inspect",
        "describe a checkpoint (format, architecture, parameters, state size, tokenizer) or a bundle "
        "(manifest, I/O contract, op histogram)",
        "jetmamba inspect --model ../shared/models/mamba2-tiny-wt2",
        _inspect_args,
        _inspect,
    ),
    Command(
        "plan",
        "will a model fit a board, and how fast can it possibly run: memory and the bandwidth / compute "
        "floors of decode and time to first token, for fp16 and each recipe",
        "jetmamba plan --model ../shared/models/mamba1-tiny-wt2 --board orin-nano-8gb\n"
        "  jetmamba plan --model DIR_WITH_CONFIG_JSON --board orin-nano-4gb --recipe w8a8-quamba --ctx 2048 --json\n"
        "  jetmamba plan --list-boards",
        _plan_args,
        _plan,
    ),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jetmamba",
        description="Edge deployment compiler for Mamba language models on NVIDIA Jetson.",
        epilog="Run 'jetmamba COMMAND --help' for a command's options and an example.",
    )
    parser.add_argument("--version", action="version", version=f"jetmamba {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what jetmamba is doing (to stderr)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in COMMANDS:
        p = sub.add_parser(
            cmd.name,
            help=cmd.summary,
            description=cmd.summary[0].upper() + cmd.summary[1:] + ".",
            epilog=f"example:\n  {cmd.example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        cmd.add_arguments(p)
        p.set_defaults(run=cmd.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help(sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="jetmamba: %(message)s")
    with _sigterm_unwinds():
        return _dispatch(args)


class Terminated(BaseException):
    """SIGTERM, raised where the process is, so that it unwinds like Ctrl-C: every artifact being
    written is discarded (jetmamba.atomic) and the previous one stays. Python's default for SIGTERM
    is to die on the spot, leaving temporary directories behind."""


@contextlib.contextmanager
def _sigterm_unwinds():
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _dispatch(args) -> int:
    try:
        return args.run(args)
    except Terminated:
        print("jetmamba: terminated", file=sys.stderr)
        return 143
    except JetmambaError as exc:
        print(f"jetmamba: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except MemoryError as exc:
        print(
            f"jetmamba: error: out of memory ({exc or 'allocation failed'}); try a shorter --seq-len", file=sys.stderr
        )
        return 1
    except KeyboardInterrupt:
        print("jetmamba: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `jetmamba ... | head`: the reader left, nothing to report
        sys.stderr.close()
        return 0
