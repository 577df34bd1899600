"""``jetmamba bench --bundle``: latency, throughput, memory and (on a Jetson) power of a bundle on
a backend, beside the roofline floors of :mod:`jetmamba.runtime.plan`.

For each prompt length: ``warmup`` untimed runs, then ``repeats`` timed ones. A run is a prefill
of ``batch`` seeded random prompts (no data files: latency does not depend on which tokens) and
the greedy choice of the first token — together the time to first token (TTFT) — then
``gen_len - 1`` decode steps, each timed with its greedy choice (the time per output token,
TPOT). Decode tokens/s is ``batch`` over the mean TPOT; prefill tokens/s is ``batch x prompt``
over the median TTFT.

Memory: the peak resident set of this process (``resource.getrusage``, so the peak since the
process started, model loading included), and device memory where the backend reports it
(an optional ``device_memory_bytes()`` method). On a Jetson, ``tegrastats`` is sampled through
the timed runs: average power per rail and energy per generated token (:mod:`.jetson`).

The floors are the planner's for the bundle's board, recipe, batch and prompt length, in the
power mode nvpmodel reports when the bench runs on that board, else the board's default mode.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jetmamba.errors import UsageError

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class BenchConfig:
    bundle: Path
    backend: str = "auto"
    prompt_lens: tuple[int, ...] = (64, 512, 2048)
    gen_len: int = 128
    batch: int = 1
    warmup: int = 1
    repeats: int = 3
    seed: int = 0
    tegrastats_interval_ms: int = 100

    def __post_init__(self):
        if not self.prompt_lens or any(n < 1 for n in self.prompt_lens):
            raise UsageError(f"prompt lengths must be at least 1, got {list(self.prompt_lens)}")
        for name in ("gen_len", "batch", "repeats"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise UsageError(f"--warmup must be 0 or more, got {self.warmup}")


def parse_lengths(text: str) -> tuple[int, ...]:
    """``64,512,2048`` -> (64, 512, 2048); a one-line UsageError for anything else."""
    parts = [p.strip() for p in text.split(",")]
    try:
        lengths = tuple(int(p) for p in parts)
    except ValueError:
        raise UsageError(f"--prompt-len {text!r}: expected comma-separated token counts such as 64,512,2048") from None
    bad = [n for n in lengths if n < 1]
    if bad:
        raise UsageError(f"--prompt-len {text!r}: every length must be at least 1")
    return lengths


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    if not values:
        raise ValueError("no values")
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def host_rss_peak_bytes() -> int:
    # ru_maxrss is in kilobytes on Linux (bytes on macOS)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if platform.system() == "Darwin" else peak * 1024)


# ---------------------------------------------------------------- one prompt length


def _run_once(backend, ids, gen_len: int) -> tuple[float, list[float]]:
    """(TTFT s, [decode step s]) of one run."""
    t0 = time.perf_counter()
    logits, state = backend.prefill(ids)
    token = logits[:, -1].argmax(-1)
    ttft = time.perf_counter() - t0
    steps = []
    for _ in range(gen_len - 1):
        t0 = time.perf_counter()
        logits, state = backend.decode(token, state)
        token = logits.argmax(-1)
        steps.append(time.perf_counter() - t0)
    return ttft, steps


def _prompts(config: BenchConfig, vocab: int, length: int, run: int):
    import torch

    g = torch.Generator().manual_seed(config.seed * 1_000_003 + length * 101 + run)
    return torch.randint(0, vocab, (config.batch, length), generator=g, dtype=torch.int64)


def _ratio(measured: float, floor: float | None) -> float | None:
    return None if not floor else round(measured / floor, 2)


# ---------------------------------------------------------------- the run


def run_bench(
    config: BenchConfig, *, show_progress: bool = True, probe=None, sampler_factory=None, backend=None
) -> dict[str, Any]:
    """The benchmark report (one JSON-able dict, :data:`REPORT_SCHEMA`).

    ``probe``: a :class:`~jetmamba.runtime.jetson.JetsonInfo` (default: probe this machine);
    ``sampler_factory(interval_ms)``: a tegrastats sampler (default :class:`~.jetson.TegraStats`);
    ``backend``: an open backend (default: ``open_backend(bundle, config.backend)``)."""
    from jetmamba import __version__
    from jetmamba.boards import load_board
    from jetmamba.compiler.bundle import verify_bundle
    from jetmamba.progress import progress
    from jetmamba.runtime import jetson
    from jetmamba.runtime.plan import make_plan, read_model_source

    manifest = verify_bundle(config.bundle)  # a clear error for anything that is not an intact bundle
    source = read_model_source(config.bundle)
    board = load_board(manifest["board"]["name"])
    info = jetson.probe_jetson() if probe is None else probe
    warnings: list[str] = []

    mode, mode_source = board.power_mode(), "board default"
    on_board = info.is_jetson and info.board == board.name
    if on_board:
        measured_mode = jetson.board_power_mode(board, info.power_mode)
        if measured_mode is not None:
            mode, mode_source = measured_mode, "nvpmodel"
        elif info.power_mode is not None:
            warnings.append(
                f"power mode {info.power_mode.name} is not in the {board.name} board file: the floors use {mode.name}"
            )
        if info.clocks_locked is False:
            warnings.append(
                "jetson_clocks is off: clocks scale with load, so latency varies and reads high (sudo jetson_clocks)"
            )
        elif info.clocks_locked is None:
            warnings.append("clock state unknown (jetson_clocks --show needs root)")
    elif info.is_jetson:
        warnings.append(
            f"this Jetson ({info.board or info.model}) is not the bundle's board ({board.name}): the "
            "floors are for the bundle's board, so the ratios are not meaningful here"
        )
    else:
        warnings.append(
            f"not a Jetson: the floors are for the bundle's board ({board.name}, {mode.name}), so the "
            "measured / floor ratios are only meaningful on that board"
        )

    if backend is None:
        from jetmamba.runtime.backends import open_backend

        backend = open_backend(config.bundle, config.backend)
    vocab = backend.config.vocab_size
    for length in config.prompt_lens:  # refuse what the backend cannot run before timing anything
        backend.check_shape(config.batch, length)

    sampler = None
    if info.is_jetson:
        factory = sampler_factory or (lambda ms: jetson.TegraStats(ms))
        try:
            sampler = factory(config.tegrastats_interval_ms).start()
            # tegrastats takes a moment to print its first line; without it the first runs have no power data
            sampler.wait_for_samples(1, timeout=3.0)
        except OSError as exc:
            warnings.append(f"tegrastats could not be started ({exc}): no power figures")
            sampler = None

    results = []
    runs = len(config.prompt_lens) * (config.warmup + config.repeats)
    bar = progress(total=runs, desc="bench", unit="run", disable=not show_progress)
    try:
        for length in config.prompt_lens:
            ttfts, steps, windows = [], [], []
            for run in range(config.warmup + config.repeats):
                ids = _prompts(config, vocab, length, run)
                start = time.monotonic()
                ttft, step_times = _run_once(backend, ids, config.gen_len)
                if run >= config.warmup:
                    ttfts.append(ttft)
                    steps.extend(step_times)
                    windows.append((start, time.monotonic()))
                bar.update(1)
            row = make_plan(source, board, mode, recipe=source.recipe, batch=config.batch, ctx=length).rows[0]
            results.append(_result(config, length, ttfts, steps, row, backend, sampler, windows))
    finally:
        bar.close()
        if sampler is not None:
            sampler.stop()
    if sampler is not None and not sampler.rails():
        warnings.append("tegrastats printed no power rails (some releases show them only to root: run with sudo)")

    return {
        "schema_version": SCHEMA_VERSION,
        "jetmamba": __version__,
        "bundle": str(config.bundle),
        "model": {"arch": source.config.arch, "recipe": source.recipe, "weight_bytes": source.weight_bytes},
        "backend": {"name": backend.name, "detail": getattr(backend, "provider", None)},
        "settings": {
            "prompt_lens": list(config.prompt_lens),
            "gen_len": config.gen_len,
            "batch": config.batch,
            "warmup": config.warmup,
            "repeats": config.repeats,
            "seed": config.seed,
        },
        "device": {
            "host": platform.machine(),
            "is_jetson": info.is_jetson,
            "detected_board": info.board,
            "model": info.model,
            "l4t": info.l4t,
            "jetpack": info.jetpack,
            "power_mode": None if info.power_mode is None else info.power_mode.name,
            "clocks_locked": info.clocks_locked,
        },
        "floors": {
            "board": board.name,
            "power_mode": mode.name,
            "power_mode_source": mode_source,
            "on_board": on_board,
        },
        "memory_measured": "host: peak resident set of the process (getrusage), loading included; device: "
        + ("the backend's figure" if any(r["memory"]["device_bytes"] is not None for r in results) else "not reported"),
        "results": results,
        "warnings": warnings,
    }


def _result(config, length, ttfts, steps, row, backend, sampler, windows) -> dict[str, Any]:
    ttft_ms = 1e3 * statistics.median(ttfts)
    tpot = [1e3 * s for s in steps]
    tpot_mean = statistics.fmean(tpot) if tpot else None
    device_bytes = None
    if hasattr(backend, "device_memory_bytes"):
        device_bytes = backend.device_memory_bytes()
    result = {
        "prompt_len": length,
        "ttft_ms": {
            "median": round(ttft_ms, 4),
            "min": round(1e3 * min(ttfts), 4),
            "values": [round(1e3 * t, 4) for t in ttfts],
        },
        "tpot_ms": None
        if not tpot
        else {
            "p50": round(percentile(tpot, 50), 4),
            "p90": round(percentile(tpot, 90), 4),
            "p99": round(percentile(tpot, 99), 4),
            "mean": round(tpot_mean, 4),
            "steps": len(tpot),
        },
        "prefill_tokens_per_s": round(config.batch * length / (ttft_ms / 1e3), 2),
        "decode_tokens_per_s": None if not tpot else round(config.batch / (tpot_mean / 1e3), 2),
        "floor": {
            "ttft_ms": round(row.prefill_floor_ms, 4),
            "tpot_ms": round(row.decode_floor_ms, 4),
            "ttft_ratio": _ratio(ttft_ms, row.prefill_floor_ms),
            "tpot_ratio": None if not tpot else _ratio(percentile(tpot, 50), row.decode_floor_ms),
            "ttft_bound": row.prefill_bound,
            "tpot_bound": row.decode_bound,
        },
        "memory": {"host_rss_peak_bytes": host_rss_peak_bytes(), "device_bytes": device_bytes},
        "power": None,
    }
    if sampler is not None:
        result["power"] = _power(sampler, windows, config.batch * config.gen_len * len(ttfts))
    return result


def _power(sampler, windows, tokens: int) -> dict[str, Any] | None:
    from jetmamba.runtime.jetson import input_rail

    energy = sampler.energy_j(windows)
    if not energy:
        return None
    average = sampler.average_power_mw(windows)
    return {
        "rails_mw": {k: round(v, 1) for k, v in average.items()},
        "energy_j": {k: round(v, 4) for k, v in energy.items()},
        "energy_per_token_j": {k: round(v / tokens, 6) for k, v in energy.items()},
        "input_rail": input_rail(energy),
        "samples": len(sampler.snapshot()),
    }


# ---------------------------------------------------------------- the schema of --json

_NUM = {"type": "number"}
_NUM_OR_NULL = {"type": ["number", "null"]}
_STR_OR_NULL = {"type": ["string", "null"]}
_RAIL_MAP = {"type": "object", "additionalProperties": _NUM}

REPORT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "jetmamba bench --bundle report",
    "type": "object",
    "required": [
        "schema_version",
        "jetmamba",
        "bundle",
        "model",
        "backend",
        "settings",
        "device",
        "floors",
        "memory_measured",
        "results",
        "warnings",
    ],
    "additionalProperties": False,
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "jetmamba": {"type": "string"},
        "bundle": {"type": "string"},
        "model": {
            "type": "object",
            "required": ["arch", "recipe", "weight_bytes"],
            "additionalProperties": False,
            "properties": {
                "arch": {"enum": ["mamba1", "mamba2"]},
                "recipe": {"type": "string"},
                "weight_bytes": {"type": ["integer", "null"], "minimum": 0},
            },
        },
        "backend": {
            "type": "object",
            "required": ["name", "detail"],
            "additionalProperties": False,
            "properties": {"name": {"type": "string"}, "detail": _STR_OR_NULL},
        },
        "settings": {
            "type": "object",
            "additionalProperties": False,
            "required": ["prompt_lens", "gen_len", "batch", "warmup", "repeats", "seed"],
            "properties": {
                "prompt_lens": {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 1}},
                "gen_len": {"type": "integer", "minimum": 1},
                "batch": {"type": "integer", "minimum": 1},
                "warmup": {"type": "integer", "minimum": 0},
                "repeats": {"type": "integer", "minimum": 1},
                "seed": {"type": "integer"},
            },
        },
        "device": {
            "type": "object",
            "additionalProperties": False,
            "required": [
                "host",
                "is_jetson",
                "detected_board",
                "model",
                "l4t",
                "jetpack",
                "power_mode",
                "clocks_locked",
            ],
            "properties": {
                "host": {"type": "string"},
                "is_jetson": {"type": "boolean"},
                "detected_board": _STR_OR_NULL,
                "model": _STR_OR_NULL,
                "l4t": _STR_OR_NULL,
                "jetpack": _STR_OR_NULL,
                "power_mode": _STR_OR_NULL,
                "clocks_locked": {"type": ["boolean", "null"]},
            },
        },
        "floors": {
            "type": "object",
            "additionalProperties": False,
            "required": ["board", "power_mode", "power_mode_source", "on_board"],
            "properties": {
                "board": {"type": "string"},
                "power_mode": {"type": "string"},
                "power_mode_source": {"enum": ["nvpmodel", "board default"]},
                "on_board": {"type": "boolean"},
            },
        },
        "memory_measured": {"type": "string"},
        "warnings": {"type": "array", "items": {"type": "string"}},
        "results": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": [
                    "prompt_len",
                    "ttft_ms",
                    "tpot_ms",
                    "prefill_tokens_per_s",
                    "decode_tokens_per_s",
                    "floor",
                    "memory",
                    "power",
                ],
                "properties": {
                    "prompt_len": {"type": "integer", "minimum": 1},
                    "ttft_ms": {
                        "type": "object",
                        "required": ["median", "min", "values"],
                        "additionalProperties": False,
                        "properties": {
                            "median": {"type": "number", "exclusiveMinimum": 0},
                            "min": {"type": "number", "exclusiveMinimum": 0},
                            "values": {"type": "array", "minItems": 1, "items": _NUM},
                        },
                    },
                    "tpot_ms": {
                        "type": ["object", "null"],
                        "required": ["p50", "p90", "p99", "mean", "steps"],
                        "additionalProperties": False,
                        "properties": {
                            "p50": _NUM,
                            "p90": _NUM,
                            "p99": _NUM,
                            "mean": _NUM,
                            "steps": {"type": "integer", "minimum": 1},
                        },
                    },
                    "prefill_tokens_per_s": {"type": "number", "exclusiveMinimum": 0},
                    "decode_tokens_per_s": _NUM_OR_NULL,
                    "floor": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["ttft_ms", "tpot_ms", "ttft_ratio", "tpot_ratio", "ttft_bound", "tpot_bound"],
                        "properties": {
                            "ttft_ms": {"type": "number", "exclusiveMinimum": 0},
                            "tpot_ms": {"type": "number", "exclusiveMinimum": 0},
                            "ttft_ratio": _NUM_OR_NULL,
                            "tpot_ratio": _NUM_OR_NULL,
                            "ttft_bound": {"enum": ["memory", "compute"]},
                            "tpot_bound": {"enum": ["memory", "compute"]},
                        },
                    },
                    "memory": {
                        "type": "object",
                        "required": ["host_rss_peak_bytes", "device_bytes"],
                        "additionalProperties": False,
                        "properties": {
                            "host_rss_peak_bytes": {"type": "integer", "minimum": 1},
                            "device_bytes": {"type": ["integer", "null"], "minimum": 0},
                        },
                    },
                    "power": {
                        "type": ["object", "null"],
                        "additionalProperties": False,
                        "required": ["rails_mw", "energy_j", "energy_per_token_j", "input_rail", "samples"],
                        "properties": {
                            "rails_mw": _RAIL_MAP,
                            "energy_j": _RAIL_MAP,
                            "energy_per_token_j": _RAIL_MAP,
                            "input_rail": _STR_OR_NULL,
                            "samples": {"type": "integer", "minimum": 0},
                        },
                    },
                },
            },
        },
    },
}


# ---------------------------------------------------------------- text and plot


def _ms(ms: float | None) -> str:
    if ms is None:
        return "-"
    if ms >= 1e3:
        return f"{ms / 1e3:.2f} s"
    return f"{ms:.2f} ms" if ms >= 1 else f"{ms * 1e3:.0f} us"


def _x(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:g}x"


def format_report(report: dict[str, Any]) -> str:
    s, f, d = report["settings"], report["floors"], report["device"]
    where = d["detected_board"] or d["model"] or ("a Jetson" if d["is_jetson"] else f"{d['host']} host, not a Jetson")
    backend = report["backend"]["name"] + (f" ({report['backend']['detail']})" if report["backend"]["detail"] else "")
    lines = [
        f"{Path(report['bundle']).name}: {report['model']['arch']} {report['model']['recipe']} on {backend}, {where}",
        f"batch {s['batch']}, {s['gen_len']} generated tokens, {s['warmup']} warmup + {s['repeats']} timed runs per "
        f"prompt length, seed {s['seed']}",
        f"floors: {f['board']} in {f['power_mode']} ({f['power_mode_source']}); ratio = measured / floor",
    ]
    if d["is_jetson"]:
        clocks = {True: "locked", False: "NOT locked", None: "unknown"}[d["clocks_locked"]]
        lines.append(
            f"L4T {d['l4t'] or '?'} (JetPack {d['jetpack'] or '?'}), power mode {d['power_mode'] or '?'}, "
            f"clocks {clocks}"
        )
    lines += [
        "",
        f"{'prompt':>6} {'TTFT':>10} {'floor':>10} {'x':>7} {'TPOT p50':>10} {'p90':>10} {'p99':>10} {'floor':>10} "
        f"{'x':>7} {'decode tok/s':>12} {'prefill tok/s':>13} {'RSS peak':>9}",
    ]
    power_rows = []
    for r in report["results"]:
        t, fl, ttft = r["tpot_ms"] or {}, r["floor"], r["ttft_ms"]["median"]
        lines.append(
            f"{r['prompt_len']:>6} {_ms(ttft):>10} {_ms(fl['ttft_ms']):>10} {_x(fl['ttft_ratio']):>7} "
            f"{_ms(t.get('p50')):>10} {_ms(t.get('p90')):>10} {_ms(t.get('p99')):>10} {_ms(fl['tpot_ms']):>10} "
            f"{_x(fl['tpot_ratio']):>7} {r['decode_tokens_per_s'] or '-':>12} {r['prefill_tokens_per_s']:>13} "
            f"{r['memory']['host_rss_peak_bytes'] / 1e6:>7.0f}MB"
        )
        if r["power"]:
            p = r["power"]
            rails = ", ".join(f"{k} {v / 1e3:.2f} W" for k, v in p["rails_mw"].items())
            main = p["input_rail"]
            per_token = f"; {p['energy_per_token_j'][main] * 1e3:.1f} mJ/token ({main})" if main else ""
            power_rows.append(f"  prompt {r['prompt_len']}: {rails}{per_token}")
    if power_rows:
        lines += ["", "power (average over the timed runs) and energy per generated token:"] + power_rows
    lines += ["", f"memory: {report['memory_measured']}"]
    lines += [f"note: {w}" for w in report["warnings"]]
    return "\n".join(lines)


def _matplotlib():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display on a Jetson over ssh or in CI
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'jetmamba[plot]' (or pip install matplotlib)") from None
    return plt


def plot_report(report: dict[str, Any], out: str | os.PathLike) -> Path:
    """Latency vs prompt length (TTFT and TPOT p50, measured and floor) as a PNG, written whole or
    not at all."""
    plt = _matplotlib()
    out = Path(out)
    rows = report["results"]
    x = [r["prompt_len"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    try:
        ax.plot(x, [r["ttft_ms"]["median"] for r in rows], "o-", color="tab:blue", label="TTFT (measured)")
        ax.plot(x, [r["floor"]["ttft_ms"] for r in rows], "--", color="tab:blue", label="TTFT floor")
        tpot = [(n, r["tpot_ms"]["p50"]) for n, r in zip(x, rows, strict=True) if r["tpot_ms"]]
        if tpot:
            ax.plot(*zip(*tpot, strict=True), "s-", color="tab:orange", label="TPOT p50 (measured)")
        ax.plot(x, [r["floor"]["tpot_ms"] for r in rows], "--", color="tab:orange", label="TPOT floor")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("prompt length (tokens)")
        ax.set_ylabel("ms")
        f = report["floors"]
        where = "" if f["on_board"] else " (floors for that board, not this host)"
        ax.set_title(
            f"{Path(report['bundle']).name} on {report['backend']['name']}; floors: {f['board']} "
            f"{f['power_mode']}{where}",
            fontsize=9,
        )
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".png", dir=out.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fig.savefig(fh, format="png")
            umask = os.umask(0)  # mkstemp makes 0600 files; the plot gets what any new file gets
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    finally:
        plt.close(fig)
    return out


__all__ = ["REPORT_SCHEMA", "BenchConfig", "format_report", "parse_lengths", "percentile", "plot_report", "run_bench"]
