"""Mamba2 state-space recurrence (SSD): a reference that defines it and faster twins.

Every implementation takes the same arguments and returns ``(y, h_last)``:

    x:  [b, l, H, P]  SSM input per head (conv output), any float dtype
    dt: [b, l, H]     step, already ``clamp(softplus(dt + dt_bias), *dt_limit)``
    A:  [H]           negative scalar decay per head (``-exp(A_log)``)
    B:  [b, l, G, N]  input projection per SSD group; C: [b, l, G, N] output projection
    D:  [H] or None   skip connection
    h0: [b, H, P, N] or None  initial state (zeros when None)

    head h reads group g = h // (H / G):
    h[t] = exp(dt[t] A) h[t-1] + (dt[t] x[t]) B[t, g]^T
    y[t] = h[t] C[t, g] + D x[t]

y is fp32 [b, l, H, P], h_last fp32 [b, H, P, N] (fp64 for fp64 inputs to the reference). The
gate and gated RMSNorm come after, outside the scan.

- :func:`ssd_scan_ref`: a loop of :func:`ssd_state_update`; the definition.
- :func:`ssd_scan_native`: C on the CPU, threaded over heads.
- :func:`ssd_scan_chunked`: the chunked SSD algorithm in PyTorch (intra-chunk as masked
  matmuls, states passed between chunks), any device, differentiable.
"""

from __future__ import annotations

import torch

from jetmamba.calibration.functional import _native
from jetmamba.errors import UnsupportedError

IMPLS = ("auto", "ref", "native", "chunked")


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _per_head(t: torch.Tensor, heads: int) -> torch.Tensor:
    """[..., G, N] -> [..., H, N]: each head sees its group's row."""
    return t.repeat_interleave(heads // t.shape[-2], dim=-2)


def ssd_state_update(x, dt, A, B, C, D=None, h=None):
    """One recurrence step: the decode path.

    x: [b, H, P]; dt: [b, H]; A: [H]; B, C: [b, G, N]; D: [H]; h: [b, H, P, N] (zeros when None).
    Returns (y [b, H, P], h_new [b, H, P, N]); ``h`` is not modified.
    """
    f = _compute_dtype(x)
    x, dt, A, B, C = (t.to(f) for t in (x, dt, A, B, C))
    heads = x.shape[1]
    if h is None:
        h = x.new_zeros(*x.shape, B.shape[-1])
    decay = torch.exp(dt * A)[..., None, None]
    h = decay * h.to(f) + (dt.unsqueeze(-1) * x).unsqueeze(-1) * _per_head(B, heads).unsqueeze(2)
    y = torch.einsum("bhpn,bhn->bhp", h, _per_head(C, heads))
    if D is not None:
        y = y + D.to(f).unsqueeze(-1) * x
    return y, h


def ssd_scan_ref(x, dt, A, B, C, D=None, h0=None):
    """Sequential reference (see the module docstring for shapes)."""
    h = h0
    ys = []
    for t in range(x.shape[1]):
        y, h = ssd_state_update(x[:, t], dt[:, t], A, B[:, t], C[:, t], D, h)
        ys.append(y)
    if h is None:  # l == 0
        h = x.new_zeros(x.shape[0], x.shape[2], x.shape[3], B.shape[-1]).to(_compute_dtype(x))
    return torch.stack(ys, dim=1) if ys else x.new_zeros(x.shape).to(h.dtype), h


def ssd_scan_chunked(x, dt, A, B, C, D=None, h0=None, chunk_size: int = 64):
    """Chunked SSD: exact (no approximation), O(l * chunk) work for the intra-chunk part.

    Heads are viewed as (group, head-in-group) so B and C are never copied per head. Padding
    the sequence with dt = 0 leaves the state untouched, so h_last is the true final state.
    """
    f = _compute_dtype(x)
    b, length, H, P = x.shape
    G, N = B.shape[-2:]
    K, T = H // G, chunk_size
    pad = (-length) % T
    x, dt, A, B, C = (t.to(f) for t in (x, dt, A, B, C))
    if pad:
        x, B, C = (torch.nn.functional.pad(t, (0, 0, 0, 0, 0, pad)) for t in (x, B, C))
        dt = torch.nn.functional.pad(dt, (0, 0, 0, pad))
    nc = (length + pad) // T
    xdt = (x * dt.unsqueeze(-1)).view(b, nc, T, G, K, P)
    acum = (dt * A).view(b, nc, T, G, K).cumsum(dim=2)  # log-decay from chunk start
    Bc = B.view(b, nc, T, G, N)
    Cc = C.view(b, nc, T, G, N)

    # within chunks: y[t] = sum_{s<=t} (C[t].B[s]) exp(acum[t] - acum[s]) xdt[s]
    seg = acum.permute(0, 1, 3, 4, 2)  # [b, c, G, K, T]
    causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
    decay = torch.exp((seg.unsqueeze(-1) - seg.unsqueeze(-2)).masked_fill(~causal, float("-inf")))
    scores = torch.einsum("bctgn,bcsgn->bcgts", Cc, Bc).unsqueeze(3) * decay  # [b, c, G, K, T, S]
    y = torch.einsum("bcgkts,bcsgkp->bctgkp", scores, xdt)

    # each chunk's contribution to the state at its end
    to_end = torch.exp(acum[:, :, -1:] - acum)  # [b, c, T, G, K]
    chunk_states = torch.einsum("bctgn,bctgk,bctgkp->bcgkpn", Bc, to_end, xdt)

    # states passed between chunks (nc steps), and their effect inside each chunk
    h = x.new_zeros(b, G, K, P, N) if h0 is None else h0.to(f).reshape(b, G, K, P, N)
    y_off = []
    for c in range(nc):
        y_off.append(torch.einsum("btgn,bgkpn->btgkp", Cc[:, c], h) * torch.exp(acum[:, c]).unsqueeze(-1))
        h = torch.exp(acum[:, c, -1])[..., None, None] * h + chunk_states[:, c]
    if y_off:
        y = y + torch.stack(y_off, dim=1)
    y = y.reshape(b, nc * T, H, P)[:, :length]
    if D is not None:
        y = y + D.to(f).unsqueeze(-1) * x[:, :length]
    return y, h.reshape(b, H, P, N)


def ssd_scan_native(x, dt, A, B, C, D=None, h0=None):
    """The C recurrence (fp32, CPU); same results as the reference within fp32 rounding."""
    if not _native.available():
        raise UnsupportedError("the native CPU scan is unavailable (no C compiler, or JETMAMBA_NATIVE=0)")
    if x.device.type != "cpu":
        raise UnsupportedError(f"the native scan runs on the CPU; these tensors are on {x.device}")
    b, length, H, P = x.shape
    G, N = B.shape[-2:]
    x3, x_bs, x_ts = _native.rows(_rows_view(x))
    dt, dt_bs, dt_ts = _native.rows(dt)
    B3, B_bs, B_ts = _native.rows(_rows_view(B))
    C3, C_bs, C_ts = _native.rows(_rows_view(C))
    A = A.to(torch.float32).contiguous()
    D = None if D is None else D.to(torch.float32).contiguous()
    y = torch.empty(b, length, H, P, dtype=torch.float32)
    h = (torch.zeros(b, H, P, N) if h0 is None else h0.to(torch.float32)).clone(memory_format=torch.contiguous_format)
    args = _native.SSDArgs(
        b, length, H, P, G, N,
        _native.ptr(x3), x_bs, x_ts, _native.ptr(dt), dt_bs, dt_ts,
        _native.ptr(B3), B_bs, B_ts, _native.ptr(C3), C_bs, C_ts,
        _native.ptr(A), _native.ptr(D), _native.ptr(y), y.stride(0), y.stride(1), _native.ptr(h),
    )  # fmt: skip
    _native.run("jm_ssd_scan_f32", args, work=b * length * H * P * N)
    return y, h


def _rows_view(t: torch.Tensor) -> torch.Tensor:
    """[b, l, X, Y] -> [b, l, X*Y] without a copy where the last two dims are packed."""
    if t.stride(-1) == 1 and t.stride(-2) == t.shape[-1]:
        return t.flatten(2)
    return t.contiguous().flatten(2)


def _needs_grad(*ts) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in ts)


def ssd_scan(x, dt, A, B, C, D=None, h0=None, *, impl: str = "auto", chunk_size: int = 64):
    """Dispatch: native C on the CPU, the chunked PyTorch algorithm elsewhere and for autograd."""
    if impl == "auto":
        if x.device.type == "cpu" and _native.available() and not _needs_grad(x, dt, A, B, C, D, h0):
            impl = "native"
        else:
            impl = "chunked"
    if impl == "chunked":
        return ssd_scan_chunked(x, dt, A, B, C, D, h0, chunk_size=chunk_size)
    if impl == "native":
        return ssd_scan_native(x, dt, A, B, C, D, h0)
    if impl == "ref":
        return ssd_scan_ref(x, dt, A, B, C, D, h0)
    raise UnsupportedError(f"unknown SSD implementation {impl!r}; choose from {', '.join(IMPLS)}")
