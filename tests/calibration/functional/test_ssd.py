"""Mamba2 SSD recurrence: every implementation against the fp64 reference."""

from __future__ import annotations

import importlib

import pytest
import torch
from scan_inputs import ssd_inputs as inputs
from tolerances import assert_close

ssd = importlib.import_module("jetmamba.calibration.functional.ssd")

# (batch, length, heads, head_dim, groups, states): L = 1, odd L, head_dim not a multiple of
# the native block (40), one group, groups > 1, one group per head.
SHAPES = [
    (1, 1, 2, 8, 1, 4),
    (2, 7, 4, 8, 2, 16),
    (1, 37, 6, 40, 3, 16),
    (3, 65, 8, 16, 8, 32),
    (1, 130, 4, 64, 1, 64),
]


def reference(kw):
    return ssd.ssd_scan_ref(**{k: v.double() if torch.is_tensor(v) else v for k, v in kw.items()})


@pytest.mark.parametrize("impl", ["native", "chunked"])
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_reference(impl, shape):
    kw = inputs(*shape)
    y, h = ssd.ssd_scan(**kw, impl=impl, chunk_size=16)
    y_ref, h_ref = reference(kw)
    assert_close(y, y_ref, "scan.fp32")
    assert_close(h, h_ref, "scan.fp32")


@pytest.mark.parametrize("chunk", [1, 3, 8, 64])
def test_chunk_size_does_not_matter(chunk):
    kw = inputs(2, 29, 4, 8, 2, 8)
    y, h = ssd.ssd_scan_chunked(**kw, chunk_size=chunk)
    y_ref, h_ref = reference(kw)
    assert_close(y, y_ref, "scan.fp32")
    assert_close(h, h_ref, "scan.fp32")


@pytest.mark.parametrize("impl", ["native", "chunked"])
@pytest.mark.parametrize("drop", ["D", "h0"])
def test_optional_inputs(impl, drop):
    kw = inputs(2, 9, 4, 8, 2, 8)
    kw[drop] = None
    y, h = ssd.ssd_scan(**kw, impl=impl)
    y_ref, h_ref = reference(kw)
    assert_close(y, y_ref, "scan.fp32")
    assert_close(h, h_ref, "scan.fp32")


def test_strided_inputs_are_read_in_place():
    kw = inputs(2, 11, 4, 8, 2, 8)
    packed = torch.cat([kw["x"].flatten(2), kw["B"].flatten(2), kw["C"].flatten(2)], dim=-1)
    views = dict(
        x=packed[..., :32].view(2, 11, 4, 8),
        B=packed[..., 32:48].view(2, 11, 2, 8),
        C=packed[..., 48:].view(2, 11, 2, 8),
    )
    y, h = ssd.ssd_scan(**{**kw, **views}, impl="native")
    assert_close(y, reference(kw)[0], "scan.fp32")


def test_state_update_is_one_step_of_the_scan():
    kw = inputs(3, 1, 4, 8, 2, 8)
    y, h = ssd.ssd_scan(**kw, impl="native")
    y1, h1 = ssd.ssd_state_update(
        kw["x"][:, 0], kw["dt"][:, 0], kw["A"], kw["B"][:, 0], kw["C"][:, 0], kw["D"], kw["h0"]
    )
    assert_close(y[:, 0], y1, "scan.fp32")
    assert_close(h, h1, "scan.fp32")


def test_chunked_gradients_match_reference():
    kw = {k: v.requires_grad_() for k, v in inputs(1, 10, 2, 4, 1, 4, dtype=torch.float64).items()}
    grads = []
    for fn in (ssd.ssd_scan_ref, lambda **k: ssd.ssd_scan_chunked(**k, chunk_size=4)):
        y, h = fn(**kw)
        grads.append(torch.autograd.grad(y.sum() + h.square().sum(), list(kw.values())))
    for a, b in zip(*grads, strict=True):
        assert_close(b, a, "scan.grad")
