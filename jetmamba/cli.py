"""The ``jetmamba`` command: thin subcommands over the library.

Human-readable output goes to stdout, or one JSON object with ``--json``; progress bars and
messages go to stderr. Errors in the user's input are one line (``jetmamba: error: ...``) with a
non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
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


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", required=True, metavar="DIR",
        help="checkpoint directory (Hugging Face or mamba_ssm format), or a hub id already in the local HF cache",
    )  # fmt: skip
    p.add_argument("--tokenizer", metavar="PATH", help="tokenizer.json (or its directory) when the checkpoint has none")


def _add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of text")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _emit(args, payload: dict, text: str) -> None:
    if args.json:
        print(json.dumps(payload, indent=None, sort_keys=False))
    else:
        print(text)


# ---------------------------------------------------------------- demo


def _demo_args(p):
    _add_output_args(p)
    p.add_argument("--seed", type=int, default=0, help="sampling seed for the generated text (default 0)")


def _demo(args) -> int:
    from jetmamba.demo.run import format_report, run_demo

    report = run_demo(seed=args.seed, show_progress=not args.quiet)
    _emit(args, report, format_report(report))
    return 0


# ---------------------------------------------------------------- eval


def _eval_args(p):
    _add_model_args(p)
    p.add_argument(
        "--data", required=True, metavar="PATH", help="text file, .jsonl with a 'text' field, or directory of .txt"
    )
    p.add_argument("--seq-len", type=_int_at_least(2), default=2048, help="window length in tokens (default 2048)")
    p.add_argument("--max-tokens", type=_int_at_least(2), help="use only the first N tokens of the data")
    p.add_argument("--batch-size", type=_int_at_least(1), default=1, help="windows per forward pass (default 1)")
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32", help="compute dtype (default fp32)")
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


def _eval(args) -> int:
    from jetmamba.calibration.checkpoint import DTYPES, load_model, open_checkpoint
    from jetmamba.calibration.data import read_text, tokenize
    from jetmamba.calibration.evaluate import perplexity

    device = _device(args.device)
    ckpt = open_checkpoint(args.model)
    tokenizer = ckpt.tokenizer(args.tokenizer)
    tokens = tokenize(read_text(args.data), tokenizer, args.max_tokens)
    model = load_model(ckpt, dtype=DTYPES[args.dtype], device=device, show_progress=not args.quiet)
    result = perplexity(model, tokens, args.seq_len, batch_size=args.batch_size, show_progress=not args.quiet)
    payload = {
        **result.to_dict(),
        "model": str(ckpt.path),
        "arch": ckpt.config.arch,
        "data": args.data,
        "tokenizer": tokenizer.name,
        "dtype": args.dtype,
        "device": str(device),
    }
    rate = result.tokens / result.seconds if result.seconds > 0 else float("nan")
    text = (
        f"perplexity {result.perplexity:.4f}  ({ckpt.path.name}, {args.data})\n"
        f"  {result.windows} windows x {result.seq_len} tokens = {result.tokens} tokens "
        f"({result.predictions} predictions), {args.dtype} on {device}, {result.seconds:.1f} s ({rate:,.0f} tokens/s)"
    )
    _emit(args, payload, text)
    return 0


# ---------------------------------------------------------------- inspect


def _inspect_args(p):
    _add_model_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of text")


def _inspect(args) -> int:
    from jetmamba.calibration.inspect import describe_checkpoint, format_description

    info = describe_checkpoint(args.model, tokenizer=args.tokenizer)
    _emit(args, info, format_description(info))
    return 0


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
        "inspect",
        "describe a checkpoint: format, architecture, parameters, state size, tokenizer",
        "jetmamba inspect --model ../shared/models/mamba2-tiny-wt2",
        _inspect_args,
        _inspect,
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
    try:
        return args.run(args)
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
