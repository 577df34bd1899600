"""``jetmamba build``: the plugin library and the TensorRT engine of a bundle, on the device.

1. **Plugin library.** ``libjetmamba_plugins.so`` is built with CMake from the bundle's own
   ``plugins/`` sources (the ones its graph was compiled against) for the local GPU's architecture
   only (CUDA 12.6, JetPack 6.2's, cannot target Thor's sm_110, and one arch builds in half the
   time), against the local TensorRT headers. It is cached in ``~/.cache/jetmamba/trt-plugins/``
   (``$JETMAMBA_CACHE_DIR``) keyed by the sources' sha256, the arch and the headers' TensorRT version.
2. **Engine.** The library is loaded into TensorRT's plugin registry, the bundle's TensorRT graph
   parsed with ``OnnxParser`` into a strongly typed network (every tensor keeps the graph's type),
   the two optimization profiles of :mod:`jetmamba.runtime.engine` added, and the engine built at
   the requested builder optimization level with a timing cache beside it, then serialized to
   ``BUNDLE/engines/<key>/`` whole or not at all.
3. **Verify** (``--verify``): seeded prompts through the TensorRT backend and the ONNX Runtime
   backend on the same bundle; logits compared by NMSE against :data:`VERIFY_NMSE`, and the greedy
   token of every step (the reference's, fed to both, so one near-tie does not derail the rest).

TensorRT is imported lazily: this module imports, and its TensorRT-free parts run, anywhere.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from jetmamba.atomic import atomic_directory
from jetmamba.errors import JetmambaError, UsageError
from jetmamba.runtime import engine as eng

if TYPE_CHECKING:
    import tensorrt as trt

    from jetmamba.runtime.backends.base import Backend
    from jetmamba.runtime.cudamem import CudaApi

LIBRARY_NAME = "libjetmamba_plugins.so"
PLUGIN_CACHE = "trt-plugins"
PLUGIN_LIBRARY_ENV = "JETMAMBA_PLUGIN_LIBRARY"  # an explicit library: no search, no build
TENSORRT_INCLUDE_ENV = "JETMAMBA_TENSORRT_INCLUDE"
# Where TensorRT's headers are: JetPack's packages, then a workstation's tar conventions.
INCLUDE_CANDIDATES = ("/usr/include/aarch64-linux-gnu", "/usr/include/x86_64-linux-gnu", "/usr/include",
                      "/usr/local/tensorrt/include", "/opt/tensorrt/include")  # fmt: skip
PLUGIN_SOURCE_SUFFIXES = (".h", ".cuh", ".cu", ".cpp", ".txt")

# TensorRT (fp16 accumulation in its GEMM tactics, other reduction orders) against ONNX Runtime on
# the same graph: the int8 paths agree but for rounding ties, the fp16 ones to ~1e-4 relative.
VERIFY_NMSE = 1e-3
# A reference whose best two logits are closer than this is a tie: either token is a correct greedy pick.
VERIFY_TIE_MARGIN = 0.05
VERIFY_PROMPTS = 3
VERIFY_PROMPT_LEN = 48
VERIFY_DECODE_STEPS = 16


class TensorRTUnavailableError(JetmambaError):
    """TensorRT (or a CUDA device, or a CUDA Python binding) is missing here."""


# ---------------------------------------------------------------- TensorRT and the GPU


TENSORRT_FIX = ("TensorRT comes with JetPack (sudo apt install nvidia-jetpack python3-libnvinfer; use a venv "
                "with --system-site-packages); on a workstation: pip install tensorrt "
                "--extra-index-url https://pypi.nvidia.com")  # fmt: skip


def tensorrt_unavailable_reason() -> str | None:
    """None when a working ``tensorrt`` module imports, else why not and the fix (one line)."""
    try:
        import tensorrt as trt_module
    except ImportError as exc:
        return f"TensorRT's Python module is not installed ({exc}): {TENSORRT_FIX}"
    except OSError as exc:  # the module is there but libnvinfer is not
        return f"TensorRT's Python module does not load ({exc}): {TENSORRT_FIX}"
    # type stubs alone (tensorrt-stubs) make `tensorrt` an empty namespace package
    if not hasattr(trt_module, "Builder"):
        return f"only TensorRT's type stubs are installed, not TensorRT: {TENSORRT_FIX}"
    return None


def require_tensorrt() -> None:
    reason = tensorrt_unavailable_reason()
    if reason is not None:
        raise TensorRTUnavailableError(reason)


def tensorrt_version() -> str:
    import tensorrt as trt

    return str(trt.__version__)


class _Logger:
    """Factory of a TensorRT logger that keeps the errors (the plugins' reasons for refusing a node
    arrive here) and prints warnings and errors to stderr (everything with ``verbose``)."""

    @staticmethod
    def create(verbose: bool = False) -> trt.ILogger:
        import tensorrt as trt

        class Logger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.errors: list[str] = []

            def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
                if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                    self.errors.append(msg)
                shown = trt.ILogger.Severity.VERBOSE if verbose else trt.ILogger.Severity.WARNING
                if int(severity) <= int(shown):
                    print(f"TensorRT: {msg}", file=sys.stderr)

        return Logger()


def logged_errors(logger: trt.ILogger) -> list[str]:
    return list(getattr(logger, "errors", []))


def local_target(cuda: CudaApi, plugin_library: Path) -> eng.Target:
    major, minor = cuda.compute_capability()
    return eng.Target(tensorrt_version(), cuda.device_name(), f"{major}.{minor}", file_sha256(plugin_library))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- the plugin library


def plugin_source_root(bundle: str | Path | None = None, *, trust_bundle_sources: bool = False) -> Path:
    """The plugin sources to build: this jetmamba's own, after checking that the bundle's
    ``plugins/`` (what its graph was compiled against) are the same files.

    A bundle is data: building its sources would run its author's code (CMake scripts, C++ loaded
    into the process). So a bundle whose sources differ — another jetmamba version, or modified and
    re-hashed — is refused unless ``trust_bundle_sources`` (``jetmamba build
    --trust-bundle-plugins``) says to build the bundle's own."""
    from importlib import resources

    package = Path(str(resources.files("jetmamba.plugins")))
    if bundle is None:
        return package
    root = Path(bundle) / "plugins"
    if not (root / "CMakeLists.txt").is_file():
        raise UsageError(f"{bundle}: the bundle has no plugins/CMakeLists.txt (compiled by an older jetmamba?)")
    if trust_bundle_sources:
        return root
    if plugin_sources_digest(root) != plugin_sources_digest(package):
        raise UsageError(
            f"{bundle}: its plugin sources differ from this jetmamba's; building them would run code from the "
            "bundle. Use the jetmamba version that compiled it, recompile the bundle, or pass "
            "--trust-bundle-plugins if you trust its author"
        )
    return package


def plugin_sources_digest(root: Path) -> str:
    """sha256 over the relative paths and contents of the sources CMake compiles."""
    h = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in PLUGIN_SOURCE_SUFFIXES
                   and "__pycache__" not in p.parts)  # fmt: skip
    for p in files:
        h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def find_tensorrt_include(explicit: str | Path | None = None) -> Path | None:
    """The directory with ``NvInferRuntime.h``: ``explicit``, ``$JETMAMBA_TENSORRT_INCLUDE``,
    ``$TENSORRT_ROOT/include``, then JetPack's and the usual install places."""
    env_root = os.environ.get("TENSORRT_ROOT")
    candidates: list[str | Path] = [c for c in (explicit, os.environ.get(TENSORRT_INCLUDE_ENV)) if c]
    if explicit:
        candidates = [explicit]  # an explicit choice is not silently replaced by another
    else:
        if env_root:
            candidates.append(Path(env_root) / "include")
        candidates.extend(INCLUDE_CANDIDATES)
    for c in candidates:
        if (Path(c) / "NvInferRuntime.h").is_file():
            return Path(c)
    return None


_DEFINE = re.compile(r"^\s*#\s*define\s+(\w+)\s+(\w+)", re.MULTILINE)


def tensorrt_header_version(include: Path) -> str:
    """``major.minor.patch`` from ``NvInferVersion.h`` (10.3's literal defines and 10.16's
    ``NV_TENSORRT_MAJOR TRT_MAJOR_ENTERPRISE`` indirection alike)."""
    header = include / "NvInferVersion.h"
    try:
        defines = dict(_DEFINE.findall(header.read_text(encoding="utf-8", errors="replace")))
    except OSError:
        raise UsageError(f"{header} is missing: {include} is not a TensorRT include directory") from None

    def value(name: str) -> str:
        v = defines.get(name, "")
        for _ in range(4):  # follow macro-to-macro definitions
            if v.isdigit():
                return v
            v = defines.get(v, "")
        raise UsageError(f"{header}: no numeric {name}")

    return ".".join(value(f"NV_TENSORRT_{part}") for part in ("MAJOR", "MINOR", "PATCH"))


def nvcc_version(nvcc: str) -> tuple[int, int]:
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
    m = re.search(r"release (\d+)\.(\d+)", out)
    if m is None:
        raise UsageError(f"{nvcc} --version says no release number")
    return int(m.group(1)), int(m.group(2))


def check_arch(arch: str, cuda_version: tuple[int, int]) -> None:
    """CUDA 12 compilers do not know Thor's sm_110 (JetPack 7's CUDA 13 does)."""
    if not re.fullmatch(r"\d{2,3}a?", arch):
        raise UsageError(f"CUDA architecture {arch!r}: expected digits such as 87 or 110")
    if int(arch.rstrip("a")) >= 110 and cuda_version < (13, 0):
        raise UsageError(f"CUDA {cuda_version[0]}.{cuda_version[1]} cannot compile for sm_{arch} (Thor): "
                         "Thor needs JetPack 7 (CUDA 13)")  # fmt: skip


def plugin_library_dir(digest: str, arch: str, trt_version: str) -> Path:
    from jetmamba.native import cache_dir

    return cache_dir() / PLUGIN_CACHE / f"{digest[:16]}-sm{arch}-trt{trt_version}"


def cmake_commands(source: Path, build_dir: Path, *, arch: str, include: Path, nvcc: str | None = None,
                   jobs: int | None = None, generator: str | None = None) -> list[list[str]]:  # fmt: skip
    """The configure and build command lines (plugins/README.md's, for one arch)."""
    configure = ["cmake", "-S", str(source), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
                 f"-DCMAKE_CUDA_ARCHITECTURES={arch}", f"-DJETMAMBA_TENSORRT_INCLUDE_DIR={include}"]  # fmt: skip
    if generator:
        configure[1:1] = ["-G", generator]
    if nvcc:
        configure.append(f"-DCMAKE_CUDA_COMPILER={nvcc}")
    build = ["cmake", "--build", str(build_dir), "-j", str(jobs or os.cpu_count() or 2)]
    return [configure, build]


def _find_nvcc() -> str | None:
    from jetmamba.plugins.emulation import find_nvcc

    return find_nvcc()


def build_plugin_library(bundle: str | Path | None = None, *, arch: str, include: str | Path | None = None,
                         trust_bundle_sources: bool = False,
                         force: bool = False, quiet: bool = False) -> Path:  # fmt: skip
    """Build (or find in the cache) ``libjetmamba_plugins.so`` for ``arch`` (e.g. ``"87"``)."""
    if shutil.which("cmake") is None:
        raise UsageError("cmake is not installed: sudo apt install cmake (or pip install cmake)")
    nvcc = _find_nvcc()
    if nvcc is None:
        raise UsageError("nvcc is not found: on a Jetson, sudo apt install nvidia-jetpack (CUDA is in "
                         "/usr/local/cuda/bin: add it to PATH)")  # fmt: skip
    check_arch(arch, nvcc_version(nvcc))
    found_include = find_tensorrt_include(include)
    if found_include is None:
        raise UsageError("TensorRT's headers (NvInferRuntime.h) are not found: on a Jetson, sudo apt install "
                         f"libnvinfer-dev; elsewhere set {TENSORRT_INCLUDE_ENV}=<tensorrt>/include")  # fmt: skip
    source = plugin_source_root(bundle, trust_bundle_sources=trust_bundle_sources)
    out_dir = plugin_library_dir(plugin_sources_digest(source), arch, tensorrt_header_version(found_include))
    library = out_dir / LIBRARY_NAME
    if library.is_file() and not force:
        return library
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if not quiet:
        print(f"building {LIBRARY_NAME} for sm_{arch} with CMake (a few minutes on a Jetson)", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="jm-plugins-", dir=out_dir.parent) as tmp:
        generator = "Ninja" if shutil.which("ninja") else None
        for cmd in cmake_commands(source, Path(tmp), arch=arch, include=found_include, nvcc=nvcc, generator=generator):
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                tail = (proc.stdout + proc.stderr).strip().splitlines()[-12:]
                raise JetmambaError(f"building the plugin library failed ({' '.join(cmd[:2])}): "
                                    + " | ".join(tail))  # fmt: skip
        with atomic_directory(out_dir) as staging:
            shutil.copy2(Path(tmp) / LIBRARY_NAME, staging / LIBRARY_NAME)
    return library


def find_plugin_library(bundle: str | Path | None = None, *, arch: str | None = None,
                        tensorrt_version: str | None = None,
                        trust_bundle_sources: bool = False) -> Path | None:  # fmt: skip
    """A built ``libjetmamba_plugins.so`` for the bundle's plugin sources (the package's with
    ``bundle`` None): ``$JETMAMBA_PLUGIN_LIBRARY`` if set, else the newest cached build, narrowed to
    ``arch`` / ``tensorrt_version`` when given; None when there is none."""
    explicit = os.environ.get(PLUGIN_LIBRARY_ENV)
    if explicit:
        return Path(explicit) if Path(explicit).is_file() else None
    try:
        digest = plugin_sources_digest(plugin_source_root(bundle, trust_bundle_sources=trust_bundle_sources))
    except UsageError:
        return None
    from jetmamba.native import cache_dir

    pattern = f"{digest[:16]}-sm{arch or '*'}-trt{tensorrt_version or '*'}/{LIBRARY_NAME}"
    found = [p for p in (cache_dir() / PLUGIN_CACHE).glob(pattern) if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def load_plugin_library(path: Path) -> None:
    """Register the library's creators with TensorRT (idempotent per process)."""
    import tensorrt as trt

    if str(path) in _LOADED:
        return
    try:
        trt.get_plugin_registry().load_library(str(path))
    except Exception as exc:  # TensorRT raises a bare RuntimeError naming nothing useful
        raise JetmambaError(f"TensorRT could not load the plugin library {path} ({exc}): rebuild it with "
                            "jetmamba build --force") from None  # fmt: skip
    _LOADED.add(str(path))


_LOADED: set[str] = set()


# ---------------------------------------------------------------- the engine


@dataclass
class BuildResult:
    engine: Path
    plugin_library: Path
    key: str
    cached: bool
    seconds: float
    options: eng.EngineOptions
    target: eng.Target
    verify: VerifyReport | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"engine": str(self.engine), "plugin_library": str(self.plugin_library), "key": self.key,
                "cached": self.cached, "seconds": self.seconds, "options": self.options.to_dict(),
                "target": self.target.to_dict(),
                "verify": None if self.verify is None else self.verify.to_dict()}  # fmt: skip


def parser_errors(parser: trt.OnnxParser) -> list[str]:
    """Every ONNX parser error as ``node 'name' (Op): description``."""
    messages = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        where = f"node {error.node_name()!r} ({error.node_operator()})" if error.node_name() else "the model"
        messages.append(f"{where}: {error.desc()}")
    return messages


def _progress_monitor(bar: Any) -> trt.IProgressMonitor:
    """TensorRT's build phases driving a tqdm bar (stderr): one tick per completed step."""
    import tensorrt as trt

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: str, num_steps: int) -> None:
            if not parent_phase:
                bar.set_postfix_str(phase_name)

        def step_complete(self, phase_name: str, step: int) -> bool:
            bar.update(1)
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            return None

    return Monitor()


def build_engine(bundle: Path, manifest: dict[str, Any], options: eng.EngineOptions, *, plugin_library: Path,
                 target: eng.Target, quiet: bool = False, verbose: bool = False) -> tuple[Path, float]:  # fmt: skip
    """Build and serialize the engine into its cache directory; (engine path, seconds)."""
    import tensorrt as trt

    contract = eng.io_contract(manifest)
    prefill, decode = eng.make_profiles(contract, options)
    logger = _Logger.create(verbose)
    load_plugin_library(plugin_library)
    start = time.perf_counter()
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if options.strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    graph = bundle / manifest["graphs"]["tensorrt"]
    if not parser.parse_from_file(str(graph)):  # external weights resolve beside the graph
        errors = parser_errors(parser) or logged_errors(logger) or ["no reason given"]
        raise JetmambaError(f"TensorRT could not parse {graph.name}: " + "; ".join(errors)
                            + " (a plugin not found: see docs/jetson.md, 'Common failures')")  # fmt: skip
    config = builder.create_builder_config()
    config.builder_optimization_level = options.opt_level
    if options.fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if options.int8:
        config.set_flag(trt.BuilderFlag.INT8)
    if options.workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    for profile_shapes in (prefill, decode):  # profile index = position: prefill 0, decode 1
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in profile_shapes.shapes.items():
            profile.set_shape(name, trt.Dims(list(lo)), trt.Dims(list(opt)), trt.Dims(list(hi)))
        config.add_optimization_profile(profile)
    timing_path = eng.timing_cache_path(bundle, target)
    timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
    config.set_timing_cache(timing, False)
    from jetmamba.progress import progress

    with progress(total=None, desc="building the TensorRT engine", unit="step", disable=quiet) as bar:
        config.progress_monitor = _progress_monitor(bar)
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        errors = logged_errors(logger) or ["no reason given"]
        hint = " (out of memory: close other programs, use --max-prompt / --max-batch smaller, or --opt-level 1)" \
            if any("memory" in e.lower() for e in errors) else ""  # fmt: skip
        raise JetmambaError("TensorRT could not build the engine: " + "; ".join(errors[-3:]) + hint)
    seconds = time.perf_counter() - start
    key = eng.cache_key(manifest, target, options)
    record = eng.engine_record(manifest, target, options, seconds=seconds)
    with atomic_directory(eng.engine_dir(bundle, key)) as tmp:
        (tmp / eng.ENGINE_FILE).write_bytes(bytes(memoryview(serialized)))
        import json

        (tmp / eng.OPTIONS_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    _write_atomically(timing_path, bytes(memoryview(config.get_timing_cache().serialize())))
    return eng.engine_dir(bundle, key) / eng.ENGINE_FILE, seconds


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def ensure_engine(bundle: str | Path, options: eng.EngineOptions, *, device: int = 0, force: bool = False,
                  quiet: bool = False, verbose: bool = False, cuda: CudaApi | None = None,
                  trust_bundle_sources: bool = False) -> BuildResult:  # fmt: skip
    """The bundle's engine for ``options`` on this device: cached, or built now (with the plugin
    library first when it is not built yet)."""
    from jetmamba.compiler.bundle import verify_bundle
    from jetmamba.runtime.cudamem import open_cuda

    bundle = Path(bundle)
    manifest = verify_bundle(bundle)
    require_tensorrt()
    cuda = cuda if cuda is not None else open_cuda(device)
    major, minor = cuda.compute_capability()
    arch = f"{major}{minor}"
    trust = trust_bundle_sources
    library = find_plugin_library(bundle, arch=arch, trust_bundle_sources=trust) if not force else None
    if library is None:
        library = build_plugin_library(bundle, arch=arch, force=force, quiet=quiet, trust_bundle_sources=trust)
    target = local_target(cuda, library)
    start = time.perf_counter()
    cached = None if force else eng.find_cached_engine(bundle, manifest, target, options)
    if cached is not None:
        return BuildResult(cached, library, eng.cache_key(manifest, target, options), True,
                           time.perf_counter() - start, options, target)  # fmt: skip
    path, seconds = build_engine(bundle, manifest, options, plugin_library=library, target=target, quiet=quiet,
                                 verbose=verbose)  # fmt: skip
    return BuildResult(path, library, eng.cache_key(manifest, target, options), False, seconds, options, target)


# ---------------------------------------------------------------- verification (TensorRT-free)


@dataclass
class PromptCheck:
    prompt: int
    prefill_nmse: float
    decode_nmse: float  # the worst decode step's
    tokens_compared: int
    token_mismatches: int  # greedy picks that differ where the reference has no near-tie
    first_mismatch: int | None

    @property
    def ok(self) -> bool:
        return max(self.prefill_nmse, self.decode_nmse) <= VERIFY_NMSE and self.token_mismatches == 0


@dataclass
class VerifyReport:
    candidate: str
    reference: str
    nmse_bound: float
    tie_margin: float
    prompts: list[PromptCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.prompts)

    @property
    def worst_nmse(self) -> float:
        return max((max(p.prefill_nmse, p.decode_nmse) for p in self.prompts), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "worst_nmse": self.worst_nmse, **asdict(self),
                "prompts": [{**asdict(p), "ok": p.ok} for p in self.prompts]}  # fmt: skip


def nmse(got: torch.Tensor, want: torch.Tensor) -> float:
    """Normalized mean squared error ``|got - want|^2 / |want|^2`` (inf for NaNs in ``got``)."""
    got, want = got.double(), want.double()
    if not torch.isfinite(got).all():
        return float("inf")
    return float(((got - want) ** 2).sum() / (want**2).sum().clamp_min(1e-30))


def verify_prompts(vocab_size: int, *, count: int = VERIFY_PROMPTS, length: int = VERIFY_PROMPT_LEN,
                   seed: int = 0) -> list[torch.Tensor]:  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab_size, (1, length), generator=g) for _ in range(count)]


def _greedy_agrees(got: torch.Tensor, want: torch.Tensor) -> bool:
    if int(got.argmax()) == int(want.argmax()):
        return True
    top2 = want.topk(2).values
    return float(top2[0] - top2[1]) < VERIFY_TIE_MARGIN


def verify_backends(candidate: Backend, reference: Backend, prompts: Iterable[torch.Tensor], *,
                    decode_steps: int = VERIFY_DECODE_STEPS,
                    progress: Callable[[str], None] | None = None) -> VerifyReport:  # fmt: skip
    """Run each prompt (prefill, then ``decode_steps`` greedy steps with the reference's tokens fed
    to both) through both backends and compare logits and greedy picks."""
    report = VerifyReport(candidate.name, reference.name, VERIFY_NMSE, VERIFY_TIE_MARGIN)
    for i, ids in enumerate(prompts):
        if progress is not None:
            progress(f"verifying prompt {i + 1}")
        got, state_c = candidate.prefill(ids)
        want, state_r = reference.prefill(ids)
        prefill_error = nmse(got, want)
        mismatches, first, compared = 0, None, 0
        worst = 0.0
        got_last, want_last = got[:, -1], want[:, -1]
        for step in range(decode_steps + 1):
            compared += 1
            if not _greedy_agrees(got_last[0], want_last[0]):
                mismatches += 1
                first = step if first is None else first
            if step == decode_steps:
                break
            token = want_last.argmax(-1)
            got_last, state_c = candidate.decode(token, state_c)
            want_last, state_r = reference.decode(token, state_r)
            worst = max(worst, nmse(got_last, want_last))
        report.prompts.append(PromptCheck(i, prefill_error, worst, compared, mismatches, first))
    return report


def verify_build(bundle: str | Path, result: BuildResult, *, device: int = 0, quiet: bool = False) -> VerifyReport:
    """``jetmamba build --verify``: the engine just built against ONNX Runtime (CPU) on the same bundle."""
    from jetmamba.runtime.backends.ort import OnnxRuntimeBackend
    from jetmamba.runtime.backends.tensorrt import TensorRTBackend

    options = result.options
    candidate = TensorRTBackend(bundle, engine=result.engine, max_prompt=options.max_prompt,
                                max_batch=options.max_batch, device=device, quiet=quiet)  # fmt: skip
    try:
        reference = OnnxRuntimeBackend(bundle, device="cpu")
        length = min(VERIFY_PROMPT_LEN, options.max_prompt)
        prompts = verify_prompts(candidate.contract.vocab_size, length=length)
        say = None if quiet else (lambda what: print(what, file=sys.stderr))
        return verify_backends(candidate, reference, prompts, progress=say)
    finally:
        candidate.close()


def format_verify(report: VerifyReport) -> str:
    lines = [f"verify: {report.candidate} against {report.reference} (NMSE bound {report.nmse_bound:g}, "
             f"greedy ties below {report.tie_margin:g})"]  # fmt: skip
    for p in report.prompts:
        mark = "ok" if p.ok else "MISMATCH"
        where = "" if p.first_mismatch is None else f", first at step {p.first_mismatch}"
        lines.append(f"  prompt {p.prompt}: prefill NMSE {p.prefill_nmse:.2e}, decode NMSE {p.decode_nmse:.2e}, "
                     f"greedy {p.tokens_compared - p.token_mismatches}/{p.tokens_compared}{where}  {mark}")  # fmt: skip
    return "\n".join(lines)
