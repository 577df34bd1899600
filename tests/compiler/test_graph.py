"""GraphBuilder helpers that lower to standard ops, run through ONNX Runtime against torch."""

from __future__ import annotations

import pytest
import torch
from graph_runs import session

from jetmamba.calibration.hadamard import hadamard_transform
from jetmamba.compiler.graph import BATCH, SEQ, GraphBuilder


@pytest.mark.parametrize("n", [64, 1536, 160])  # 2^k, 12 * 2^7 (mamba-790m's d_model), 20 * 2^3
def test_hadamard_equals_the_transform(n):
    g = GraphBuilder("hadamard", float_dtype=torch.float32)
    x = g.input("x", torch.float32, (BATCH, SEQ, n))
    once = g.hadamard(x, n)
    g.output(g.hadamard(once, n), "twice", torch.float32, (BATCH, SEQ, n))  # the second reuses the matrices
    g.output(once, "once", torch.float32, (BATCH, SEQ, n))
    xs = torch.randn(2, 3, n, generator=torch.Generator().manual_seed(0))
    model = g.model()
    twice, once = session(model).run(None, {"x": xs.numpy()})
    want = hadamard_transform(xs.double())
    torch.testing.assert_close(torch.from_numpy(once), want.float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.from_numpy(twice), hadamard_transform(want).float(), rtol=1e-5, atol=1e-5)
    assert sum(name.startswith(f"hadamard.{n}.") for name in model.graph.initializers) == (1 if n == 64 else 2)
