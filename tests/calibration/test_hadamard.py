"""Hadamard matrices: H H^T = n I for every supported order up to 16384, and the fast transform."""

from __future__ import annotations

import math

import pytest
import torch

from jetmamba.calibration.hadamard import (
    BASE_ORDERS,
    base_matrix,
    factor,
    hadamard_matrix,
    hadamard_transform,
    is_supported,
    random_hadamard,
)
from jetmamba.errors import UnsupportedError

SUPPORTED = sorted({m * 2**k for m in (1, 12, 20, 28, 40) for k in range(15) if m * 2**k <= 16384})
DENSE_LIMIT = 2048  # dense H H^T up to here; above, exact probes through the fast transform


def test_supported_list_covers_mamba_shapes():
    for n in (768, 1536, 2048, 2560, 4096, 5120, 48, 64, 96, 128, 160, 384, 192, 16, 32, 64, 128):
        assert is_supported(n), n
    for n in (3, 6, 10, 36, 44, 100, 1000):
        assert not is_supported(n)
        with pytest.raises(UnsupportedError, match="no Hadamard matrix"):
            factor(n)


@pytest.mark.parametrize("m", BASE_ORDERS)
def test_base_blocks(m):
    H = base_matrix(m)
    assert set(H.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(H @ H.t(), m * torch.eye(m, dtype=H.dtype))


@pytest.mark.parametrize("n", [n for n in SUPPORTED if n <= DENSE_LIMIT])
def test_dense_orthogonality_and_fast_transform(n):
    H = hadamard_matrix(n)
    assert torch.equal(H @ H.t(), n * torch.eye(n, dtype=H.dtype))
    x = torch.randn(3, n, dtype=torch.float64)
    torch.testing.assert_close(hadamard_transform(x, normalize=False), x @ H.t())
    torch.testing.assert_close(hadamard_transform(x, normalize=False, transpose=True), x @ H)


@pytest.mark.parametrize("n", [n for n in SUPPORTED if n > DENSE_LIMIT])
def test_large_orders_are_orthogonal(n):
    """H H^T = n I checked exactly on integer probes: H^T (H v) = n v for unit and random +-1 v,
    through the fast transform (integer arithmetic in float64 is exact at these sizes)."""
    probes = torch.cat([torch.eye(n, dtype=torch.float64)[:: max(1, n // 64)],
                        torch.randint(0, 2, (8, n)).double() * 2 - 1])  # fmt: skip
    hv = hadamard_transform(probes, normalize=False)  # v H^T
    back = hadamard_transform(hv, normalize=False, transpose=True)  # (v H^T) H = v H^T H
    assert torch.equal(back, n * probes)
    assert set(hv[0].unique().tolist()) <= {-1.0, 1.0}  # a row of H is +-1


def test_normalized_transform_is_orthogonal():
    x = torch.randn(4, 768, dtype=torch.float64)
    y = hadamard_transform(x)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(hadamard_transform(y, transpose=True), x)


def test_random_hadamard_is_orthogonal_and_seeded():
    R = random_hadamard(96, seed=3)
    torch.testing.assert_close(R @ R.t(), torch.eye(96, dtype=R.dtype))
    assert torch.equal(R, random_hadamard(96, seed=3)) and not torch.equal(R, random_hadamard(96, seed=4))
    assert math.isclose(float(R.abs().max()), 1 / math.sqrt(96))
