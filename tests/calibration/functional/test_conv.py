"""Causal depthwise conv1d: the native kernel against the PyTorch reference, and the state rules."""

from __future__ import annotations

import importlib

import pytest
import torch
from tolerances import assert_close

conv = importlib.import_module("jetmamba.calibration.functional.conv")


def inputs(b, l, c, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, l, c, generator=g),
        torch.randn(c, k, generator=g),
        torch.randn(c, generator=g),
        torch.randn(b, k - 1, c, generator=g),
    )


# widths 2..4, L = 1, L shorter than the state (the new state mixes old state and input), odd C
@pytest.mark.parametrize("b,l,c,k", [(1, 1, 8, 4), (2, 2, 37, 4), (1, 9, 64, 3), (3, 17, 40, 2), (2, 64, 130, 4)])
@pytest.mark.parametrize("use_bias,use_state", [(True, True), (False, True), (True, False)])
def test_native_matches_reference(b, l, c, k, use_bias, use_state):
    x, w, bias, state = inputs(b, l, c, k)
    args = (x, w, bias if use_bias else None, state if use_state else None)
    y, s = conv.causal_conv1d_native(*args)
    y_ref, s_ref = conv.causal_conv1d_ref(*args)
    assert_close(y, y_ref, "conv.fp32")
    assert torch.equal(s, s_ref)


def test_definition_against_direct_sum():
    x, w, bias, state = inputs(2, 5, 3, 4)
    y, s = conv.causal_conv1d_ref(x, w, bias, state, activation=None)
    xs = torch.cat([state, x], 1)
    for t in range(5):
        direct = bias + sum(w[:, i] * xs[:, t + i] for i in range(4))
        torch.testing.assert_close(y[:, t], direct)
    torch.testing.assert_close(s, xs[:, -3:])


def test_streaming_equals_whole_sequence():
    x, w, bias, _ = inputs(2, 12, 16, 4)
    y_full, s_full = conv.causal_conv1d(x, w, bias)
    state, parts = None, []
    for chunk in (x[:, :1], x[:, 1:3], x[:, 3:4], x[:, 4:]):
        y, state = conv.causal_conv1d(chunk, w, bias, state)
        parts.append(y)
    assert_close(torch.cat(parts, 1), y_full, "conv.fp32")
    assert torch.equal(state, s_full)


def test_strided_input():
    x, w, bias, state = inputs(2, 7, 40, 4)
    wide = torch.cat([x, torch.randn(2, 7, 40)], -1)
    y, _ = conv.causal_conv1d_native(wide[..., :40], w, bias, state)
    assert_close(y, conv.causal_conv1d_ref(x, w, bias, state)[0], "conv.fp32")
