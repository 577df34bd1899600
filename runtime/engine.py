"""What a TensorRT engine for a bundle is, without TensorRT: profiles, buffers, cache key, cache layout.

Everything here is plain data derived from a bundle's manifest (its I/O contract, the sha256 of its
TensorRT graph and weights) and the build options, so that it is tested on any machine; the code
that needs TensorRT and a GPU (:mod:`jetmamba.runtime.build`, the TensorRT backend) only carries
it out.

**Profiles.** One engine, two optimization profiles over the same weights (TensorRT shares the
weights between profiles): ``prefill`` (profile 0) takes ``input_ids [B, 1..max_prompt]`` with its
optimum at a typical prompt, ``decode`` (profile 1) ``input_ids [B, 1]``; in both, the state
inputs take their batch from ``B`` (1..max_batch, optimum 1: one stream is what a Jetson serves).

**Buffers.** The backend allocates every device buffer once, at the largest shape any profile
allows: ``input_ids`` and ``logits`` at the prefill profile's max (decode uses their start), and two
full sets of state buffers (inputs read one set, outputs write the other: the ping-pong that keeps
the state on the device between calls). A tensor of batch ``b < max_batch`` is the first ``b`` rows
of its buffer (row-major, batch outermost), so the addresses never change and a CUDA graph captured
for a decode step stays valid.

**Cache.** An engine is only valid for the TensorRT version, GPU and plugin library it was built
with, and for its options; :func:`cache_key` hashes all of them with the graph's and weights'
sha256 from the manifest, and :func:`engine_dir` places the engine under ``BUNDLE/engines/`` (extra
files in a bundle are ignored by :func:`~jetmamba.compiler.bundle.verify_bundle`, which checks only
the files its manifest lists), written whole or not at all.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from jetmamba.errors import UsageError

ENGINES_DIR = "engines"  # inside the bundle directory
ENGINE_FILE = "engine.plan"
OPTIONS_FILE = "engine.json"
TIMING_CACHE_PREFIX = "timing-"
PREFILL, DECODE = "prefill", "decode"
PROFILES = (PREFILL, DECODE)  # profile index = position
DTYPE_BYTES = {"int64": 8, "int32": 4, "float32": 4, "float16": 2, "bfloat16": 2, "int8": 1, "uint8": 1, "bool": 1}
MAX_OPT_LEVEL = 5  # TensorRT's builder optimization levels are 0..5 (3 is its default)


@dataclass(frozen=True)
class EngineOptions:
    """How an engine is built; saved beside it as JSON and part of its cache key.

    ``opt_prompt``: the prefill profile's optimum (kernels are tuned for it; None: 128, or
    ``max_prompt`` when smaller). The network is strongly typed by default: every tensor keeps the
    type the bundle's graph gives it (int8 where the recipe quantized, fp16 elsewhere), which is
    what the plugins and Q/DQ nodes were compiled for; ``fp16`` / ``int8`` let TensorRT choose
    precisions in a weakly typed network instead, and TensorRT refuses them with strong typing."""

    max_prompt: int = 2048
    max_batch: int = 1
    opt_prompt: int | None = None
    opt_level: int = 3
    strongly_typed: bool = True
    fp16: bool = False
    int8: bool = False
    workspace_mib: int | None = None  # TensorRT's workspace pool limit (None: TensorRT's default, all memory)

    def __post_init__(self) -> None:
        if self.max_prompt < 1:
            raise UsageError(f"max_prompt must be at least 1, got {self.max_prompt}")
        if self.max_batch < 1:
            raise UsageError(f"max_batch must be at least 1, got {self.max_batch}")
        if self.opt_prompt is not None and not 1 <= self.opt_prompt <= self.max_prompt:
            raise UsageError(f"opt_prompt {self.opt_prompt} must be in 1..max_prompt ({self.max_prompt})")
        if not 0 <= self.opt_level <= MAX_OPT_LEVEL:
            raise UsageError(f"the builder optimization level must be 0..{MAX_OPT_LEVEL}, got {self.opt_level}")
        if self.strongly_typed and (self.fp16 or self.int8):
            raise UsageError("fp16 / int8 builder flags apply to a weakly typed network; a strongly typed one "
                             "keeps the bundle's types (drop the flags or set strongly_typed=False)")  # fmt: skip
        if self.workspace_mib is not None and self.workspace_mib < 1:
            raise UsageError(f"workspace_mib must be at least 1, got {self.workspace_mib}")

    @property
    def typical_prompt(self) -> int:
        return self.opt_prompt if self.opt_prompt is not None else min(128, self.max_prompt)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"unknown engine options {unknown}")
        return cls(**data)


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output as the manifest's I/O contract declares it; a dimension is an int
    or a symbol (``batch``, ``seq``)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    @property
    def itemsize(self) -> int:
        try:
            return DTYPE_BYTES[self.dtype]
        except KeyError:
            raise UsageError(f"tensor {self.name}: dtype {self.dtype!r} is not one jetmamba's engines use") from None

    def resolve(self, batch: int, seq: int) -> tuple[int, ...]:
        dims: list[int] = []
        for d in self.shape:
            if isinstance(d, int):
                dims.append(d)
            elif d == "batch":
                dims.append(batch)
            elif d == "seq":
                dims.append(seq)
            else:
                raise UsageError(f"tensor {self.name}: unknown symbolic dimension {d!r} in the I/O contract")
        return tuple(dims)

    def nbytes(self, batch: int, seq: int) -> int:
        return math.prod(self.resolve(batch, seq)) * self.itemsize


@dataclass(frozen=True)
class IOContract:
    """The manifest's ``io``: ``input_ids``, the state inputs, ``logits`` and the state outputs,
    with each state output paired to the input it feeds next call (``conv_state_out.0`` ->
    ``conv_state.0``)."""

    input_ids: TensorSpec
    logits: TensorSpec
    state_inputs: tuple[TensorSpec, ...]
    state_outputs: tuple[TensorSpec, ...]  # in the order of state_inputs

    @property
    def vocab_size(self) -> int:
        last = self.logits.shape[-1]
        if not isinstance(last, int):
            raise UsageError("the I/O contract's logits have no fixed vocabulary size")
        return last

    @property
    def state_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.state_inputs)

    def output_for(self, state_input: str) -> str:
        return state_output_name(state_input)


def state_output_name(state_input: str) -> str:
    """``conv_state.3`` -> ``conv_state_out.3`` (the lowering's naming, :mod:`jetmamba.compiler.lowering`)."""
    stem, dot, index = state_input.rpartition(".")
    if not dot:
        raise UsageError(f"state input {state_input!r} is not named <kind>.<layer>")
    return f"{stem}_out.{index}"


def _spec(entry: Any, where: str) -> TensorSpec:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not isinstance(entry.get("dtype"), str):
        raise UsageError(f"{where}: an I/O entry needs 'name' and 'dtype'")
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, (int, str)) and not isinstance(d, bool) for d in shape):
        raise UsageError(f"{where}: I/O entry {entry['name']!r} has no valid 'shape'")
    spec = TensorSpec(entry["name"], entry["dtype"], tuple(shape))
    spec.itemsize  # noqa: B018 -- an unknown dtype is refused here, not at allocation time
    return spec


def io_contract(manifest: dict[str, Any]) -> IOContract:
    """The bundle's I/O contract as typed data; UsageError for one this runtime cannot serve."""
    io = manifest.get("io")
    if not isinstance(io, dict) or not isinstance(io.get("inputs"), list) or not isinstance(io.get("outputs"), list):
        raise UsageError("the bundle's manifest has no I/O contract ('io' with 'inputs' and 'outputs')")
    inputs = {s.name: s for s in (_spec(e, "io.inputs") for e in io["inputs"])}
    outputs = {s.name: s for s in (_spec(e, "io.outputs") for e in io["outputs"])}
    if "input_ids" not in inputs or "logits" not in outputs:
        raise UsageError("the bundle's I/O contract needs an 'input_ids' input and a 'logits' output")
    ids, logits = inputs.pop("input_ids"), outputs.pop("logits")
    if ids.shape != ("batch", "seq") or logits.shape[:2] != ("batch", "seq") or len(logits.shape) != 3:
        raise UsageError(f"input_ids {list(ids.shape)} / logits {list(logits.shape)}: expected [batch, seq] and "
                         "[batch, seq, vocab]")  # fmt: skip
    state_in = tuple(inputs.values())
    paired = []
    for spec in state_in:
        if not spec.shape or spec.shape[0] != "batch" or "seq" in spec.shape:
            raise UsageError(f"state input {spec.name} {list(spec.shape)}: expected [batch, fixed dims...]")
        out = outputs.pop(state_output_name(spec.name), None)
        if out is None or out.shape != spec.shape or out.dtype != spec.dtype:
            raise UsageError(f"state input {spec.name} has no matching output {state_output_name(spec.name)}")
        paired.append(out)
    if outputs:
        raise UsageError(f"outputs {sorted(outputs)} are neither logits nor a state input's next value")
    return IOContract(ids, logits, state_in, tuple(paired))


# ---------------------------------------------------------------- profiles


@dataclass(frozen=True)
class Profile:
    """One optimization profile: ``shapes[name] = (min, opt, max)`` for every input."""

    name: str
    index: int
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]
    max_batch: int
    max_seq: int

    def shape(self, name: str, batch: int, seq: int, contract: IOContract) -> tuple[int, ...]:
        """The concrete shape of input or output ``name`` for a call of ``batch`` x ``seq``."""
        spec = _find(contract, name)
        return spec.resolve(batch, seq)


def _find(contract: IOContract, name: str) -> TensorSpec:
    for spec in (contract.input_ids, contract.logits, *contract.state_inputs, *contract.state_outputs):
        if spec.name == name:
            return spec
    raise KeyError(name)


def make_profiles(contract: IOContract, options: EngineOptions) -> tuple[Profile, Profile]:
    """(prefill, decode): the two optimization profiles, in engine order."""
    result = []
    for index, name in enumerate(PROFILES):
        seq = (1, options.typical_prompt, options.max_prompt) if name == PREFILL else (1, 1, 1)
        batch = (1, 1, options.max_batch)
        shapes = {}
        for spec in (contract.input_ids, *contract.state_inputs):
            lo, opt, hi = (spec.resolve(b, s) for b, s in zip(batch, seq, strict=True))
            shapes[spec.name] = (lo, opt, hi)
        result.append(Profile(name, index, shapes, options.max_batch, seq[2]))
    return result[0], result[1]


# ---------------------------------------------------------------- buffers


@dataclass(frozen=True)
class BufferPlan:
    """Device memory the backend allocates for its I/O (the engine's own activation memory and
    weights come on top: TensorRT reports them after the build)."""

    input_ids_bytes: int  # [max_batch, max_prompt] int64, shared by both profiles
    logits_bytes: int  # [max_batch, max_prompt, vocab] fp32, shared by both profiles
    state_bytes: dict[str, int]  # one set, every state tensor at max_batch
    state_sets: int  # 2: inputs read one set while outputs write the other
    per_profile: dict[str, dict[str, int]]  # bytes of every I/O tensor at each profile's max shape

    @property
    def state_set_bytes(self) -> int:
        return sum(self.state_bytes.values())

    @property
    def device_bytes(self) -> int:
        return self.input_ids_bytes + self.logits_bytes + self.state_sets * self.state_set_bytes

    @property
    def host_bytes(self) -> int:
        """Pinned host staging: the ids in, the logits out."""
        return self.input_ids_bytes + self.logits_bytes

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "state_set_bytes": self.state_set_bytes, "device_bytes": self.device_bytes,
                "host_bytes": self.host_bytes}  # fmt: skip


def buffer_plan(contract: IOContract, options: EngineOptions) -> BufferPlan:
    per_profile: dict[str, dict[str, int]] = {}
    for profile in make_profiles(contract, options):
        b, s = profile.max_batch, profile.max_seq
        tensors = (contract.input_ids, contract.logits, *contract.state_inputs, *contract.state_outputs)
        per_profile[profile.name] = {t.name: t.nbytes(b, s) for t in tensors}
    b, s = options.max_batch, options.max_prompt
    return BufferPlan(
        input_ids_bytes=contract.input_ids.nbytes(b, s),
        logits_bytes=contract.logits.nbytes(b, s),
        state_bytes={t.name: t.nbytes(b, 1) for t in contract.state_inputs},
        state_sets=2,
        per_profile=per_profile,
    )


# ---------------------------------------------------------------- cache


@dataclass(frozen=True)
class Target:
    """What an engine is specific to besides the bundle and the options."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.7"
    plugin_sha256: str  # of libjetmamba_plugins.so as loaded

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def bundle_digests(manifest: dict[str, Any]) -> dict[str, str]:
    """sha256 of the TensorRT graph and of the weights, as the (verified) manifest lists them."""
    files, graphs = manifest["files"], manifest["graphs"]
    return {"graph_sha256": files[graphs["tensorrt"]]["sha256"], "weights_sha256": files[graphs["weights"]]["sha256"]}


def cache_key(manifest: dict[str, Any], target: Target, options: EngineOptions) -> str:
    """Hex sha256 over everything an engine depends on; equal keys mean an interchangeable engine."""
    material = {"bundle": bundle_digests(manifest), "target": target.to_dict(), "options": options.to_dict()}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def engines_root(bundle: str | Path) -> Path:
    return Path(bundle) / ENGINES_DIR


def engine_dir(bundle: str | Path, key: str) -> Path:
    """``BUNDLE/engines/<key[:16]>/`` holding ``engine.plan`` and ``engine.json``."""
    return engines_root(bundle) / key[:16]


def timing_cache_path(bundle: str | Path, target: Target) -> Path:
    """One timing cache per TensorRT version and GPU, shared by the engines of every option set
    (tactic timings do not depend on them; TensorRT ignores entries for other layers)."""
    tag = hashlib.sha256(f"{target.tensorrt_version}\0{target.gpu_name}\0{target.compute_capability}".encode())
    return engines_root(bundle) / f"{TIMING_CACHE_PREFIX}{tag.hexdigest()[:16]}.cache"


def engine_record(manifest: dict[str, Any], target: Target, options: EngineOptions, *, seconds: float | None = None,
                  device_memory_bytes: int | None = None) -> dict[str, Any]:  # fmt: skip
    """What ``engine.json`` holds: the key and everything it was made of, and build facts."""
    return {
        "key": cache_key(manifest, target, options),
        "bundle": bundle_digests(manifest),
        "target": target.to_dict(),
        "options": options.to_dict(),
        "build_seconds": seconds,
        "device_memory_bytes": device_memory_bytes,
    }


def read_engine_record(directory: Path) -> dict[str, Any] | None:
    """The record of a cached engine, or None when the directory is not a complete one."""
    record, plan = directory / OPTIONS_FILE, directory / ENGINE_FILE
    if not record.is_file() or not plan.is_file():
        return None
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("key"), str) else None


def find_cached_engine(bundle: str | Path, manifest: dict[str, Any], target: Target,
                       options: EngineOptions) -> Path | None:  # fmt: skip
    """``engine.plan`` of a cached engine with exactly this key, or None."""
    key = cache_key(manifest, target, options)
    directory = engine_dir(bundle, key)
    record = read_engine_record(directory)
    return directory / ENGINE_FILE if record is not None and record["key"] == key else None


def list_cached_engines(bundle: str | Path) -> list[dict[str, Any]]:
    """Records of every complete engine under ``BUNDLE/engines/`` (``doctor``, ``build --json``)."""
    root = engines_root(bundle)
    if not root.is_dir():
        return []
    found = []
    for directory in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        record = read_engine_record(directory)
        if record is not None:
            found.append({**record, "path": str(directory / ENGINE_FILE)})
    return found
