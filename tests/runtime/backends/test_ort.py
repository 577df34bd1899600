"""The ONNX Runtime backend on real bundles: the state it allocates, prefill + decode against one
longer prefill, chunked prefill, and how ``open_backend`` picks and refuses backends."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tolerances import assert_close, nmse

from jetmamba.errors import UsageError
from jetmamba.runtime.backends import open_backend, tensorrt_unavailable_reason
from jetmamba.runtime.generate import generate

# a bundle's fp16 SSM state is rounded at every call boundary, where one long prefill keeps it in
# fp32 inside the scan: the bound the compiler's tests hold fp16-state graphs to (docs/compiler.md)
FP16_STATE_NMSE = 1e-3


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, mamba1_fixture, mamba2_fixture):
    """arch -> quantized bundle (fp16 state), and "fp32" -> an unquantized fp32 Mamba1 bundle
    (fp32 state: decode and chunking are exact)."""
    from bundles import RECIPE, fp_bundle, quantized_bundle

    root = tmp_path_factory.mktemp("ort")
    out = {arch: quantized_bundle(fx, RECIPE[arch], root / arch)[1]
           for arch, fx in (("mamba1", mamba1_fixture), ("mamba2", mamba2_fixture))}  # fmt: skip
    out["fp32"] = fp_bundle(mamba1_fixture, root / "fp32", dtype=torch.float32)[1]
    return out


def ort(bundle):
    return open_backend(bundle, "onnxruntime", device="cpu", threads=1)


def ids(length: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", ["mamba1", "mamba2"])
def test_state_has_the_documented_names_shapes_and_dtypes(bundles, arch):
    with ort(bundles[arch]) as backend:
        c = backend.config
        state = backend.init_state(3)
        ssm = [3, c.d_inner, c.d_state] if arch == "mamba1" else [3, c.n_heads, c.head_dim, c.d_state]
        want = {}
        for i in range(c.n_layer):
            want[f"conv_state.{i}"] = ([3, c.d_conv - 1, c.conv_dim], np.int8)
            want[f"ssm_state.{i}"] = (ssm, np.float16)
        assert {k: (list(v.shape), v.dtype) for k, v in state.items()} == want
        assert all(not v.any() for v in state.values())
        # ... which is the manifest's I/O contract with the batch filled in
        contract = {t["name"]: t for t in backend.manifest["io"]["inputs"] if t["name"] != "input_ids"}
        assert set(contract) == set(want)
        for name, (shape, dtype) in want.items():
            assert contract[name]["dtype"] == np.dtype(dtype).name
            assert contract[name]["shape"] == ["batch", *shape[1:]]


def test_logits_are_cpu_fp32_of_the_documented_shapes(bundles):
    with ort(bundles["mamba2"]) as backend:
        logits, state = backend.prefill(ids(5))
        assert logits.shape == (2, 5, 256) and logits.dtype == torch.float32 and logits.device.type == "cpu"
        step, state = backend.decode(torch.tensor([1, 2]), state)
        assert step.shape == (2, 256) and step.dtype == torch.float32
        assert set(state) == set(backend.init_state(1))


def prefill_then_decode(backend, tokens: torch.Tensor, prompt: int) -> torch.Tensor:
    logits, state = backend.prefill(tokens[:, :prompt])
    steps = [logits]
    for t in range(prompt, tokens.shape[1]):
        step, state = backend.decode(tokens[:, t], state)
        steps.append(step[:, None])
    return torch.cat(steps, dim=1)


def test_prefill_then_decode_equals_one_longer_prefill_exactly_with_an_fp32_state(bundles):
    tokens = ids(40)
    with ort(bundles["fp32"]) as backend:
        assert_close(prefill_then_decode(backend, tokens, 24), backend.prefill(tokens)[0], "logits.onnx_fp32")


@pytest.mark.parametrize("arch", ["mamba1", "mamba2"])
def test_prefill_then_decode_equals_one_longer_prefill_within_the_fp16_state(bundles, arch):
    tokens = ids(40, seed=1)
    with ort(bundles[arch]) as backend:
        full = backend.prefill(tokens)[0]
        assert nmse(prefill_then_decode(backend, tokens, 24), full) <= FP16_STATE_NMSE


def chunked(backend, tokens: torch.Tensor, size: int) -> torch.Tensor:
    state, parts = None, []
    for start in range(0, tokens.shape[1], size):
        logits, state = backend.prefill(tokens[:, start : start + size], state)
        parts.append(logits)
    return torch.cat(parts, dim=1)


def test_chunked_prefill_equals_one_prefill(bundles):
    tokens = ids(37, seed=2)
    with ort(bundles["fp32"]) as backend:
        assert_close(chunked(backend, tokens, 8), backend.prefill(tokens)[0], "logits.onnx_fp32")
    with ort(bundles["mamba1"]) as backend:
        assert nmse(chunked(backend, tokens, 8), backend.prefill(tokens)[0]) <= FP16_STATE_NMSE


def test_generation_prefills_past_max_prompt_in_chunks(bundles):
    prompt = list(b"A prompt longer than this backend's small profile allows, in one call.")
    with ort(bundles["fp32"]) as backend:
        whole = generate(backend, prompt, max_new_tokens=12)
        backend.max_prompt = 16  # as a TensorRT engine built with --max-prompt 16
        with pytest.raises(UsageError, match="maximum of 16"):
            backend.prefill(torch.tensor([prompt]))
        small = generate(backend, prompt, max_new_tokens=12)
    assert small.prefill_chunks == 5 and whole.prefill_chunks == 1 and small.tokens == whole.tokens


def test_open_backend_picks_and_refuses(bundles, tmp_path):
    from jetmamba.compiler.bundle import BundleError

    reason = tensorrt_unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT can run here: auto picks it (the device tier tests that)")
    with open_backend(bundles["mamba1"], "auto") as backend:
        assert backend.name == "onnxruntime"
    with pytest.raises(UsageError, match="tensorrt backend cannot run here"):
        open_backend(bundles["mamba1"], "tensorrt")
    with pytest.raises(UsageError, match="unknown backend 'cuda'"):
        open_backend(bundles["mamba1"], "cuda")
    with pytest.raises(BundleError, match="not a bundle"):
        open_backend(tmp_path, "auto")


def test_auto_falls_back_to_onnxruntime_with_a_warning(bundles, monkeypatch, caplog):
    """Where TensorRT is usable but cannot open the bundle (no engine, a failed build), auto says why."""
    import jetmamba.runtime.backends as backends

    def no_engine(bundle, **options):
        raise UsageError("no engine for this GPU")

    monkeypatch.setattr(backends, "tensorrt_unavailable_reason", lambda: None)
    monkeypatch.setattr(backends, "_tensorrt", no_engine)
    with caplog.at_level("WARNING"), open_backend(bundles["mamba1"], "auto") as backend:
        assert backend.name == "onnxruntime"
    assert "no engine for this GPU" in caplog.text and "using ONNX Runtime" in caplog.text
    with pytest.raises(UsageError, match="no engine"):
        open_backend(bundles["mamba1"], "tensorrt")  # asked for by name: no fallback


def test_a_model_backend_needs_the_state_api(bundles):
    from jetmamba.runtime.backends.model import ModelBackend, as_backend

    with pytest.raises(UsageError, match="has no prefill, step, init_state"):
        ModelBackend(object())
    with ort(bundles["mamba1"]) as backend:
        assert as_backend(backend) is backend  # a backend is not wrapped again
