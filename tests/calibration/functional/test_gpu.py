"""GPU tier: the device-agnostic implementations (and mamba_ssm where installed) on CUDA,
checked against the CPU fp64 references. Skipped with a reason where there is no CUDA GPU."""

from __future__ import annotations

import importlib

import pytest
import torch
from scan_inputs import selective_scan_inputs, ssd_inputs
from tolerances import assert_close

pytestmark = pytest.mark.gpu

ss = importlib.import_module("jetmamba.calibration.functional.selective_scan")
ssd = importlib.import_module("jetmamba.calibration.functional.ssd")
conv = importlib.import_module("jetmamba.calibration.functional.conv")


def _cuda(kw):
    return {k: v.cuda() if torch.is_tensor(v) else v for k, v in kw.items()}


def _f64(kw):
    return {k: v.double() if torch.is_tensor(v) else v for k, v in kw.items()}


@pytest.mark.parametrize("shape", [(1, 1, 8, 4), (2, 33, 70, 16), (1, 300, 256, 16)])
def test_selective_scan_parallel_on_cuda(shape):
    kw = {**selective_scan_inputs(*shape), "dt_softplus": True}
    y, h = ss.selective_scan(**_cuda(kw), impl="parallel")
    y_ref, h_ref = ss.selective_scan_ref(**_f64(kw))
    assert_close(y.cpu(), y_ref, "scan.fp32")
    assert_close(h.cpu(), h_ref, "scan.fp32")


def test_selective_scan_mamba_ssm_on_cuda():
    pytest.importorskip("mamba_ssm", reason="mamba_ssm is not installed (pip install 'jetmamba[gpu]')")
    kw = {**selective_scan_inputs(2, 65, 64, 16), "dt_softplus": True, "h0": None}
    y, h = ss.selective_scan(**_cuda(kw), impl="mamba_ssm")
    y_ref, h_ref = ss.selective_scan_ref(**_f64(kw))
    assert_close(y.cpu(), y_ref, "scan.fp32")
    assert_close(h.cpu(), h_ref, "scan.fp32")


@pytest.mark.parametrize("shape", [(1, 1, 2, 8, 1, 4), (2, 65, 8, 16, 2, 32), (1, 300, 8, 64, 1, 128)])
def test_ssd_chunked_on_cuda(shape):
    kw = ssd_inputs(*shape)
    y, h = ssd.ssd_scan(**_cuda(kw))
    y_ref, h_ref = ssd.ssd_scan_ref(**_f64(kw))
    assert_close(y.cpu(), y_ref, "scan.fp32")
    assert_close(h.cpu(), h_ref, "scan.fp32")


def test_conv_on_cuda():
    x, w, b, s = torch.randn(2, 9, 40), torch.randn(40, 4), torch.randn(40), torch.randn(2, 3, 40)
    y, st = conv.causal_conv1d(x.cuda(), w.cuda(), b.cuda(), s.cuda())
    y_ref, st_ref = conv.causal_conv1d_ref(x, w, b, s)
    assert_close(y.cpu(), y_ref, "conv.fp32")
    assert torch.equal(st.cpu(), st_ref)


@pytest.mark.parametrize("fixture", ["mamba1_fixture", "mamba2_fixture"])
def test_model_on_cuda_matches_cpu(request, fixture):
    from jetmamba.calibration.checkpoint import load_model

    path = request.getfixturevalue(fixture)
    ids = torch.randint(0, 256, (2, 200), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cpu = load_model(path)(ids)
        gpu_model = load_model(path, device="cuda")
        gpu = gpu_model(ids.cuda()).cpu()
        _, state = gpu_model.prefill(ids[:, :150].cuda())
        step, _ = gpu_model.step(ids[:, 150].cuda(), state)
    assert_close(gpu, cpu, "logits.vs_transformers")
    assert_close(step.cpu(), cpu[:, 150], "logits.decode")
