"""Observers: streaming statistics equal the statistic of everything observed at once."""

from __future__ import annotations

import pytest
import torch

from jetmamba.calibration.observers import AbsMax, ChannelMeanAbs, Covariance, Percentile
from jetmamba.errors import DataError


def _chunks(seed=0, n=7, shape=(33, 16)):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g) * (1 + 5 * (i == 3)) for i in range(n)]


def test_absmax_per_tensor_and_channel():
    chunks = _chunks()
    whole = torch.cat(chunks)
    t, c = AbsMax(), AbsMax(per_channel=True)
    for x in chunks:
        t.update(x)
        c.update(x)
    assert float(t.result()) == float(whole.abs().max())
    assert torch.equal(c.result().float(), whole.abs().amax(0))


@pytest.mark.parametrize("alpha", [0.5, 0.9, 0.9995, 0.99999])
@pytest.mark.parametrize("shape", [(33, 16), (5, 7, 3), (1000,)])
def test_percentile_is_exact(alpha, shape):
    chunks = _chunks(seed=1, shape=shape)
    whole = torch.cat([x.reshape(-1) for x in chunks]).abs().double()
    obs = Percentile(alpha, total=whole.numel())
    for x in chunks:
        obs.update(x)
    assert float(obs.result()) == pytest.approx(float(torch.quantile(whole, alpha)), rel=1e-6, abs=0)
    assert obs.top.numel() <= obs.keep  # memory bounded by the tail


def test_percentile_memory_is_the_tail_only():
    obs = Percentile(0.9995, total=200 * 5000)
    for _ in range(200):
        obs.update(torch.randn(5000))
    assert obs.top.numel() == 501
    assert 3.0 < float(obs.result()) < 4.0  # |N(0,1)| 99.95th percentile is ~3.48


def test_percentile_count_is_checked():
    obs = Percentile(0.99, total=10)
    obs.update(torch.randn(4))
    with pytest.raises(ValueError, match="4 values, 10 were announced"):
        obs.result()
    with pytest.raises(ValueError, match="more than the 10 announced"):
        obs.update(torch.randn(7))


def test_mean_abs_and_covariance():
    chunks = _chunks(seed=2)
    whole = torch.cat(chunks).double()
    m, c = ChannelMeanAbs(), Covariance()
    for x in chunks:
        m.update(x)
        c.update(x)
    torch.testing.assert_close(m.result(), whole.abs().mean(0))
    torch.testing.assert_close(c.second_moment(), whole.t() @ whole / whole.shape[0])
    torch.testing.assert_close(c.covariance(), torch.cov(whole.t(), correction=0))


@pytest.mark.parametrize(
    "observer",
    [AbsMax("layers.3.mixer.x"), Percentile(0.9, 4, "layers.3.mixer.x"), ChannelMeanAbs("layers.3.mixer.x"),
     Covariance("layers.3.mixer.x")],
)  # fmt: skip
@pytest.mark.parametrize("bad,kind", [(float("nan"), "NaN"), (float("inf"), "Inf"), (float("-inf"), "Inf")])
def test_non_finite_is_named(observer, bad, kind):
    with pytest.raises(DataError, match=f"^layers.3.mixer.x has {kind} "):
        observer.update(torch.tensor([[1.0, 2.0], [3.0, bad]]))
