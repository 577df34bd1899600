"""Hadamard matrices, constructed (never pasted), and the fast transform that applies them.

Supported orders n = m * 2^k with m in {1, 12, 20, 28} (so also 40 * 2^k = 20 * 2^(k+1)): every
d_model and d_inner of the released Mamba1/Mamba2 checkpoints (768 = 12 * 64, 2560 = 20 * 128,
5120 = 20 * 256, ...) and their dt_rank (48 = 12 * 4, 160 = 20 * 8).

- 2^k: Sylvester, H_2n = [[H, H], [H, -H]].
- 12, 20: Paley I, q + 1 for a prime q = 3 (mod 4) (q = 11, 19).
- 28: Paley II, 2 (q + 1) for a prime q = 1 (mod 4) (q = 13).
- m * 2^k: the Kronecker product H_m (x) H_2^k; index i = a * 2^k + b with a < m, b < 2^k.

Every H has entries +-1 and H H^T = n I (tested for every supported size up to 16384), so
H / sqrt(n) is orthogonal.
"""

from __future__ import annotations

import functools
import math

import torch

from jetmamba.errors import UnsupportedError

BASE_ORDERS = (1, 12, 20, 28)


def _legendre(a: int, q: int) -> int:
    a %= q
    if a == 0:
        return 0
    return 1 if pow(a, (q - 1) // 2, q) == 1 else -1


def _jacobsthal(q: int) -> list[list[int]]:
    return [[_legendre(j - i, q) for j in range(q)] for i in range(q)]


def _paley1(q: int) -> list[list[int]]:
    """Order q + 1 for a prime q = 3 (mod 4): H = I + S, S = [[0, 1^T], [-1, Q]] skew-symmetric."""
    Q = _jacobsthal(q)
    n = q + 1
    S = [[0] * n for _ in range(n)]
    for j in range(1, n):
        S[0][j], S[j][0] = 1, -1
    for i in range(q):
        for j in range(q):
            S[i + 1][j + 1] = Q[i][j]
    return [[S[i][j] + (1 if i == j else 0) for j in range(n)] for i in range(n)]


def _paley2(q: int) -> list[list[int]]:
    """Order 2 (q + 1) for a prime q = 1 (mod 4): from the symmetric conference matrix
    C = [[0, 1^T], [1, Q]], H = C (x) [[1, -1], [-1, -1]] + I (x) [[1, 1], [1, -1]]."""
    Q = _jacobsthal(q)
    n = q + 1
    C = [[0] * n for _ in range(n)]
    for j in range(1, n):
        C[0][j] = C[j][0] = 1
    for i in range(q):
        for j in range(q):
            C[i + 1][j + 1] = Q[i][j]
    A, B = ((1, -1), (-1, -1)), ((1, 1), (1, -1))
    H = [[0] * (2 * n) for _ in range(2 * n)]
    for i in range(n):
        for j in range(n):
            for a in range(2):
                for b in range(2):
                    H[2 * i + a][2 * j + b] = C[i][j] * A[a][b] + (B[a][b] if i == j else 0)
    return H


@functools.cache
def _base(m: int) -> tuple[tuple[int, ...], ...]:
    if m == 1:
        rows = [[1]]
    elif m == 12:
        rows = _paley1(11)
    elif m == 20:
        rows = _paley1(19)
    elif m == 28:
        rows = _paley2(13)
    else:  # pragma: no cover - BASE_ORDERS is the contract
        raise AssertionError(m)
    return tuple(tuple(r) for r in rows)


def factor(n: int) -> tuple[int, int]:
    """(m, 2^k) with n = m * 2^k and m a base order; UnsupportedError if there is none.

    The odd part of n decides: 1 -> m = 1, 3 -> 12, 5 -> 20, 7 -> 28 (each base is its odd part
    times 4, so n needs at least that power of two).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UnsupportedError(f"Hadamard order must be a positive integer, got {n!r}")
    odd = n // (n & -n)
    base = {1: 1, 3: 12, 5: 20, 7: 28}.get(odd)
    if base is None or n % base:
        raise UnsupportedError(f"no Hadamard matrix of order {n}: supported are 2^k and 12, 20, 28, 40 times 2^k")
    return base, n // base


def is_supported(n: int) -> bool:
    try:
        factor(n)
    except UnsupportedError:
        return False
    return True


def base_matrix(m: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """The m x m block (m in BASE_ORDERS), for kernels that apply it densely."""
    if m not in BASE_ORDERS:
        raise UnsupportedError(f"{m} is not a base Hadamard order {BASE_ORDERS}")
    return torch.tensor(_base(m), dtype=dtype, device=device)


def hadamard_matrix(n: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """The dense n x n matrix with entries +-1 (H H^T = n I). Dense: for tests and small n."""
    m, p = factor(n)
    H = base_matrix(m, dtype, device)
    S = torch.ones(1, 1, dtype=dtype, device=device)
    while S.shape[0] < p:
        S = torch.cat([torch.cat([S, S], 1), torch.cat([S, -S], 1)], 0)
    return torch.kron(H, S)


def _fwht_(x: torch.Tensor) -> torch.Tensor:
    """In-place-style Walsh-Hadamard transform (Sylvester order) over the last dim, unnormalised."""
    n = x.shape[-1]
    h = 1
    lead = x.shape[:-1]
    while h < n:
        x = x.view(*lead, n // (2 * h), 2, h)
        a, b = x[..., 0, :], x[..., 1, :]
        x = torch.stack((a + b, a - b), dim=-2)
        h *= 2
    return x.reshape(*lead, n)


def hadamard_transform(x: torch.Tensor, *, normalize: bool = True, transpose: bool = False) -> torch.Tensor:
    """x @ H^T (or x @ H with ``transpose``) along the last dimension, / sqrt(n) if ``normalize``.

    O(n log n + n m) without forming H: the 2^k factor by the fast Walsh-Hadamard transform
    (Sylvester matrices are symmetric), the m x m base block as a small matmul.
    """
    n = x.shape[-1]
    m, p = factor(n)
    y = _fwht_(x.reshape(*x.shape[:-1], m, p))
    if m > 1:
        Hm = base_matrix(m, dtype=y.dtype, device=y.device)
        # y[..., a, :] <- sum_b H[a, b] y[..., b, :]  (H^T when transposing)
        y = torch.einsum("ab,...bp->...ap", Hm.t() if transpose else Hm, y)
    y = y.reshape(x.shape)
    return y / math.sqrt(n) if normalize else y


def random_signs(n: int, seed: int, dtype=torch.float64, device=None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 2, (n,), generator=g) * 2 - 1).to(dtype=dtype, device=device)


def random_hadamard(n: int, seed: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """Orthogonal R = diag(s) H^T / sqrt(n) with random signs s: x @ R = hadamard_transform(x * s)."""
    s = random_signs(n, seed, dtype, device)
    return s[:, None] * hadamard_matrix(n, dtype, device).t() / math.sqrt(n)
