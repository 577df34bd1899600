"""Build and load small native helper libraries from C sources shipped with the package.

The CPU paths that must be fast (the Mamba1 selective scan and Mamba2 SSD recurrence used for
calibration and evaluation on machines without a GPU) are plain C, compiled on first use with the
host C compiler and loaded with :mod:`ctypes`. Plain C keeps the build to about a second, needs no
PyTorch headers and no build step at install time; the result is cached per source, flags,
compiler and CPU, so it is built once per machine.

Where no compiler is present or the build fails, :func:`load_library` returns ``None`` and the
callers fall back to their PyTorch implementations (slower, same results within tolerance); the
reason is logged once. For debugging only: ``JETMAMBA_NATIVE=0`` disables native code and
``JETMAMBA_CACHE_DIR`` moves the cache.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

BASE_FLAGS = ("-O3", "-std=gnu11", "-ffp-contract=fast", "-fPIC", "-shared", "-fno-math-errno", "-Wall")


def cache_dir() -> Path:
    """Directory for built libraries: ``$JETMAMBA_CACHE_DIR`` or ``~/.cache/jetmamba``."""
    override = os.environ.get("JETMAMBA_CACHE_DIR")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jetmamba"


def native_enabled() -> bool:
    return os.environ.get("JETMAMBA_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def find_compiler() -> str | None:
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if candidate and shutil.which(candidate):
            return candidate
    return None


def _cpu_fingerprint() -> str:
    """What makes ``-march=native`` output differ between machines sharing a home directory."""
    text = platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key = line.split(":", 1)[0].strip()
                if key in ("model name", "flags", "Features", "CPU part"):
                    text += line
                if line.strip() == "":  # the first processor describes them all
                    break
    except OSError:
        pass
    return text


def _compiler_version(cc: str) -> str:
    try:
        return subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _compile(cc: str, source: Path, out: Path, flags: tuple[str, ...]) -> str | None:
    """Compile ``source`` into ``out`` atomically; return the compiler's complaint on failure."""
    tmp = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=out.stem + ".", suffix=".tmp.so", dir=out.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        proc = subprocess.run(
            [cc, *flags, str(source), "-o", str(tmp), "-lm"], capture_output=True, text=True, timeout=300
        )
        if proc.returncode != 0:
            return (proc.stderr or proc.stdout).strip()[-2000:]
        os.replace(tmp, out)
        return None
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


@functools.cache
def load_library(name: str, source: Path, openmp: bool = False) -> ctypes.CDLL | None:
    """Return the loaded library built from ``source``, or ``None`` where native code is unavailable.

    Built with ``-march=native`` (the library never leaves this machine; the cache key holds the
    CPU's identity), retried without it for compilers that refuse it. ``openmp`` adds
    ``-fopenmp`` (retried without: the source must also build serially); import torch first, so
    that ``libgomp.so.1`` resolves to the copy PyTorch loaded and the threads are shared.
    """
    if not native_enabled():
        log.info("native code disabled by JETMAMBA_NATIVE; using the PyTorch paths")
        return None
    cc = find_compiler()
    if cc is None:
        log.warning("no C compiler found (set CC or install gcc); using the slower PyTorch scan")
        return None
    code = Path(source).read_bytes()
    complaint = None
    variants = [("-march=native",), ()]
    if openmp:
        variants = [("-fopenmp", *v) for v in variants] + variants
    for arch_flags in variants:
        flags = BASE_FLAGS + arch_flags
        key = hashlib.sha256(
            b"\0".join([code, " ".join(flags).encode(), _compiler_version(cc).encode(), _cpu_fingerprint().encode()])
        ).hexdigest()[:20]
        out = cache_dir() / "native" / f"{name}-{key}.so"
        if not out.exists():
            complaint = _compile(cc, Path(source), out, flags)
            if complaint is not None:
                continue
        try:
            return ctypes.CDLL(str(out))
        except OSError as exc:
            complaint = str(exc)
    log.warning("could not build native %s (%s); using the slower PyTorch path", name, complaint)
    return None
