"""Random inputs of the scans, shared by the CPU and GPU tiers' tests."""

from __future__ import annotations

import torch


def selective_scan_inputs(b, l, d, n, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    return dict(
        x=r(b, l, d), dt=r(b, l, d) - 1.0, A=-torch.rand(d, n, generator=g, dtype=dtype) * 8,
        B=r(b, l, n), C=r(b, l, n), D=r(d), z=r(b, l, d), h0=r(b, d, n), dt_bias=r(d) * 0.5,
    )  # fmt: skip


def ssd_inputs(b, l, H, P, G, N, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    return dict(
        x=r(b, l, H, P), dt=torch.rand(b, l, H, generator=g, dtype=dtype) * 0.5,
        A=-torch.rand(H, generator=g, dtype=dtype) * 4, B=r(b, l, G, N), C=r(b, l, G, N), D=r(H), h0=r(b, H, P, N),
    )  # fmt: skip
