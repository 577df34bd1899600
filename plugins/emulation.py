"""Build CUDA kernel sources for the CPU emulator and load them with :mod:`ctypes`.

The kernels are written once (``.cuh`` with the ``__global__`` function, ``.cu`` with a plain C
launcher) against ``common/cuda_emu.h``; nvcc compiles them for the GPU, and this module compiles
the same files with the host C++ compiler (``-x c++ -std=c++17 -O2 -pthread``), where the header is
an execution emulator (see the comment at its top and ``common/README.md``). That is how the
kernel tests run on machines without a GPU.

What a build does beyond calling the compiler:

- include path: ``common/emu/include`` (stand-ins for ``<cuda_runtime.h>``, ``<cuda_fp16.h>``,
  ``<cuda_bf16.h>``, so kernels that include them directly still build), ``plugins/``, then yours.
  No CUDA toolkit is needed: the emulator has its own bit-exact ``__half`` / ``__nv_bfloat16``.
- ``extern __shared__ T name[];`` has no C++ equivalent, so the files that declare dynamic shared
  memory are compiled from rewritten copies (same lines, diagnostics point at the originals) in
  which it reads ``typedef T t; t* const name = <the launch's dynamic shared memory>;``.
- the result is cached under ``jetmamba.native.cache_dir() / "emulation"`` by a hash of every
  file the sources include from these folders, the flags and the compiler's version, so a test
  session builds each library once per machine.

``sanitize="thread"`` builds with ThreadSanitizer (the emulator's default mode is then
``"threads"``: one POSIX thread per CUDA thread, so a missing ``__syncthreads`` is reported as a
data race). A sanitizer build cannot be loaded into this Python process; build an executable
(``executable=True``) and run it.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from jetmamba import native
from jetmamba.errors import JetmambaError

PLUGINS_DIR = Path(__file__).resolve().parent
COMMON_DIR = PLUGINS_DIR / "common"
EMU_INCLUDE_DIR = COMMON_DIR / "emu" / "include"

BASE_FLAGS = (
    "-x",
    "c++",
    "-std=c++17",
    "-O2",
    "-pthread",
    "-fPIC",
    "-fno-strict-aliasing",  # kernels reinterpret memory (float4 loads, half2 as int) as nvcc allows
    "-Wall",
    "-Wno-unknown-pragmas",  # #pragma unroll
)
SANITIZE_FLAGS = {
    "thread": ("-fsanitize=thread", "-g"),
    "address": ("-fsanitize=address", "-fno-omit-frame-pointer", "-g"),
    "undefined": ("-fsanitize=undefined", "-fno-sanitize-recover=undefined", "-g"),
}
# bump when the way a build is made changes, so that cached libraries are rebuilt
_BUILD_VERSION = "1"

_INCLUDE_RE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*([<"])([^>"\n]+)[>"]', re.MULTILINE)
_EXTERN_SHARED_RE = re.compile(r"\bextern\s+__shared__\s+([^;\n]*?)\s*\b([A-Za-z_]\w*)\s*\[\s*\]\s*;")


class KernelBuildError(JetmambaError):
    """Emulated kernels could not be built or loaded (no compiler, a compile error, a sanitizer build)."""


class EmulatedLibrary(ctypes.CDLL):
    """A loaded emulated-kernel library: the kernels' own C launchers, plus the emulator's controls."""

    def emu_set_mode(self, mode: str | None) -> None:
        """``"forward"``, ``"reverse"``, ``"random"``, ``"threads"``, or None for ``$JM_EMU_MODE``."""
        fn = self.jm_emu_set_mode
        fn.argtypes = [ctypes.c_char_p]
        fn.restype = ctypes.c_int
        if fn(None if mode is None else mode.encode()) != 0:
            raise ValueError(f"unknown emulator mode {mode!r}: use forward, reverse, random or threads")

    def emu_mode(self) -> str:
        fn = self.jm_emu_get_mode
        fn.restype = ctypes.c_char_p
        return fn().decode()

    def emu_set_seed(self, seed: int) -> None:
        fn = self.jm_emu_set_seed
        fn.argtypes = [ctypes.c_ulonglong]
        fn(seed)

    def emu_last_error(self) -> str:
        """The message of the calling thread's last failed launch."""
        fn = self.jm_emu_last_error
        fn.restype = ctypes.c_char_p
        return fn().decode(errors="replace")


def find_compiler() -> str | None:
    """The host C++ compiler: ``$CXX``, else g++, c++ or clang++."""
    for candidate in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if candidate and shutil.which(candidate):
            return candidate
    return None


def find_nvcc() -> str | None:
    """nvcc from PATH, ``$CUDA_HOME`` or /usr/local/cuda (for compile checks of the same sources)."""
    found = shutil.which("nvcc")
    if found:
        return found
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and (Path(home) / "bin" / "nvcc").is_file():
            return str(Path(home) / "bin" / "nvcc")
    return None


def _include_dirs(extra: Iterable[str | os.PathLike]) -> list[Path]:
    return [EMU_INCLUDE_DIR, PLUGINS_DIR, *(Path(d).resolve() for d in extra)]


def _resolve(name: str, quoted: bool, current: Path, dirs: Sequence[Path]) -> Path | None:
    candidates = ([current.parent] if quoted else []) + list(dirs)
    for d in candidates:
        p = d / name
        if p.is_file():
            return p.resolve()
    return None


def _reachable(sources: Sequence[Path], dirs: Sequence[Path]) -> list[Path]:
    """The sources and every file they include (transitively) that lies in our include folders or
    beside an including file; system headers are not followed."""
    seen: dict[Path, None] = {}
    todo = list(sources)
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen[f] = None
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        for kind, name in _INCLUDE_RE.findall(text):
            p = _resolve(name, kind == '"', f, dirs)
            if p is not None and p not in seen:
                todo.append(p)
    return list(seen)


def _rewrite_dynamic_shared(text: str) -> str:
    """``extern __shared__ T name[];`` -> a typedef and a pointer to the launch's dynamic shared memory."""

    def repl(m: re.Match) -> str:
        spec, name = m.group(1), m.group(2)
        t = f"jm_emu_dynamic_t_{name}"
        buffer = "::jm::emu::detail::dynamic_smem_storage"
        return f"typedef {spec} {t}; {t}* const {name} = reinterpret_cast<{t}*>({buffer});"

    return _EXTERN_SHARED_RE.sub(repl, text)


def _mirror(files: Sequence[Path], root: Path) -> dict[Path, Path]:
    """Copy ``files`` under ``root`` by absolute path, rewriting dynamic shared memory declarations;
    a ``#line`` directive keeps the diagnostics pointing at the originals."""
    out = {}
    for f in files:
        dst = root / f.relative_to(f.anchor)
        dst.parent.mkdir(parents=True, exist_ok=True)
        text = f.read_text(errors="replace")
        quoted = str(f).replace("\\", "\\\\").replace('"', '\\"')
        dst.write_text(f'#line 1 "{quoted}"\n' + _rewrite_dynamic_shared(text))
        out[f] = dst
    return out


@functools.cache
def _compiler_version(cxx: str) -> str:
    return native._compiler_version(cxx)


def build(
    sources: Sequence[str | os.PathLike],
    *,
    name: str | None = None,
    include_dirs: Iterable[str | os.PathLike] = (),
    defines: Mapping[str, object] | None = None,
    flags: Sequence[str] = (),
    sanitize: str | None = None,
    executable: bool = False,
) -> Path:
    """Compile ``sources`` (``.cu`` / ``.cuh`` / ``.cpp``) for the emulator; return the cached result.

    A shared library by default, an executable (the sources must define ``main``) with
    ``executable=True``. ``defines`` become ``-DKEY=VALUE`` (``-DKEY`` for a value of None),
    ``flags`` are added last, ``sanitize`` is ``"thread"``, ``"address"`` or ``"undefined"``.
    Raises :class:`KernelBuildError` with the compiler's output when the build fails.
    """
    if not sources:
        raise ValueError("no sources to build")
    if sanitize is not None and sanitize not in SANITIZE_FLAGS:
        raise ValueError(f"sanitize must be one of {sorted(SANITIZE_FLAGS)}, not {sanitize!r}")
    cxx = find_compiler()
    if cxx is None:
        raise KernelBuildError(
            "no C++ compiler found for the CUDA emulator: install g++ (C++17) or set CXX to a compiler"
        )
    srcs = [Path(s).resolve() for s in sources]
    for s in srcs:
        if not s.is_file():
            raise KernelBuildError(f"kernel source {s} does not exist")
    dirs = _include_dirs(include_dirs)
    all_flags = list(BASE_FLAGS)
    if sanitize is not None:
        all_flags += SANITIZE_FLAGS[sanitize]
    for key, value in (defines or {}).items():
        all_flags.append(f"-D{key}" if value is None else f"-D{key}={value}")
    all_flags += list(flags)
    files = _reachable(srcs, dirs)

    digest = hashlib.sha256()
    for part in (_BUILD_VERSION, cxx, _compiler_version(cxx), "\0".join(all_flags), str(executable)):
        digest.update(part.encode() + b"\0")
    for f in sorted(files):
        digest.update(str(f).encode() + b"\0" + f.read_bytes() + b"\0")
    key = digest.hexdigest()[:20]
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", name or srcs[0].stem)
    suffix = "" if executable else ".so"
    tag = f"-{sanitize}" if sanitize else ""
    out = native.cache_dir() / "emulation" / f"{stem}{tag}-{key}{suffix}"
    if out.exists():
        return out

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="jm-emu-", dir=out.parent) as tmp:
        compile_srcs = srcs
        inc_flags = []
        if any(_EXTERN_SHARED_RE.search(f.read_text(errors="replace")) for f in files):
            mirror = _mirror(files, Path(tmp) / "src")
            compile_srcs = [mirror[s] for s in srcs]
            for d in dirs:  # the rewritten copies first, the originals for anything the scan missed
                inc_flags.append(f"-I{Path(tmp) / 'src' / d.relative_to(d.anchor)}")
                inc_flags.append(f"-I{d}")
        else:
            inc_flags = [f"-I{d}" for d in dirs]
        target = Path(tmp) / ("a.out" if executable else "lib.so")
        link = [] if executable else ["-shared", "-Wl,-Bsymbolic"]
        cmd = [cxx, *all_flags, *inc_flags, *map(str, compile_srcs), "-x", "none", *link, "-o", str(target), "-lm"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.SubprocessError) as exc:
            raise KernelBuildError(f"could not run {cxx} for the CUDA emulator: {exc}") from exc
        if proc.returncode != 0:
            names = ", ".join(s.name for s in srcs)
            complaint = (proc.stderr or proc.stdout).strip()[-6000:]
            raise KernelBuildError(f"building {names} for the CUDA emulator failed ({cxx}):\n{complaint}")
        os.replace(target, out)
    return out


def _runtime_loaded(lib: str) -> bool:
    try:
        return lib in Path("/proc/self/maps").read_text()
    except OSError:
        return False


_loaded: dict[Path, EmulatedLibrary] = {}


def load(sources: Sequence[str | os.PathLike], **kwargs) -> EmulatedLibrary:
    """:func:`build` a shared library and load it (once per build) as an :class:`EmulatedLibrary`.

    Debugging switch: ``JETMAMBA_EMU_SANITIZE=thread`` (or ``address``) builds every library loaded
    without an explicit ``sanitize`` with that sanitizer, so a whole test run goes through it when
    the runtime is preloaded, e.g. ``LD_PRELOAD=$(g++ -print-file-name=libtsan.so)
    JETMAMBA_EMU_SANITIZE=thread python -m pytest tests/plugins`` (TSan builds default to the
    emulator's ``threads`` mode, so a missing barrier is a reported race)."""
    if kwargs.get("executable"):
        raise ValueError("load() builds a shared library; use build(..., executable=True) for a program")
    if "sanitize" not in kwargs and os.environ.get("JETMAMBA_EMU_SANITIZE"):
        kwargs["sanitize"] = os.environ["JETMAMBA_EMU_SANITIZE"]
    sanitize = kwargs.get("sanitize")
    runtime = {"thread": "libtsan", "address": "libasan"}.get(sanitize or "")
    if runtime and not _runtime_loaded(runtime):
        raise KernelBuildError(
            f"a {sanitize} sanitizer build cannot be loaded into this Python process ({runtime} is not preloaded); "
            "build an executable with build(..., executable=True) and run it"
        )
    path = build(sources, **kwargs)
    if path not in _loaded:
        try:
            _loaded[path] = EmulatedLibrary(str(path))
        except OSError as exc:
            raise KernelBuildError(f"could not load the emulated kernels {path}: {exc}") from exc
    return _loaded[path]


@functools.cache
def sanitizer_available(sanitize: str = "thread") -> tuple[bool, str]:
    """Whether a ``-fsanitize=<sanitize>`` program builds and runs here; ``(ok, reason if not)``."""
    cxx = find_compiler()
    if cxx is None:
        return False, "no C++ compiler"
    code = "#include <thread>\nint main() { int x = 0; std::thread t([&] { x = 1; }); t.join(); return x - 1; }\n"
    with tempfile.TemporaryDirectory(prefix="jm-san-") as tmp:
        src = Path(tmp) / "probe.cpp"
        src.write_text(code)
        exe = Path(tmp) / "probe"
        try:
            proc = subprocess.run(
                [cxx, "-std=c++17", "-pthread", *SANITIZE_FLAGS[sanitize], str(src), "-o", str(exe)],
                capture_output=True,
                text=True,
                timeout=300,
            )
            if proc.returncode != 0:
                return False, f"{cxx} cannot build with -fsanitize={sanitize}: {proc.stderr.strip()[-300:]}"
            run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.SubprocessError) as exc:
            return False, f"-fsanitize={sanitize} probe failed: {exc}"
        if run.returncode != 0:
            return False, f"a -fsanitize={sanitize} program does not run here: {run.stderr.strip()[-300:]}"
    return True, ""
