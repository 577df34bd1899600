"""Ctrl-C or SIGTERM in the middle of `quantize` or `compile` leaves the previous artifact intact
and nothing half-written beside it.

Each case runs the real command in a child process over an output directory that holds an earlier
artifact, and signals it at a chosen moment. The moments are made deterministic by the child
itself (test instrumentation, not a switch of jetmamba's): a function on the command's path is
wrapped to create a marker file and wait, and the test signals once the marker exists:

- ``working``: calibration (quantize) or the compiler's pass pipeline (compile) has begun and
  nothing has been written yet;
- ``commit``: the new artifact is complete in its temporary directory and about to replace the
  old one (the permissions pass is the last step before the rename).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}
LAST_LINE = {signal.SIGINT: "jetmamba: interrupted", signal.SIGTERM: "jetmamba: terminated"}

# (module, function) wrapped in the child per command and moment
PAUSE_IN = {
    ("quantize", "working"): ("jetmamba.calibration.quantize", "observe"),
    ("compile", "working"): ("jetmamba.compiler.passes", "run_pipeline"),
    ("quantize", "commit"): ("jetmamba.atomic", "_normal_permissions"),
    ("compile", "commit"): ("jetmamba.atomic", "_normal_permissions"),
}

CHILD = """
import importlib, pathlib, sys, time
marker, module, name = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
mod = importlib.import_module(module)
real = getattr(mod, name)
def paused(*args, **kwargs):
    out = real(*args, **kwargs) if name == "_normal_permissions" else None
    marker.touch()
    time.sleep(300)
    return out if name == "_normal_permissions" else real(*args, **kwargs)
setattr(mod, name, paused)
from jetmamba.cli import main
sys.exit(main(sys.argv[4:]))
"""


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


def _interrupt(argv: list[str], out: Path, sig: signal.Signals, command: str, moment: str, tmp_path: Path) -> str:
    before = _snapshot(out)
    marker = tmp_path / "paused"
    module, name = PAUSE_IN[command, moment]
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(marker), module, name, *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 240
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"the command ended (exit {proc.returncode}) before the signal: {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the command did not reach the moment to signal it")
        time.sleep(0.05)
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"{sig!r} did not stop the command")
    assert proc.returncode == EXIT[sig], err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == LAST_LINE[sig]
    assert _snapshot(out) == before, "the previous artifact changed"
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name], "half-written files beside the artifact"
    return err


def _quantize_argv(model, calib, out: Path, samples: int = 4) -> list[str]:
    return ["quantize", "--model", str(model), "--recipe", "w8a8-quamba", "--calib", calib, "--samples", str(samples),
            "--calib-seq-len", "128", "--out", str(out), "--force", "-q"]  # fmt: skip


@pytest.fixture(scope="module")
def valid():
    from shared import shared_path

    return str(shared_path("data", "wikitext2-valid.txt"))


@pytest.fixture(scope="module")
def earlier(tmp_path_factory, mamba1_fixture, valid):
    """An earlier QuantizedModel and an earlier bundle of it, to be (not) replaced."""
    from jetmamba.cli import main

    root = tmp_path_factory.mktemp("earlier")
    q, b = root / "q", root / "bundle"
    assert main(_quantize_argv(mamba1_fixture, valid, q, samples=2)) == 0
    assert main(["compile", "--model", str(q), "--board", "orin-nano-8gb", "--out", str(b), "-q"]) == 0
    return q, b


def _copy(src: Path, work: Path) -> Path:
    import shutil

    work.mkdir()
    return Path(shutil.copytree(src, work / src.name))


SIGNALS = pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
MOMENTS = pytest.mark.parametrize("moment", ["working", "commit"])


@SIGNALS
@MOMENTS
def test_quantize_interrupted(tmp_path, earlier, mamba1_fixture, valid, sig, moment):
    out = _copy(earlier[0], tmp_path / "work")
    _interrupt(_quantize_argv(mamba1_fixture, valid, out), out, sig, "quantize", moment, tmp_path)


@SIGNALS
@MOMENTS
def test_compile_interrupted(tmp_path, earlier, sig, moment):
    out = _copy(earlier[1], tmp_path / "work")
    argv = ["compile", "--model", str(earlier[0]), "--board", "orin-nano-8gb", "--out", str(out), "--force", "-q"]
    _interrupt(argv, out, sig, "compile", moment, tmp_path)


def test_an_interrupt_between_the_two_renames_restores_the_previous_artifact(tmp_path, monkeypatch):
    from jetmamba import atomic

    target = tmp_path / "art"
    target.mkdir()
    (target / "old").write_text("old")
    real = os.replace
    calls = []

    def replace(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the previous artifact is aside, the new one not yet in place
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_directory(target) as tmp:
            (tmp / "new").write_text("new")
    assert [p.name for p in target.iterdir()] == ["old"]
    assert [p.name for p in tmp_path.iterdir()] == ["art"]
