"""The TensorRT backend and build code type-check against TensorRT's published Python stubs.

TensorRT cannot run here, so mypy is what keeps this code honest about TensorRT's API. Two
obstacles, both handled here rather than by loosening the check:

- the package maps ``jetmamba.runtime`` to ``runtime/`` (pyproject's package-dir), which mypy
  cannot follow through the editable install; the test lays out a ``jetmamba/`` tree of symlinks;
- ``tensorrt-stubs`` 10.13 (installed with ``--no-deps``: it requires the real tensorrt wheel) puts
  ``.pyi`` files straight into site-packages without a ``py.typed`` marker, which mypy ignores, and
  its generated stubs have a few syntax errors (parameters named ``in``; a parameter without a
  default after defaulted ones). The test copies them beside the tree and repairs those lines; errors
  *inside* the stubs are not ours to fix and are not reported, errors in our use of them are.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECKED = ("runtime/backends/tensorrt.py", "runtime/build.py", "runtime/engine.py", "runtime/cudamem.py")
SUBPACKAGES = ("calibration", "compiler", "runtime", "plugins", "boards")
STUBS_FIX = "pip install --no-deps tensorrt-stubs==10.13.0.35.1"
# (pattern, replacement): the generated stubs' syntax errors
STUB_REPAIRS = (
    (re.compile(r"\bin: list\["), "in_: list["),
    (re.compile(r", channel_axis: int\)"), ", channel_axis: int = ...)"),
)
MYPY_CONFIG = """\
[mypy]
python_version = 3.10
follow_imports = silent
check_untyped_defs = True
warn_unused_ignores = True
warn_redundant_casts = True
mypy_path = {stubs}
cache_dir = {cache}

[mypy-torch.*]
# torch's own annotations are not under test and take most of mypy's time
follow_imports = skip

[mypy-tensorrt.*,tensorrt_bindings.*,tensorrt_libs]
ignore_errors = True
"""
# must be an error: proves the check sees TensorRT's types (a stub that resolved to Any would pass anything)
PROBE = """\
import tensorrt as trt

def probe(logger: trt.ILogger) -> None:
    trt.Builder(logger).create_netwrk(0)
"""


def _stub_dirs() -> tuple[Path, Path]:
    spec = importlib.util.find_spec("tensorrt")
    if spec is None:
        pytest.fail(f"TensorRT's type stubs are not installed: {STUBS_FIX}")
    if spec.origin not in (None, "namespace"):
        pytest.skip(f"a real TensorRT is installed ({spec.origin}); its stubs are checked where it is not")
    found = [Path(p) for p in spec.submodule_search_locations or [] if (Path(p) / "__init__.pyi").is_file()]
    if not found or not (found[0].parent / "tensorrt_bindings" / "tensorrt.pyi").is_file():
        pytest.fail(f"tensorrt-stubs' files are incomplete: {STUBS_FIX}")
    return found[0], found[0].parent / "tensorrt_bindings"


def _layout(tmp: Path) -> tuple[Path, Path]:
    src, stubs = tmp / "src", tmp / "stubs"
    package = src / "jetmamba"
    package.mkdir(parents=True)
    for entry in (ROOT / "jetmamba").iterdir():
        (package / entry.name).symlink_to(entry)
    for name in SUBPACKAGES:
        (package / name).symlink_to(ROOT / name)
    for directory in _stub_dirs():
        (stubs / directory.name).mkdir(parents=True)
        for pyi in directory.glob("*.pyi"):
            text = pyi.read_text(encoding="utf-8")
            for pattern, replacement in STUB_REPAIRS:
                text = pattern.sub(replacement, text)
            (stubs / directory.name / pyi.name).write_text(text, encoding="utf-8")
    (stubs / "tensorrt_libs.pyi").write_text("", encoding="utf-8")  # the real package's DLL loader
    return src, stubs


def test_tensorrt_code_is_type_clean(tmp_path):
    pytest.importorskip("mypy", reason="mypy is in the [test] extra")
    src, stubs = _layout(tmp_path)
    config = tmp_path / "mypy.ini"
    config.write_text(MYPY_CONFIG.format(stubs=stubs, cache=tmp_path / "cache"), encoding="utf-8")
    (src / "probe.py").write_text(PROBE, encoding="utf-8")
    files = [f"jetmamba/{f}" for f in CHECKED] + ["probe.py"]
    proc = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(config), *files], cwd=src,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if ": error:" in line]
    ours = [line for line in lines if not line.startswith("probe.py")]
    assert not ours, "\n".join(ours)
    assert any('"Builder" has no attribute "create_netwrk"' in line for line in lines), proc.stdout + proc.stderr
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
