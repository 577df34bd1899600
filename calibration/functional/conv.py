"""Depthwise causal convolution over time, with an explicit convolution state.

Twins with one signature: :func:`causal_conv1d_ref` (PyTorch, any device, differentiable; the
definition) and :func:`causal_conv1d_native` (C on the CPU, SiLU fused); :func:`causal_conv1d`
dispatches.

    x: [b, l, c] (l >= 1); weight: [c, k]; bias: [c] or None;
    state: [b, k-1, c], the k-1 inputs before x, oldest first (zeros when None).
    -> y: [b, l, c], ``y[t] = act(bias + sum_i weight[:, i] * xs[t + i])`` over the
       state-extended sequence xs = state ++ x; and the new state [b, k-1, c] (its last k-1 rows).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from jetmamba.calibration.functional import _native
from jetmamba.errors import UnsupportedError


def causal_conv1d_ref(x, weight, bias=None, state=None, activation="silu"):
    """PyTorch implementation, in ``x.dtype`` (see the module docstring)."""
    b, l, c = x.shape
    k = weight.shape[1]
    if state is None:
        state = x.new_zeros(b, k - 1, c)
    xs = torch.cat([state.to(x.dtype), x], dim=1)
    w = weight.to(x.dtype)
    y = xs[:, 0:l] * w[:, 0]
    for i in range(1, k):
        y.addcmul_(xs[:, i : i + l], w[:, i])
    if bias is not None:
        y.add_(bias.to(x.dtype))
    if activation == "silu":
        y = F.silu(y)
    elif activation is not None:
        raise UnsupportedError(f"unsupported activation {activation!r}")
    return y, xs[:, l:].clone()


def causal_conv1d_native(x, weight, bias=None, state=None, activation="silu"):
    """C implementation (fp32, CPU); returns fp32 outputs."""
    if not _native.available():
        raise UnsupportedError("the native CPU kernels are unavailable (no C compiler, or JETMAMBA_NATIVE=0)")
    if x.device.type != "cpu":
        raise UnsupportedError(f"the native conv runs on the CPU; these tensors are on {x.device}")
    if activation not in ("silu", None):
        raise UnsupportedError(f"unsupported activation {activation!r}")
    b, l, c = x.shape
    k = weight.shape[1]
    x, x_bs, x_ts = _native.rows(x)
    w_t = weight.to(torch.float32).t().contiguous()
    bias = None if bias is None else bias.to(torch.float32).contiguous()
    state = torch.zeros(b, k - 1, c) if state is None else state.to(torch.float32).contiguous()
    y = torch.empty(b, l, c, dtype=torch.float32)
    new_state = torch.empty(b, k - 1, c, dtype=torch.float32)
    args = _native.ConvArgs(
        b, l, c, k, _native.ptr(x), x_bs, x_ts, _native.ptr(w_t), _native.ptr(bias),
        _native.ptr(state), _native.ptr(y), _native.ptr(new_state), int(activation == "silu"),
    )  # fmt: skip
    _native.run("jm_causal_conv1d_f32", args, work=b * l * c * k)
    return y, new_state


def causal_conv1d(x, weight, bias=None, state=None, activation="silu", *, impl: str = "auto"):
    """Dispatch: native C for fp32 CPU inference, the PyTorch reference otherwise."""
    if impl == "auto":
        grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias, state))
        use_native = x.device.type == "cpu" and x.dtype == torch.float32 and not grad and _native.available()
        impl = "native" if use_native else "ref"
    if impl == "native":
        return causal_conv1d_native(x, weight, bias, state, activation)
    if impl == "ref":
        return causal_conv1d_ref(x, weight, bias, state, activation)
    raise UnsupportedError(f"unknown conv implementation {impl!r} (auto, native, ref)")
