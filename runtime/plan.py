"""Planning a deployment: will a model fit a board, and how fast can it possibly run there.

Everything is computed from the model's shape (a ``config.json`` is enough, so a user can plan
before downloading weights) and a board file (:mod:`jetmamba.boards`), for fp16 and every
quantization recipe. Where an artifact gives real sizes (a QuantizedModel's tensors, a bundle's
``weights.bin``), its own recipe's row uses them.

**Weights** (the deployed graph's initializers, per recipe; ``B`` = batch, ``L`` = prompt tokens):

- GEMM weights (Mamba1: in_proj, x_proj, dt_proj, out_proj; Mamba2: in_proj, out_proj) at the
  recipe's weight bits; 8-bit ones with one fp32 scale per output channel, 4-bit ones with one
  fp16 scale per group of 128 input channels; fp16 models at 2 bytes;
- the embedding and the LM head in fp16; a tied head is stored once where the lowered head still
  equals the table (unquantized graphs, recipes without norm fusion or residual rotation), twice
  otherwise (fusing the final norm and rotating the residual stream rewrite the head);
- the depthwise conv weights (int8 + a fp32 scale per channel where activations are int8, else
  fp16), norm weights and biases (fp32 in quantized graphs, fp16 in fp16 ones), and A, D, dt_bias
  (always fp32).

**State** per batch row: per layer the conv state ``(d_conv - 1) x conv_dim`` (int8 where activations
are int8, else fp16) and the SSM state ``d_inner x d_state`` in fp16 (Mamba2's ``heads x head_dim x
d_state`` is the same count). The engine holds an input and an output copy (state is graph I/O),
so memory counts it twice.

**Activations and workspace** for a prefill of ``L`` tokens: TensorRT reuses activation memory
across layers, so the estimate is one layer's intermediates plus the logits, for every token:
``B x L x (layer_bytes_per_token + vocab x 6)`` (fp16 logits, then their fp32 copy: the graph
returns logits for every prompt position) ``+ 64 MiB`` of GEMM / plugin scratch. A layer's
intermediates per token: the fp16 residual stream and mixer output (``2 x d_model x 2``), the scan
output (``d_inner x 2``), and at the activation width (1 byte int8, 2 fp16) the norm output, the
in_proj output, the conv output, Mamba1's x_proj output and dt, and out_proj's input.

**Engine overhead**: 400 MB (CUDA context, cuBLAS/cuDNN and TensorRT runtime resident on Jetson,
an estimate) plus 5 % of the weights (TensorRT's own weight layouts and alignment). Loading an
engine can briefly need the serialized engine beside the built one; that transient is not counted.

**Fits** when weights + 2 x state + activations + engine overhead <= what the OS leaves on the
board (the board file's estimate, desktop or headless).

**Floors** are lower bounds from the power mode's peak bandwidth and peak compute, not predictions:

- ``decode_floor_ms`` (one step, ``B`` tokens) = max(bytes / bandwidth, compute time), bytes = every
  weight except the embedding table (one row per sequence is gathered) + the state read and
  written + each layer's intermediates written and read + the logits;
- ``prefill_floor_ms`` (the time to first token) = max(bytes / bandwidth, compute time), bytes =
  the weights read once + ``n_layer`` layers of intermediates written and read for ``B x L``
  tokens + the logits + the final state;
- compute time = GEMM FLOPs (2 x GEMM weights x tokens) at the INT8 peak where activations are
  int8, at the FP16 peak otherwise; the LM head (2 x vocab x d_model x tokens) at the FP16 peak;
  the scan and conv on CUDA cores at the FP32 peak (cores x 2 x clock): per token and layer
  ``k x d_inner x d_state`` with k = 9 (Mamba1: ``exp(dt A)``, ``dA h + dB u``, ``C h`` per state
  element) or 7 (Mamba2: the decay is one exp per head), plus ``2 x d_conv x conv_dim`` — a
  recurrent scan, as jetmamba's plugins compute it in fp32.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jetmamba.boards import GB, Board, PowerMode, list_boards
from jetmamba.errors import CheckpointError, UsageError

WORKSPACE_BYTES = 64 << 20  # GEMM tactic and plugin scratch beside the activations
ENGINE_RUNTIME_BYTES = 400 * 10**6  # CUDA context + cuBLAS/cuDNN + TensorRT runtime, resident (estimate)
ENGINE_WEIGHT_FRACTION = 0.05  # TensorRT's weight layouts, padding and alignment (estimate)
GROUP_SIZE_4BIT = 128
# FLOPs per token, layer and state element of a recurrent scan (see the module docstring)
SCAN_FLOPS_PER_STATE_ELEMENT = {"mamba1": 9, "mamba2": 7}
LOGIT_BYTES_PER_VOCAB_ENTRY = 2 + 4  # the fp16 LM head output and its fp32 graph output
DEFAULT_CTX = 1024  # Quamba2 reports time to first token at 1024 prompt tokens


# ---------------------------------------------------------------- recipes as the planner costs them


@dataclass(frozen=True)
class Precision:
    """How a recipe stores weights and computes: all the planner needs of it."""

    name: str
    weight_bits: int  # 32, 16, 8, 4
    act_bits: int  # 8: int8 GEMMs (and int8 conv / conv state); 16: fp16 GEMMs
    group_size: int | None  # 4-bit weights: a fp16 scale per group of input channels; None: per output channel
    archs: tuple[str, ...]
    available: bool  # False: a recipe `jetmamba quantize` does not implement yet (planned)
    rewrites_head: bool = True  # norm fusion / residual rotation change the LM head: a tied one is stored twice

    @property
    def quantized(self) -> bool:
        return self.weight_bits < 16

    @property
    def float_width(self) -> int:
        """Bytes of the graph's float tensors (embedding, LM head, residual stream)."""
        return 4 if self.weight_bits == 32 else 2


# Recipes on the roadmap (the 4-bit set), costed before they exist so a user can see what
# would fit; a name that reaches calibration.recipes.RECIPES becomes available automatically.
# W4AX mixes int8 and fp16 activations per layer; the floors take the int8 side (a floor is optimistic).
PLANNED_RECIPES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("w4a16-quamba2", ("mamba1", "mamba2")),
    ("w4a8-quamba2", ("mamba1", "mamba2")),
    ("w4a8-mambaquant", ("mamba1", "mamba2")),
    ("w4ax-quamba2", ("mamba1", "mamba2")),
)
_BITS = re.compile(r"^w(\d+)a(\d+|x)(-|$)")
ALL_ARCHS = ("mamba1", "mamba2")


def precision_from_name(name: str, archs: tuple[str, ...], available: bool) -> Precision | None:
    """``wNaM-...`` -> its costs; None for a name that does not say its bits."""
    m = _BITS.match(name)
    if m is None:
        return None
    weight_bits, act = int(m.group(1)), m.group(2)
    act_bits = 8 if act == "x" else int(act)
    if weight_bits not in (4, 8) or act_bits not in (8, 16):
        return None
    group = GROUP_SIZE_4BIT if weight_bits == 4 else None
    return Precision(name, weight_bits, act_bits, group, archs, available)


def precisions() -> dict[str, Precision]:
    """Every recipe the planner knows: fp16 (and fp32, an unquantized bundle's other type), the
    recipes of :mod:`jetmamba.calibration.recipes`, then the planned ones."""
    from jetmamba.calibration.recipes import RECIPES

    table = {
        "fp16": Precision("fp16", 16, 16, None, ALL_ARCHS, True, rewrites_head=False),
        "fp32": Precision("fp32", 32, 32, None, ALL_ARCHS, True, rewrites_head=False),
    }
    for name, recipe in RECIPES.items():
        p = precision_from_name(name, recipe.archs, True)
        # a recipe whose name does not say its bits cannot be costed; tests/runtime keeps this from
        # happening, and planning the other recipes is better than refusing them all
        if p is not None:
            rewrites = recipe.fuse_norms or recipe.residual_rotation is not None
            table[name] = dataclasses.replace(p, rewrites_head=rewrites)
    for name, archs in PLANNED_RECIPES:
        if name not in table:
            table[name] = precision_from_name(name, archs, False)
    return table


class UnsupportedRecipe(UsageError):
    def __init__(self, name: str):
        super().__init__(f"the planner cannot cost recipe {name!r}: its name does not say its weight and "
                         "activation bits (wNaM-...)")  # fmt: skip


def select_recipes(arch: str, requested: str | None = None, first: str | None = None) -> list[Precision]:
    """``requested`` alone (checked), or: ``first`` (an artifact's own recipe), fp16, then every
    recipe for the architecture."""
    table = precisions()
    if first is not None and first not in table:
        p = precision_from_name(first, ALL_ARCHS, True)
        if p is None:
            raise UnsupportedRecipe(first)
        table[first] = p
    if requested is not None:
        if requested not in table:
            raise UsageError(f"unknown recipe {requested!r}; choose from {', '.join(table)}")
        p = table[requested]
        if arch not in p.archs:
            raise UsageError(f"recipe {requested} does not apply to {arch} models (it is for {', '.join(p.archs)})")
        return [p]
    names = [n for n in (first, "fp16") if n is not None]
    names += [n for n, p in table.items() if n not in ("fp16", "fp32") and arch in p.archs]
    return [table[n] for n in dict.fromkeys(names)]


# ---------------------------------------------------------------- the model's shape


@dataclass(frozen=True)
class Gemm:
    name: str
    d_in: int
    d_out: int


@dataclass(frozen=True)
class ModelShape:
    """What the formulas need of a ModelConfig, per layer unless said otherwise."""

    arch: str
    d_model: int
    n_layer: int
    vocab_size: int
    d_inner: int
    d_state: int
    d_conv: int
    conv_dim: int
    gemms: tuple[Gemm, ...]
    float_vectors: int  # norm weights and biases: fp32 in quantized graphs, the float type otherwise
    fp32_vectors: int  # A, D, dt_bias: fp32 in every graph
    act_elements: int  # intermediates per token stored at the activation width
    fp16_act_elements: int  # intermediates per token always fp16 (residual, mixer output, scan output)
    tie_embeddings: bool

    @property
    def gemm_params(self) -> int:
        return sum(g.d_in * g.d_out for g in self.gemms)

    @property
    def scan_flops_per_token(self) -> int:
        k = SCAN_FLOPS_PER_STATE_ELEMENT[self.arch]
        return k * self.d_inner * self.d_state + 2 * self.d_conv * self.conv_dim

    @property
    def params(self) -> int:
        """Parameters as the checkpoint counts them (a tied LM head once)."""
        per_layer = self.gemm_params + self.conv_dim * self.d_conv + self.float_vectors + self.fp32_vectors
        table = self.vocab_size * self.d_model
        return self.n_layer * per_layer + table * (1 if self.tie_embeddings else 2) + self.d_model


def model_shape(config) -> ModelShape:
    """A Mamba1 or Mamba2 ModelConfig -> its shape (parameter names as in transformers / mamba_ssm)."""
    c = config
    conv_bias = c.conv_dim if c.conv_bias else 0
    common = {"arch": c.arch, "d_model": c.d_model, "n_layer": c.n_layer, "vocab_size": c.vocab_size,
              "d_inner": c.d_inner, "d_state": c.d_state, "d_conv": c.d_conv, "conv_dim": c.conv_dim,
              "tie_embeddings": c.tie_embeddings}  # fmt: skip
    if c.arch == "mamba1":
        x_proj_out = c.dt_rank + 2 * c.d_state
        gemms = (Gemm("in_proj", c.d_model, 2 * c.d_inner), Gemm("x_proj", c.d_inner, x_proj_out),
                 Gemm("dt_proj", c.dt_rank, c.d_inner), Gemm("out_proj", c.d_inner, c.d_model))  # fmt: skip
        proj_bias = (2 * c.d_inner + c.d_model) if c.proj_bias else 0
        return ModelShape(
            **common, gemms=gemms,
            float_vectors=c.d_model + conv_bias + proj_bias,  # block norm, conv bias, in/out_proj biases
            fp32_vectors=c.d_inner * c.d_state + 2 * c.d_inner,  # A, D, dt_bias (dt_proj's bias)
            # norm out, in_proj out (x, z), conv out (u), x_proj out (dt_r, B, C), dt, out_proj input
            act_elements=c.d_model + 2 * c.d_inner + c.d_inner + x_proj_out + c.d_inner + c.d_inner,
            fp16_act_elements=2 * c.d_model + c.d_inner,
        )  # fmt: skip
    if c.arch == "mamba2":
        in_proj_out = c.d_inner + c.conv_dim + c.n_heads  # z, xBC, dt
        gemms = (Gemm("in_proj", c.d_model, in_proj_out), Gemm("out_proj", c.d_inner, c.d_model))
        proj_bias = (in_proj_out + c.d_model) if c.proj_bias else 0
        return ModelShape(
            **common, gemms=gemms,
            float_vectors=c.d_model + conv_bias + c.d_inner + proj_bias,  # block norm, conv bias, gated norm
            fp32_vectors=3 * c.n_heads,  # A, D, dt_bias per head
            # norm out, in_proj out, conv out (x, B, C), gated norm out = out_proj input
            act_elements=c.d_model + in_proj_out + c.conv_dim + c.d_inner,
            fp16_act_elements=2 * c.d_model + c.d_inner,
        )  # fmt: skip
    raise UsageError(f"the planner does not know architecture {c.arch!r}")


# ---------------------------------------------------------------- bytes


@dataclass(frozen=True)
class WeightBytes:
    gemm: int  # matrices and their scales, all layers
    conv: int  # depthwise conv weights (and scales), all layers
    vectors: int  # norms, biases, A, D, dt_bias, final norm
    embedding: int
    lm_head: int

    @property
    def total(self) -> int:
        return self.gemm + self.conv + self.vectors + self.embedding + self.lm_head


def weight_bytes(shape: ModelShape, p: Precision) -> WeightBytes:
    """The deployed graph's weights for recipe ``p`` (see the module docstring)."""
    fw = p.float_width
    if p.quantized:
        matrices = sum(g.d_in * g.d_out for g in shape.gemms) * p.weight_bits // 8
        if p.group_size is not None:
            scales = sum(g.d_out * math.ceil(g.d_in / p.group_size) for g in shape.gemms) * 2
        else:
            scales = sum(g.d_out for g in shape.gemms) * 4
        gemm = matrices + scales
    else:
        gemm = shape.gemm_params * fw
    int8_conv = p.act_bits == 8
    conv = shape.conv_dim * shape.d_conv * (1 if int8_conv else fw) + (shape.conv_dim * 4 if int8_conv else 0)
    vector_width = 4 if p.quantized else fw
    vectors = shape.n_layer * (shape.float_vectors * vector_width + shape.fp32_vectors * 4) + shape.d_model * 4
    table = shape.vocab_size * shape.d_model * fw
    head = 0 if shape.tie_embeddings and not p.rewrites_head else table
    return WeightBytes(shape.n_layer * gemm, shape.n_layer * conv, vectors, table, head)


def state_bytes(shape: ModelShape, p: Precision, batch: int) -> int:
    """One copy of the recurrent state: conv + SSM, every layer, ``batch`` sequences."""
    conv_width = 1 if p.act_bits == 8 else p.float_width
    conv = (shape.d_conv - 1) * shape.conv_dim * conv_width
    ssm = shape.d_inner * shape.d_state * 2
    return batch * shape.n_layer * (conv + ssm)


def layer_bytes_per_token(shape: ModelShape, p: Precision) -> int:
    act_width = 1 if p.act_bits == 8 else p.float_width
    return shape.act_elements * act_width + shape.fp16_act_elements * p.float_width


def logits_bytes_per_token(shape: ModelShape, p: Precision) -> int:
    return shape.vocab_size * (LOGIT_BYTES_PER_VOCAB_ENTRY if p.float_width == 2 else 4)


def activation_bytes(shape: ModelShape, p: Precision, batch: int, ctx: int) -> int:
    """Prefill of ``ctx`` tokens: one layer's intermediates + the logits, every token, + scratch."""
    tokens = batch * ctx
    return tokens * (layer_bytes_per_token(shape, p) + logits_bytes_per_token(shape, p)) + WORKSPACE_BYTES


def engine_overhead_bytes(weights: int) -> int:
    return ENGINE_RUNTIME_BYTES + int(ENGINE_WEIGHT_FRACTION * weights)


# ---------------------------------------------------------------- floors


@dataclass(frozen=True)
class Floor:
    bytes_moved: int
    seconds_memory: float
    seconds_compute: float

    @property
    def ms(self) -> float:
        return 1e3 * max(self.seconds_memory, self.seconds_compute)

    @property
    def bound(self) -> str:
        return "memory" if self.seconds_memory >= self.seconds_compute else "compute"


def _compute_seconds(shape: ModelShape, p: Precision, board: Board, mode: PowerMode, tokens: int) -> float:
    if p.act_bits == 8:
        gemm_rate = mode.int8_ops_per_s
    elif p.float_width == 2:
        gemm_rate = mode.fp16_flops_per_s
    else:
        gemm_rate = board.fp32_flops_per_s(mode)
    head_rate = mode.fp16_flops_per_s if p.float_width == 2 else board.fp32_flops_per_s(mode)
    gemm = 2 * shape.n_layer * shape.gemm_params * tokens / gemm_rate
    head = 2 * shape.vocab_size * shape.d_model * tokens / head_rate
    scan = shape.n_layer * shape.scan_flops_per_token * tokens / board.fp32_flops_per_s(mode)
    return gemm + head + scan


def _floor(bytes_moved: int, shape, p, board, mode, tokens) -> Floor:
    return Floor(bytes_moved, bytes_moved / mode.bandwidth_bytes_per_s, _compute_seconds(shape, p, board, mode, tokens))


def decode_floor(shape, p, board, mode, weights: int, embedding: int, batch: int) -> Floor:
    """One decode step of ``batch`` sequences (see the module docstring)."""
    per_token = 2 * shape.n_layer * layer_bytes_per_token(shape, p) + logits_bytes_per_token(shape, p)
    rows = batch * shape.d_model * p.float_width  # the embedding rows gathered
    moved = weights - embedding + rows + 2 * state_bytes(shape, p, batch) + batch * per_token
    return _floor(moved, shape, p, board, mode, batch)


def prefill_floor(shape, p, board, mode, weights: int, embedding: int, batch: int, ctx: int) -> Floor:
    """Prefill of ``batch`` prompts of ``ctx`` tokens: the time to first token."""
    tokens = batch * ctx
    per_token = 2 * shape.n_layer * layer_bytes_per_token(shape, p) + logits_bytes_per_token(shape, p)
    rows = tokens * shape.d_model * p.float_width
    moved = weights - embedding + rows + tokens * per_token + state_bytes(shape, p, batch)
    return _floor(moved, shape, p, board, mode, tokens)


# ---------------------------------------------------------------- the plan


@dataclass(frozen=True)
class PlanRow:
    """One recipe on one board and power mode; ``to_dict`` is one element of ``plan --json``."""

    recipe: str
    available: bool
    weight_bits: int
    act_bits: int
    weight_bytes: int
    weight_source: str  # "config" (computed) | "quantized model" | "bundle" (measured)
    state_bytes: int  # one copy, for the batch
    activation_bytes: int  # prefill of ctx tokens, with workspace
    engine_overhead_bytes: int
    total_bytes: int  # weights + 2 x state + activations + engine overhead
    usable_bytes: int
    fits: bool
    headroom_bytes: int  # usable - total (negative: short by)
    decode_bytes_per_step: int
    decode_floor_ms: float
    decode_bound: str
    prefill_bytes: int
    prefill_floor_ms: float
    prefill_bound: str
    board: str
    power_mode: str
    batch: int
    ctx: int
    headless: bool

    @property
    def tokens_per_s_ceiling(self) -> float:
        return 1e3 * self.batch / self.decode_floor_ms

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("decode_floor_ms", "prefill_floor_ms"):
            d[key] = round(d[key], 3)
        d["tokens_per_s_ceiling"] = round(self.tokens_per_s_ceiling, 2)
        return d


def plan_row(shape: ModelShape, p: Precision, board: Board, mode: PowerMode, *, batch: int = 1, ctx: int = DEFAULT_CTX,
             headless: bool = False, measured: tuple[int, str] | None = None) -> PlanRow:  # fmt: skip
    """``measured``: (weight bytes, where from) of a real artifact of this recipe, used instead of
    the computed weights."""
    if batch < 1 or ctx < 1:
        raise UsageError(f"batch and ctx must be at least 1, got {batch} and {ctx}")
    computed = weight_bytes(shape, p)
    weights, source = measured if measured is not None else (computed.total, "config")
    state = state_bytes(shape, p, batch)
    act = activation_bytes(shape, p, batch, ctx)
    engine = engine_overhead_bytes(weights)
    total = weights + 2 * state + act + engine
    usable = board.usable_bytes(headless)
    # only gathered rows of the embedding are read per token, unless it is also the (tied) LM head
    gathered_only = computed.embedding if computed.lm_head else 0
    dec = decode_floor(shape, p, board, mode, weights, gathered_only, batch)
    pre = prefill_floor(shape, p, board, mode, weights, gathered_only, batch, ctx)
    return PlanRow(
        recipe=p.name, available=p.available, weight_bits=p.weight_bits, act_bits=p.act_bits,
        weight_bytes=weights, weight_source=source, state_bytes=state, activation_bytes=act,
        engine_overhead_bytes=engine, total_bytes=total, usable_bytes=usable, fits=total <= usable,
        headroom_bytes=usable - total, decode_bytes_per_step=dec.bytes_moved, decode_floor_ms=dec.ms,
        decode_bound=dec.bound, prefill_bytes=pre.bytes_moved, prefill_floor_ms=pre.ms, prefill_bound=pre.bound,
        board=board.name, power_mode=mode.name, batch=batch, ctx=ctx, headless=headless,
    )  # fmt: skip


@dataclass(frozen=True)
class ModelSource:
    """What ``jetmamba plan --model`` was given, read as far as planning needs."""

    path: Path
    kind: str  # "config" | "quantized model" | "bundle"
    config: Any  # ModelConfig
    recipe: str | None  # the artifact's own recipe (QuantizedModel, bundle)
    weight_bytes: int | None  # the artifact's real weight bytes


@dataclass(frozen=True)
class Plan:
    source: ModelSource
    shape: ModelShape
    board: Board
    mode: PowerMode
    rows: tuple[PlanRow, ...]
    advice: tuple[str, ...]  # one line per recipe that does not fit: what would


def make_plan(source: ModelSource, board: Board, mode: PowerMode | None = None, *, recipe: str | None = None,
              batch: int = 1, ctx: int = DEFAULT_CTX, headless: bool = False) -> Plan:  # fmt: skip
    shape = model_shape(source.config)
    mode = board.power_mode() if mode is None else mode
    chosen = select_recipes(shape.arch, recipe, source.recipe)

    def row(p: Precision) -> PlanRow:
        measured = None
        if source.weight_bytes is not None and p.name == source.recipe:
            measured = (source.weight_bytes, source.kind)
        return plan_row(shape, p, board, mode, batch=batch, ctx=ctx, headless=headless, measured=measured)

    rows = tuple(row(p) for p in chosen)
    # alternatives are looked for among every recipe for the architecture, also when one was asked for
    everything = {r.recipe: r for r in rows} | {p.name: row(p) for p in select_recipes(shape.arch)
                                                if p.name not in {r.recipe for r in rows}}  # fmt: skip
    advice = tuple(_advice(r, everything.values(), board) for r in rows if not r.fits)
    return Plan(source, shape, board, mode, rows, advice)


def _advice(row: PlanRow, candidates, board: Board) -> str:
    need, have = row.total_bytes / GB, row.usable_bytes / GB
    where = "headless" if row.headless else "with a desktop"
    line = f"{row.recipe} does NOT fit {board.name}: it needs {need:.2f} GB, the board leaves about {have:.2f} GB"
    line += f" ({where})."
    fitting = [r for r in candidates if r.fits]
    # the least quantization that fits, implemented recipes before planned ones
    fitting = [r for r in fitting if r.available] or fitting
    alternatives = []
    if fitting:
        bits = max(r.weight_bits for r in fitting)
        best = [r for r in fitting if r.weight_bits == bits]
        planned = "" if best[0].available else ", planned"
        total = max(r.total_bytes for r in best)
        alternatives.append(f"{' / '.join(r.recipe for r in best)} on this board ({total / GB:.2f} GB{planned})")
    elif not row.headless and row.total_bytes <= board.usable_bytes(headless=True):
        alternatives.append("the same recipe on a headless boot (no desktop)")
    larger = (b for b in list_boards() if b.name != board.name and b.usable_bytes(row.headless) >= row.total_bytes)
    bigger = next(larger, None)  # boards come smallest memory first
    if bigger is not None:
        alternatives.append(f"{row.recipe} on {bigger.name} ({bigger.usable_bytes(row.headless) / GB:.1f} GB usable)")
    if not alternatives:
        return line + " No recipe and no board in jetmamba's list fits it."
    return line + " Fits instead: " + "; ".join(alternatives) + "."


# ---------------------------------------------------------------- reading what --model names


def read_model_source(spec: str | os.PathLike) -> ModelSource:
    """A bundle, a QuantizedModel directory, or a checkpoint directory (a config.json alone is enough)."""
    from jetmamba.calibration.arch import config_from_dict
    from jetmamba.calibration.checkpoint import read_config, resolve_model_dir
    from jetmamba.calibration.quantized import MANIFEST as QUANTIZED_MANIFEST
    from jetmamba.calibration.quantized import TENSORS, is_quantized_model
    from jetmamba.compiler.bundle import MANIFEST as BUNDLE_MANIFEST
    from jetmamba.compiler.bundle import is_bundle

    path = resolve_model_dir(spec)
    if is_bundle(path):
        manifest = _read_json(path / BUNDLE_MANIFEST)
        try:
            config = config_from_dict(manifest["config"])
            recipe = (manifest.get("recipe") or {}).get("name", "fp16")
            weights = manifest["files"][manifest["graphs"]["weights"]]["bytes"]
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise CheckpointError(f"{path / BUNDLE_MANIFEST}: not a complete bundle manifest ({exc})") from None
        return ModelSource(path, "bundle", config, recipe, int(weights))
    if is_quantized_model(path):
        manifest = _read_json(path / QUANTIZED_MANIFEST)
        try:
            config = config_from_dict(manifest["config"])
            recipe = manifest["recipe"]["name"]
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path / QUANTIZED_MANIFEST}: not a valid QuantizedModel manifest ({exc})") from None
        return ModelSource(path, "quantized model", config, recipe, _safetensors_data_bytes(path / TENSORS))
    config, _, _ = read_config(path)
    return ModelSource(path, "config", config, None, None)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    return data


def _safetensors_data_bytes(path: Path) -> int:
    """The tensor bytes of a safetensors file: its size less the 8-byte length and the header."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
        size = path.stat().st_size
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    header = int.from_bytes(head, "little") if len(head) == 8 else size
    if header > size - 8:
        raise CheckpointError(f"{path}: truncated or not a safetensors file")
    return size - 8 - header


# ---------------------------------------------------------------- text


def _size(n: float) -> str:
    return f"{n / GB:.2f} GB" if abs(n) >= 0.1 * GB else f"{n / 1e6:.1f} MB"


def _ms(ms: float) -> str:
    if ms >= 1e3:
        return f"{ms / 1e3:.2f} s"
    return f"{ms:.1f} ms" if ms >= 1 else f"{ms:.3f} ms"


def _count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M"


def format_plan(plan: Plan) -> str:
    src, shape, board, mode = plan.source, plan.shape, plan.board, plan.mode
    first = plan.rows[0]
    nvp = f", nvpmodel {mode.nvpmodel_id}" if mode.nvpmodel_id is not None else ""
    nvp += f", JetPack {mode.requires_jetpack}+" if mode.requires_jetpack else ""
    what = {"config": "from its config", "quantized model": "QuantizedModel", "bundle": "bundle"}[src.kind]
    lines = [
        f"{src.path.name} ({shape.arch}, {_count(shape.params)} parameters, {what}) on {board.title} "
        f"({board.name}, {board.gpu_arch})",
        f"power mode {mode.name}{nvp}: {mode.memory_bandwidth_gbs:g} GB/s, {mode.int8_tops_dense:g} INT8 TOPS, "
        f"{mode.fp16_tflops_dense:g} FP16 TFLOPS (dense); batch {first.batch}, prompt {first.ctx} tokens",
        f"memory {board.memory_gb:g} GiB {board.memory_type}; usable about {_size(first.usable_bytes)} "
        f"({'headless' if first.headless else 'with a desktop'}; the OS estimate is the board file's)",
        "",
        f"{'recipe':<18} {'weights':>9} {'state':>9} {'act+ws':>9} {'engine':>9} {'total':>9}  {'fits':<4} "
        f"{'decode floor':>24} {'TTFT floor':>10}",
    ]
    for r in plan.rows:
        mark = "" if r.available else " *"
        decode = f"{_ms(r.decode_floor_ms)} ({r.tokens_per_s_ceiling:.1f} tok/s)"
        lines.append(
            f"{r.recipe + mark:<18} {_size(r.weight_bytes):>9} {_size(r.state_bytes):>9} "
            f"{_size(r.activation_bytes):>9} {_size(r.engine_overhead_bytes):>9} {_size(r.total_bytes):>9}  "
            f"{'yes' if r.fits else 'NO':<4} {decode:>24} {_ms(r.prefill_floor_ms):>10}"
        )
    notes = []
    if any(not r.available for r in plan.rows):
        notes.append("* planned recipe: `jetmamba quantize` does not implement it yet")
    if any(r.weight_source != "config" for r in plan.rows):
        measured = [r.recipe for r in plan.rows if r.weight_source != "config"]
        notes.append(f"weights of {', '.join(measured)}: measured from the {src.kind}; others computed from the config")
    notes.append("state: one copy (the engine holds two: in and out); total = weights + 2 x state + activations "
                 "+ workspace + engine overhead")  # fmt: skip
    notes.append("floors are lower bounds from peak bandwidth and peak compute, not predictions (docs/planning.md)")
    return "\n".join(lines + [""] + list(plan.advice) + ([""] if plan.advice else []) + notes)


def format_boards(boards: list[Board]) -> str:
    head = f"{'board':<15} {'arch':<7} {'SMs':>4} {'memory':>15}  power modes (GB/s, dense INT8 TOPS / FP16 TFLOPS)"
    lines = [head]
    for b in boards:
        modes = "; ".join(f"{m.name} {m.memory_bandwidth_gbs:g}, {m.int8_tops_dense:g}/{m.fp16_tflops_dense:g}"
                          for m in b.power_modes)  # fmt: skip
        lines.append(f"{b.name:<15} {b.gpu_arch:<7} {b.sms:>4} {f'{b.memory_gb:g} GiB {b.memory_type}':>15}  {modes}")
    return "\n".join(lines)


__all__ = [
    "DEFAULT_CTX",
    "ModelShape",
    "ModelSource",
    "Plan",
    "PlanRow",
    "Precision",
    "WeightBytes",
    "activation_bytes",
    "format_boards",
    "format_plan",
    "make_plan",
    "model_shape",
    "plan_row",
    "precisions",
    "read_model_source",
    "select_recipes",
    "state_bytes",
    "weight_bytes",
]
