"""Mamba1 selective scan: a reference that defines it and faster twins with the same signature.

Every implementation takes the same arguments and returns ``(y, h_last)``:

    x:  [b, l, d]  SSM input (the conv output), any float dtype
    dt: [b, l, d]  discretisation step; with ``dt_softplus`` the raw ``dt_proj`` output, made
                   ``softplus(dt + dt_bias)`` inside (dt_bias: [d] or None), as mamba_ssm does
    A:  [d, n]     negative real diagonal (``-exp(A_log)``)
    B:  [b, l, n]  input projection, C: [b, l, n] output projection
    D:  [d] or None  skip connection; z: [b, l, d] or None  gate, ``y *= silu(z)``
    h0: [b, d, n] or None  initial state (zeros when None)

    h[t] = exp(dt[t] A) * h[t-1] + (dt[t] x[t]) B[t]      (per channel d, state n)
    y[t] = (h[t] C[t] + D x[t]) * silu(z[t])

y is fp32 [b, l, d], h_last fp32 [b, d, n]. Maths is fp32 (fp64 when the inputs are fp64, for
the reference).

- :func:`selective_scan_ref`: a loop of :func:`selective_state_update`, slow; the definition.
- :func:`selective_scan_native`: C on the CPU (``native/scan_cpu.c``), threaded over channels.
- :func:`selective_scan_parallel`: log-depth (Hillis-Steele) scan in PyTorch, any device,
  differentiable; what training and GPUs without mamba_ssm use.
- :func:`selective_scan_mamba_ssm`: mamba_ssm's CUDA kernel, where it is installed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from jetmamba.calibration.functional import _native
from jetmamba.errors import UnsupportedError

IMPLS = ("auto", "ref", "native", "parallel", "mamba_ssm")


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _discretise(dt, dt_bias, dt_softplus, f):
    dt = dt.to(f)
    if dt_bias is not None:
        dt = dt + dt_bias.to(f)
    return F.softplus(dt) if dt_softplus else dt


def selective_state_update(x, dt, A, B, C, D=None, z=None, h=None, dt_bias=None, dt_softplus=False):
    """One recurrence step: the decode path.

    x, dt, z: [b, d]; A: [d, n]; B, C: [b, n]; D, dt_bias: [d]; h: [b, d, n] (zeros when None).
    Returns (y [b, d], h_new [b, d, n]) in the compute dtype; ``h`` is not modified.
    """
    f = _compute_dtype(x)
    dt = _discretise(dt, dt_bias, dt_softplus, f)
    x, A, B, C = (t.to(f) for t in (x, A, B, C))
    if h is None:
        h = x.new_zeros(x.shape[0], A.shape[0], A.shape[1])
    h = torch.exp(dt.unsqueeze(-1) * A) * h.to(f) + (dt * x).unsqueeze(-1) * B.unsqueeze(1)
    y = torch.einsum("bdn,bn->bd", h, C)
    if D is not None:
        y = y + D.to(f) * x
    if z is not None:
        y = y * F.silu(z.to(f))
    return y, h


def selective_scan_ref(x, dt, A, B, C, D=None, z=None, h0=None, dt_bias=None, dt_softplus=False):
    """Sequential reference (see the module docstring for shapes)."""
    h = h0
    ys = []
    for t in range(x.shape[1]):
        y, h = selective_state_update(
            x[:, t], dt[:, t], A, B[:, t], C[:, t], D, None if z is None else z[:, t], h, dt_bias, dt_softplus
        )
        ys.append(y)
    if h is None:  # l == 0
        h = x.new_zeros(x.shape[0], *A.shape).to(_compute_dtype(x))
    return torch.stack(ys, dim=1) if ys else x.new_zeros(x.shape).to(h.dtype), h


def selective_scan_parallel(x, dt, A, B, C, D=None, z=None, h0=None, dt_bias=None, dt_softplus=False):
    """Log-depth scan of (decay, input) pairs; O(l log l) work, stable (decays multiply, never divide)."""
    f = _compute_dtype(x)
    dt = _discretise(dt, dt_bias, dt_softplus, f)
    x, A, B, C = (t.to(f) for t in (x, A, B, C))
    a = torch.exp(dt.unsqueeze(-1) * A)  # [b, l, d, n]
    h = (dt * x).unsqueeze(-1) * B.unsqueeze(2)
    if h0 is not None:
        h = torch.cat([h[:, :1] + a[:, :1] * h0.to(f).unsqueeze(1), h[:, 1:]], dim=1)
    length, shift = x.shape[1], 1
    while shift < length:
        h = torch.cat([h[:, :shift], h[:, shift:] + a[:, shift:] * h[:, :-shift]], dim=1)
        if shift * 2 < length:
            a = torch.cat([a[:, :shift], a[:, shift:] * a[:, :-shift]], dim=1)
        shift *= 2
    y = torch.einsum("bldn,bln->bld", h, C)
    if D is not None:
        y = y + D.to(f) * x
    if z is not None:
        y = y * F.silu(z.to(f))
    h_last = h[:, -1] if length else (h0.to(f) if h0 is not None else x.new_zeros(x.shape[0], *A.shape))
    return y, h_last


def selective_scan_native(x, dt, A, B, C, D=None, z=None, h0=None, dt_bias=None, dt_softplus=False):
    """The C recurrence (fp32, CPU); same results as the reference within fp32 rounding."""
    if not _native.available():
        raise UnsupportedError("the native CPU scan is unavailable (no C compiler, or JETMAMBA_NATIVE=0)")
    if x.device.type != "cpu":
        raise UnsupportedError(f"the native scan runs on the CPU; these tensors are on {x.device}")
    b, l, d = x.shape
    n = A.shape[1]
    x, x_bs, x_ts = _native.rows(x)
    dt, dt_bs, dt_ts = _native.rows(dt)
    B, B_bs, B_ts = _native.rows(B)
    C, C_bs, C_ts = _native.rows(C)
    if z is not None:
        z, z_bs, z_ts = _native.rows(z)
    else:
        z_bs = z_ts = 0
    A_t = A.to(torch.float32).t().contiguous()
    D = None if D is None else D.to(torch.float32).contiguous()
    dt_bias = None if dt_bias is None else dt_bias.to(torch.float32).contiguous()
    y = torch.empty(b, l, d, dtype=torch.float32)
    h = (torch.zeros(b, d, n) if h0 is None else h0.to(torch.float32)).clone(memory_format=torch.contiguous_format)
    args = _native.Scan1Args(
        b, l, d, n,
        _native.ptr(x), x_bs, x_ts, _native.ptr(dt), dt_bs, dt_ts, _native.ptr(dt_bias), int(dt_softplus),
        _native.ptr(z), z_bs, z_ts,
        _native.ptr(B), B_bs, B_ts, _native.ptr(C), C_bs, C_ts,
        _native.ptr(A_t), _native.ptr(D), _native.ptr(y), y.stride(0), y.stride(1), _native.ptr(h),
    )  # fmt: skip
    _native.run("jm_selective_scan_f32", args, work=b * l * d * n)
    return y, h


def selective_scan_mamba_ssm(x, dt, A, B, C, D=None, z=None, h0=None, dt_bias=None, dt_softplus=False):
    """mamba_ssm's fused CUDA scan (channel-major layout); it cannot start from a state."""
    if h0 is not None:
        raise UnsupportedError("mamba_ssm's selective_scan_fn cannot start from an initial state")
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError as exc:
        raise UnsupportedError("mamba_ssm is not installed (pip install 'jetmamba[gpu]')") from exc
    # [b, l, c] -> [b, c, l], fp32 throughout (the kernel wants u, delta and z in one dtype)
    t = lambda v: v.float().transpose(1, 2).contiguous()  # noqa: E731
    y, h = selective_scan_fn(
        t(x), t(dt), A.float(), t(B), t(C), None if D is None else D.float(),
        None if z is None else t(z), None if dt_bias is None else dt_bias.float(),
        delta_softplus=dt_softplus, return_last_state=True,
    )  # fmt: skip
    return y.transpose(1, 2).float(), h.float()


def _mamba_ssm_available() -> bool:
    try:
        import mamba_ssm.ops.selective_scan_interface  # noqa: F401
    except ImportError:
        return False
    return True


def _needs_grad(*ts) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in ts)


def selective_scan(x, dt, A, B, C, D=None, z=None, h0=None, dt_bias=None, dt_softplus=False, *, impl="auto"):
    """Dispatch to an implementation; ``auto`` picks native C on the CPU, mamba_ssm on CUDA where
    installed (and no initial state), the PyTorch parallel scan otherwise. For autograd it picks
    the step loop on the CPU (the log-depth scan moves O(l log l) state there) and the parallel
    scan on GPUs."""
    if impl == "auto":
        if _needs_grad(x, dt, A, B, C, D, z, h0, dt_bias):
            impl = "ref" if x.device.type == "cpu" else "parallel"
        elif x.device.type == "cpu" and _native.available():
            impl = "native"
        elif x.device.type == "cuda" and h0 is None and _mamba_ssm_available():
            impl = "mamba_ssm"
        else:
            impl = "parallel"
    try:
        fn = _IMPL[impl]
    except KeyError:
        raise UnsupportedError(f"unknown scan implementation {impl!r}; choose from {', '.join(IMPLS)}") from None
    return fn(x, dt, A, B, C, D, z, h0, dt_bias, dt_softplus)


_IMPL = {
    "ref": selective_scan_ref,
    "native": selective_scan_native,
    "parallel": selective_scan_parallel,
    "mamba_ssm": selective_scan_mamba_ssm,
}
