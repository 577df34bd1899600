"""Packaging: one import root, every package folder shipped, the demo's data inside the package."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (JetPack 6)
    tomllib = pytest.importorskip("tomli")


def _setuptools_table():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_folder_is_listed():
    table = _setuptools_table()
    listed = set(table["packages"])
    found = set()
    for pkg, folder in table["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([pkg, *rel.parts]))
    # a sub-package of a mapped folder that is itself mapped is found twice; that is fine
    missing = sorted(found - listed)
    assert not missing, f"package folders missing from pyproject's packages list: {missing}"


def test_single_import_root():
    table = _setuptools_table()
    assert all(p == "jetmamba" or p.startswith("jetmamba.") for p in table["packages"])
    for folder in ("calibration", "compiler", "runtime", "plugins", "boards"):
        assert table["package-dir"][f"jetmamba.{folder}"] == folder


def test_demo_model_is_small_and_described():
    model = ROOT / "jetmamba" / "demo" / "model"
    size = sum(f.stat().st_size for f in model.iterdir())
    assert size <= 2_000_000, f"the demo model is {size} bytes; the limit is 2 MB"
    assert (model / "training.json").is_file() and (model / "config.json").is_file()


def test_package_imports_without_heavy_optional_dependencies():
    code = "import jetmamba.cli, jetmamba.calibration.model, sys; " \
           "bad = [m for m in ('tensorrt', 'transformers', 'onnxruntime', 'pycuda') if m in sys.modules]; " \
           "assert not bad, bad"  # fmt: skip
    import subprocess

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
