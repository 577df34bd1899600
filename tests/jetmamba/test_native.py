"""Building native helpers: cached builds, and a clean fallback where no compiler works."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import torch

from jetmamba import native

ss = importlib.import_module("jetmamba.calibration.functional.selective_scan")
SOURCE = Path(importlib.import_module("jetmamba.calibration.functional._native").SOURCE)


def test_builds_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JETMAMBA_CACHE_DIR", str(tmp_path))
    native.load_library.cache_clear()
    lib = native.load_library("scan_cpu", SOURCE, openmp=True)
    assert lib is not None and hasattr(lib, "jm_selective_scan_f32")
    built = list((tmp_path / "native").glob("scan_cpu-*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    native.load_library.cache_clear()
    native.load_library("scan_cpu", SOURCE, openmp=True)
    assert built[0].stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert not [p for p in (tmp_path / "native").iterdir() if ".tmp" in p.name]


def test_broken_compiler_falls_back(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("JETMAMBA_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", "false")  # exists, fails every compile
    native.load_library.cache_clear()
    with caplog.at_level(logging.WARNING):
        assert native.load_library("scan_cpu", SOURCE) is None
    assert "could not build native scan_cpu" in caplog.text
    native.load_library.cache_clear()


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv("JETMAMBA_NATIVE", "0")
    native.load_library.cache_clear()
    assert native.load_library("scan_cpu", SOURCE) is None
    native.load_library.cache_clear()


def test_source_without_openmp_builds_serially(tmp_path, monkeypatch):
    """The kernels must also build where the compiler has no OpenMP."""
    monkeypatch.setenv("JETMAMBA_CACHE_DIR", str(tmp_path))
    native.load_library.cache_clear()
    lib = native.load_library("scan_cpu", SOURCE, openmp=False)
    assert lib is not None
    native.load_library.cache_clear()


def test_model_runs_without_native_code(monkeypatch):
    x = torch.randn(1, 5, 8)
    ref = ss.selective_scan(x, x.abs(), -torch.ones(8, 4), torch.randn(1, 5, 4), torch.randn(1, 5, 4), impl="parallel")
    monkeypatch.setattr(importlib.import_module("jetmamba.calibration.functional._native"), "available", lambda: False)
    y, _ = ss.selective_scan(x, x.abs(), -torch.ones(8, 4), torch.randn(1, 5, 4), torch.randn(1, 5, 4))
    assert y.shape == ref[0].shape
