"""Mamba1 selective scan: every implementation against the fp64 reference."""

from __future__ import annotations

import importlib

import pytest
import torch
from scan_inputs import selective_scan_inputs as inputs
from tolerances import assert_close

from jetmamba.errors import UnsupportedError

ss = importlib.import_module("jetmamba.calibration.functional.selective_scan")

# (batch, length, channels, states): L = 1 (decode), odd lengths, channel counts that are not a
# multiple of the kernel's 32-wide block, and the state sizes of released checkpoints.
SHAPES = [(1, 1, 8, 4), (2, 7, 40, 16), (3, 33, 70, 16), (1, 130, 96, 16), (2, 5, 33, 64)]


def reference(kw):
    return ss.selective_scan_ref(**{k: v.double() if torch.is_tensor(v) else v for k, v in kw.items()})


IMPLS = ["native", "parallel"]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_reference(impl, shape):
    kw = {**inputs(*shape), "dt_softplus": True}
    y, h = ss.selective_scan(**kw, impl=impl)
    y_ref, h_ref = reference(kw)
    assert y.dtype == h.dtype == torch.float32
    assert_close(y, y_ref, "scan.fp32")
    assert_close(h, h_ref, "scan.fp32")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("drop", ["D", "z", "h0", "dt_bias"])
def test_optional_inputs(impl, drop):
    kw = {**inputs(2, 9, 40, 8), "dt_softplus": True}
    kw[drop] = None
    y, h = ss.selective_scan(**kw, impl=impl)
    y_ref, h_ref = reference(kw)
    assert_close(y, y_ref, "scan.fp32")
    assert_close(h, h_ref, "scan.fp32")


@pytest.mark.parametrize("impl", IMPLS)
def test_without_softplus_takes_dt_as_is(impl):
    kw = inputs(2, 11, 40, 8)
    kw["dt"] = kw["dt"].abs() * 0.1
    kw["dt_bias"] = kw["dt_bias"].abs()  # dt + bias stays a positive step
    y, _ = ss.selective_scan(**kw, impl=impl)
    assert_close(y, reference(kw)[0], "scan.fp32")


def test_softplus_extremes():
    """Large |dt| exercise the native softplus' branches (identity above, exp below)."""
    kw = {**inputs(1, 6, 40, 8), "dt_softplus": True}
    kw["dt"] = torch.linspace(-30, 30, 6 * 40).view(1, 6, 40)
    kw["A"] = kw["A"] * 0.01
    y, h = ss.selective_scan(**kw, impl="native")
    y_ref, h_ref = reference(kw)
    assert_close(y, y_ref, "scan.fp32")
    assert_close(h, h_ref, "scan.fp32")


def test_strided_inputs_are_read_in_place():
    """x and z as halves of one projection, B and C as slices of another (as the mixer passes them)."""
    base = inputs(2, 13, 40, 8)
    xz = torch.cat([base["x"], base["z"]], dim=-1)
    bc = torch.cat([torch.zeros(2, 13, 3), base["B"], base["C"]], dim=-1)
    kw = {**base, "x": xz[..., :40], "z": xz[..., 40:], "B": bc[..., 3:11], "C": bc[..., 11:], "dt_softplus": True}
    assert not kw["x"].is_contiguous()
    y, h = ss.selective_scan(**kw, impl="native")
    assert_close(y, reference(kw)[0], "scan.fp32")


def test_state_update_is_one_step_of_the_scan():
    kw = {**inputs(3, 1, 24, 8), "dt_softplus": True}
    y, h = ss.selective_scan(**kw, impl="native")
    y1, h1 = ss.selective_state_update(
        kw["x"][:, 0], kw["dt"][:, 0], kw["A"], kw["B"][:, 0], kw["C"][:, 0], kw["D"], kw["z"][:, 0], kw["h0"],
        kw["dt_bias"], True,
    )  # fmt: skip
    assert_close(y[:, 0], y1, "scan.fp32")
    assert_close(h, h1, "scan.fp32")


def test_threads_do_not_change_the_result():
    kw = {**inputs(2, 300, 200, 16), "dt_softplus": True}
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        y1, h1 = ss.selective_scan(**kw, impl="native")
        torch.set_num_threads(max(2, threads))
        y2, h2 = ss.selective_scan(**kw, impl="native")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(y1, y2) and torch.equal(h1, h2)


def test_parallel_gradients_match_reference():
    kw = {k: v.requires_grad_() for k, v in inputs(2, 9, 8, 4, dtype=torch.float64).items()}
    grads = []
    for fn in (ss.selective_scan_ref, ss.selective_scan_parallel):
        y, h = fn(**kw, dt_softplus=True)
        g = torch.autograd.grad((y.sum() + h.square().sum()), list(kw.values()))
        grads.append(g)
    for a, b in zip(*grads, strict=True):
        assert_close(b, a, "scan.grad")


def test_auto_dispatch():
    kw = inputs(1, 4, 8, 4)
    assert torch.equal(ss.selective_scan(**kw)[0], ss.selective_scan(**kw, impl="native")[0])
    with pytest.raises(UnsupportedError, match="unknown scan implementation"):
        ss.selective_scan(**kw, impl="magic")
