"""What ``jetmamba run`` needs around the generation loop: the bundle's tokenizer, prompts from
files, and the report of one generation (JSON and the stats line)."""

from __future__ import annotations

import statistics
from pathlib import Path

from jetmamba.errors import DataError, UsageError
from jetmamba.runtime.generate import Generation, GenerationConfig


def bundle_tokenizer(bundle, manifest: dict, vocab_size: int):
    """The tokenizer the bundle carries (``manifest["tokenizer"]``), else bytes for a byte-level
    model; a CheckpointError naming what is missing otherwise."""
    from jetmamba.calibration.tokenizer import HFTokenizer, load_tokenizer
    from jetmamba.compiler.bundle import BundleError

    name = manifest.get("tokenizer")
    if name is None:
        return load_tokenizer(Path(bundle), vocab_size)
    if not isinstance(name, str) or name not in manifest.get("files", {}):
        raise BundleError(f"{bundle}: the manifest's tokenizer {name!r} is not one of its files")
    tokenizer = HFTokenizer(Path(bundle) / name)
    if tokenizer.vocab_size > vocab_size:
        raise BundleError(f"{bundle}: its tokenizer has {tokenizer.vocab_size} tokens, the model {vocab_size} logits")
    return tokenizer


def read_prompt_file(path) -> str:
    """The whole file as the prompt, exactly (a trailing newline included)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"--prompt-file {path}: no such file")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"--prompt-file {path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:
        raise DataError(f"--prompt-file {path}: cannot be read ({exc.strerror})") from None
    if not text:
        raise UsageError(f"--prompt-file {path}: the file is empty")
    return text


def encode_prompt(tokenizer, text: str) -> list[int]:
    if not text:
        raise UsageError("the prompt is empty: give some text to continue")
    ids = tokenizer.encode(text)
    if not ids:
        raise UsageError(f"the prompt {text[:40]!r} encodes to no tokens")
    return ids


def report(result: Generation, *, prompt: str, bundle, backend: str, config: GenerationConfig) -> dict:
    """One generation as a JSON-ready object (times in milliseconds; rates None where undefined)."""
    rate = result.decode_tokens_per_second
    steps = [s * 1e3 for s in result.decode_seconds]
    return {
        "bundle": str(bundle),
        "backend": backend,
        "prompt": prompt,
        "text": result.text,
        "tokens": result.tokens,
        "prompt_tokens": result.prompt_tokens,
        "new_tokens": len(result.tokens),
        "stop_reason": result.stop_reason,
        "ttft_ms": result.ttft_seconds * 1e3,
        "prefill_ms": result.prefill_seconds * 1e3,
        "prefill_chunks": result.prefill_chunks,
        "decode_tokens_per_second": None if rate != rate else rate,  # NaN is not JSON
        "decode_ms_p50": statistics.median(steps) if steps else None,
        "settings": {
            "max_new_tokens": config.max_new_tokens,
            "temperature": config.temperature,
            "top_k": config.top_k,
            "top_p": config.top_p,
            "seed": config.seed,
            "stop": list(config.stop),
            "eos_token_ids": list(config.eos_token_ids),
            "ignore_eos": config.ignore_eos,
        },
    }


def format_stats(r: dict) -> str:
    rate = r["decode_tokens_per_second"]
    decode = f"decode {rate:.1f} tokens/s" if rate is not None else "no decode step"
    return (
        f"[{r['backend']}] {r['prompt_tokens']} prompt tokens, {r['new_tokens']} new (stop: {r['stop_reason']}); "
        f"TTFT {r['ttft_ms']:.1f} ms, {decode}"
    )
