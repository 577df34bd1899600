"""Quamba2's sort-and-cluster: clustering correctness and the reordering's invariance."""

from __future__ import annotations

import itertools

import pytest
import torch

from jetmamba.calibration.checkpoint import load_model
from jetmamba.calibration.cluster import contiguous_segments, sort_and_cluster, ward
from jetmamba.calibration.transforms import reorder_mamba2
from jetmamba.errors import UnsupportedError


def test_ward_finds_obvious_clusters():
    pts = torch.tensor([[0.0], [0.1], [5.0], [5.1], [9.9], [10.0]])
    labels = ward(pts, 3)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert ward(pts, 10).unique().numel() == 6  # k above n: every point alone


def test_contiguous_segments_is_optimal():
    g = torch.Generator().manual_seed(0)
    cols = torch.rand(3, 9, generator=g).cumsum(1)  # monotone profiles, as sorted channels are

    def cost(labels):
        v = cols.double().t()
        return sum(float((v[labels == j] - v[labels == j].mean(0)).pow(2).sum()) for j in labels.unique())

    labels = contiguous_segments(cols, 4)
    assert bool((labels[1:] >= labels[:-1]).all()) and labels.unique().numel() == 4
    best = min(
        cost(torch.tensor([sum(i >= c for c in cuts) for i in range(9)]))
        for cuts in itertools.combinations(range(1, 9), 3)
    )
    assert cost(labels) == pytest.approx(best)


def test_sort_and_cluster_structure():
    H, P, G = 12, 8, 2
    stat = torch.rand(H * P, generator=torch.Generator().manual_seed(1))
    cl = sort_and_cluster(stat, H, P, G)
    assert sorted(cl.channel_index.tolist()) == list(range(H * P))
    assert sorted(cl.head_index.tolist()) == list(range(H))
    # heads stay in their SSD group; channels stay in their head; a cluster is (head group,
    # channel segment): inside a head the ids rise, heads of one head group are adjacent
    assert all(h // (H // G) == j // (H // G) for j, h in enumerate(cl.head_index.tolist()))
    assert bool((cl.channel_index.view(H, P) // P == cl.head_index[:, None]).all())
    per_head = cl.cluster.view(H, P)
    assert bool((per_head[:, 1:] >= per_head[:, :-1]).all())
    first = [k for k, _ in itertools.groupby(per_head[:, 0].tolist())]
    assert len(first) == len(set(first))
    assert cl.cluster.unique().numel() <= G * 4 * 4
    # inside a head the channels are sorted by their statistic
    s = stat[cl.channel_index].view(H, P)
    assert bool((s[:, 1:] >= s[:, :-1]).all())


def test_reorder_preserves_function_and_state_continuity(mamba2_fixture, mamba1_fixture):
    model = load_model(mamba2_fixture)
    c = model.config
    g = torch.Generator().manual_seed(2)
    cls = [sort_and_cluster(torch.rand(c.d_inner, generator=g), c.n_heads, c.head_dim, c.n_groups)
           for _ in model.layers]  # fmt: skip
    reordered = reorder_mamba2(model, cls)
    ids = torch.randint(0, 256, (2, 50), generator=g)
    with torch.no_grad():
        ref = model(ids)
        out = reordered(ids)
        _, st = reordered.prefill(ids[:, :20])
        second, _ = reordered.prefill(ids[:, 20:], st)
    assert float((out - ref).abs().max()) <= 1e-4 * float(ref.abs().max())
    assert float((second - ref[:, 20:]).abs().max()) <= 1e-4 * float(ref.abs().max())
    assert reordered.layers[0].mixer.x_clusters is not None
    with pytest.raises(UnsupportedError, match="reorders Mamba2"):
        reorder_mamba2(load_model(mamba1_fixture), cls)
