"""``jetmamba build`` without TensorRT: the plugin library's build (headers, arch, CMake command,
cache), the verification logic (with ONNX Runtime on both sides), and the CLI's clean refusal."""

from __future__ import annotations

import os
import stat
import sys
import types
from pathlib import Path

import pytest
import torch
from bundles import fp_bundle
from shared import shared_path

from jetmamba.cli import main
from jetmamba.errors import JetmambaError, UsageError
from jetmamba.runtime import build


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, mamba1_fixture):
    return fp_bundle(mamba1_fixture, tmp_path_factory.mktemp("b") / "m1")[1]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JETMAMBA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(build.PLUGIN_LIBRARY_ENV, raising=False)
    return tmp_path / "cache"


def test_tensorrt_header_versions_of_both_releases():
    for version in ("10.3", "10.16"):
        include = shared_path("third_party", "tensorrt", version, "include")
        assert build.tensorrt_header_version(include) == f"{version}.0"  # 10.16 defines it through a macro
        assert build.find_tensorrt_include(include) == include
    with pytest.raises(UsageError, match="not a TensorRT include directory"):
        build.tensorrt_header_version(shared_path("data"))


def test_arch_rules():
    build.check_arch("87", (12, 6))
    build.check_arch("110", (13, 0))
    with pytest.raises(UsageError, match="cannot compile for sm_110"):
        build.check_arch("110", (12, 6))
    with pytest.raises(UsageError, match="expected digits"):
        build.check_arch("sm_87", (12, 6))


def test_cmake_command_line(tmp_path):
    configure, make = build.cmake_commands(tmp_path / "src", tmp_path / "b", arch="87", include=tmp_path / "inc",
                                           nvcc="/usr/local/cuda/bin/nvcc", jobs=6, generator="Ninja")  # fmt: skip
    assert configure == ["cmake", "-G", "Ninja", "-S", str(tmp_path / "src"), "-B", str(tmp_path / "b"),
                         "-DCMAKE_BUILD_TYPE=Release", "-DCMAKE_CUDA_ARCHITECTURES=87",
                         f"-DJETMAMBA_TENSORRT_INCLUDE_DIR={tmp_path / 'inc'}",
                         "-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc"]  # fmt: skip
    assert make == ["cmake", "--build", str(tmp_path / "b"), "-j", "6"]


def test_plugin_sources_of_a_bundle_are_the_packages(bundle, tmp_path):
    import shutil

    assert build.plugin_sources_digest(build.plugin_source_root(bundle)) == build.plugin_sources_digest(
        build.plugin_source_root()
    )
    copy = tmp_path / "plugins"
    shutil.copytree(bundle / "plugins", copy)
    before = build.plugin_sources_digest(copy)
    (copy / "rms_norm" / "rms_norm.cu").write_text("// changed\n", encoding="utf-8")
    assert build.plugin_sources_digest(copy) != before
    with pytest.raises(UsageError, match="no plugins/CMakeLists.txt"):
        build.plugin_source_root(tmp_path / "not-a-bundle")


def test_a_bundle_whose_plugin_sources_differ_is_not_built_unless_trusted(bundle, tmp_path):
    """Building a bundle's own sources would run its author's code: the package's sources are built,
    and a bundle whose sources differ from them is refused unless trusted explicitly."""
    import shutil

    package = build.plugin_source_root()
    assert build.plugin_source_root(bundle) == package  # same files: this jetmamba's are built
    other = Path(shutil.copytree(bundle, tmp_path / "other"))
    (other / "plugins" / "rms_norm" / "rms_norm.cu").write_text("// someone else's code\n", encoding="utf-8")
    with pytest.raises(UsageError, match="differ from this jetmamba's"):
        build.plugin_source_root(other)
    assert build.find_plugin_library(other) is None
    assert build.plugin_source_root(other, trust_bundle_sources=True) == other / "plugins"


def _fake_cmake(bin_dir, log):
    """A cmake that records its arguments and, on --build, leaves a library in the build tree."""
    bin_dir.mkdir()
    script = bin_dir / "cmake"
    script.write_text(f"""#!{sys.executable}
import sys, pathlib
open({str(log)!r}, "a").write(" ".join(sys.argv[1:]) + "\\n")
if sys.argv[1] == "--build":
    (pathlib.Path(sys.argv[2]) / "libjetmamba_plugins.so").write_bytes(b"ELF")
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_plugin_library_build_is_cached_and_found(bundle, cache, tmp_path, monkeypatch):
    _fake_cmake(tmp_path / "bin", tmp_path / "cmake.log")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(build, "_find_nvcc", lambda: "/opt/nvcc")
    monkeypatch.setattr(build, "nvcc_version", lambda nvcc: (12, 6))
    include = shared_path("third_party", "tensorrt", "10.3", "include")
    assert build.find_plugin_library(bundle) is None
    library = build.build_plugin_library(bundle, arch="87", include=include, quiet=True)
    assert library.read_bytes() == b"ELF" and library.parent.parent == cache / build.PLUGIN_CACHE
    assert library.parent.name.endswith("-sm87-trt10.3.0")
    calls = (tmp_path / "cmake.log").read_text().splitlines()
    assert len(calls) == 2 and "-DCMAKE_CUDA_ARCHITECTURES=87" in calls[0]
    assert f"-S {build.plugin_source_root()} " in calls[0]  # the package's sources, the bundle's being equal
    assert not [p for p in library.parent.parent.iterdir() if p.name.startswith(".")]  # no temporary left
    assert build.build_plugin_library(bundle, arch="87", include=include, quiet=True) == library
    assert len((tmp_path / "cmake.log").read_text().splitlines()) == 2  # cached: cmake not run again
    assert build.find_plugin_library(bundle) == library
    assert build.find_plugin_library(bundle, arch="87") == library
    assert build.find_plugin_library(bundle, arch="110") is None
    monkeypatch.setenv(build.PLUGIN_LIBRARY_ENV, str(library))
    assert build.find_plugin_library() == library
    with pytest.raises(UsageError, match="cannot compile for sm_110"):
        build.build_plugin_library(bundle, arch="110", include=include, quiet=True)


def test_plugin_library_build_failures_are_one_line(bundle, cache, tmp_path, monkeypatch):
    monkeypatch.setattr(build.shutil, "which", lambda name: None)
    with pytest.raises(UsageError, match="cmake is not installed"):
        build.build_plugin_library(bundle, arch="87")
    monkeypatch.undo()
    monkeypatch.setenv("JETMAMBA_CACHE_DIR", str(cache))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "cmake").write_text("#!/bin/sh\necho 'nvcc fatal: Unsupported gpu architecture' >&2\nexit 1\n")
    (bin_dir / "cmake").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(build, "_find_nvcc", lambda: "/opt/nvcc")
    monkeypatch.setattr(build, "nvcc_version", lambda nvcc: (12, 6))
    include = shared_path("third_party", "tensorrt", "10.3", "include")
    with pytest.raises(JetmambaError, match="Unsupported gpu architecture"):
        build.build_plugin_library(bundle, arch="87", include=include, quiet=True)
    assert build.find_plugin_library(bundle) is None


def test_tensorrt_unavailable_reasons(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))  # what the stubs alone give
    assert "type stubs" in build.tensorrt_unavailable_reason()
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails
    reason = build.tensorrt_unavailable_reason()
    assert "not installed" in reason and "nvidia-jetpack" in reason and "pypi.nvidia.com" in reason
    with pytest.raises(build.TensorRTUnavailableError):
        build.require_tensorrt()


def test_nmse():
    want = torch.tensor([1.0, -2.0, 3.0])
    assert build.nmse(want, want) == 0.0
    assert build.nmse(want * 1.1, want) == pytest.approx(0.01)
    assert build.nmse(torch.tensor([float("nan"), 0, 0]), want) == float("inf")


def test_verify_passes_for_the_same_graph_and_catches_a_wrong_one(bundle):
    from jetmamba.runtime.backends.ort import OnnxRuntimeBackend

    reference = OnnxRuntimeBackend(bundle, device="cpu")
    candidate = OnnxRuntimeBackend(bundle, device="cpu")
    prompts = build.verify_prompts(256, count=2, length=12)
    report = build.verify_backends(candidate, reference, prompts, decode_steps=4)
    assert report.ok and report.worst_nmse == 0.0 and len(report.prompts) == 2
    assert all(p.tokens_compared == 5 and p.first_mismatch is None for p in report.prompts)
    assert "ok" in build.format_verify(report)

    class Shifted(OnnxRuntimeBackend):
        """A backend that is wrong by a constant on one token's logit: NMSE and greedy picks change."""

        def _shift(self, logits):
            logits = logits.clone()
            logits[..., 7] += 50.0
            return logits

        def prefill(self, ids, state=None):
            logits, state = super().prefill(ids, state)
            return self._shift(logits), state

        def decode(self, ids, state):
            logits, state = super().decode(ids, state)
            return self._shift(logits), state

    bad = build.verify_backends(Shifted(bundle, device="cpu"), reference, prompts, decode_steps=4)
    assert not bad.ok and bad.worst_nmse > build.VERIFY_NMSE
    assert all(p.token_mismatches == 5 and p.first_mismatch == 0 for p in bad.prompts)
    assert "MISMATCH" in build.format_verify(bad)
    assert bad.to_dict()["ok"] is False and bad.to_dict()["nmse_bound"] == build.VERIFY_NMSE


def _tree(path):
    return sorted((str(p.relative_to(path)), p.stat().st_size) for p in path.rglob("*")) if path.exists() else []


def test_build_command_without_tensorrt_writes_nothing(bundle, cache, capsys):
    from jetmamba.runtime.backends.tensorrt import unavailable_reason

    if unavailable_reason() is None:
        pytest.skip("TensorRT and a GPU are here: the command would build")
    before, cache_before = _tree(bundle), _tree(cache)
    code = main(["build", "--bundle", str(bundle), "--verify", "--json"])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert err.startswith("jetmamba: error: jetmamba build needs TensorRT") and err.count("\n") == 1
    assert "nvidia-jetpack" in err and "Traceback" not in err
    assert _tree(bundle) == before and _tree(cache) == cache_before
    assert not (bundle / "engines").exists()
    assert main(["build", "--bundle", str(bundle.parent / "absent")]) == 1
    assert "not a bundle" in capsys.readouterr().err
