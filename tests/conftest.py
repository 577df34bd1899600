"""Shared fixtures: the ../shared directory (models and text) and small random checkpoints."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# helpers shared by the tests (tolerances, the transformers oracle); tests import them by name.
# pytest runs with --import-mode=importlib, so tests/ itself is not on sys.path and the folder
# tests/jetmamba (the root package's tests) cannot shadow the real jetmamba package.
sys.path.insert(0, str(Path(__file__).parent / "support"))

from shared import shared_path  # noqa: E402


@pytest.fixture(scope="session")
def mamba1_fixture() -> Path:
    return shared_path("models", "mamba1-tiny-wt2")


@pytest.fixture(scope="session")
def mamba2_fixture() -> Path:
    return shared_path("models", "mamba2-tiny-wt2")


@pytest.fixture(scope="session")
def wikitext_test() -> Path:
    return shared_path("data", "wikitext2-test.txt")


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU on this machine (GPU tier)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
