"""Quamba2's sort-and-cluster of Mamba2's SSM input channels (the clustering only; the reordering
of the model is :func:`jetmamba.calibration.transforms.reorder_mamba2`).

From the per-channel mean |x| of one layer ([heads * head_dim], heads grouped by SSD group):

1. inside each head, channels are sorted by their statistic (small to large);
2. inside each SSD group, heads are clustered into ``head_groups`` clusters by Ward's agglomerative
   method on their sorted, normalised profiles, and reordered cluster by cluster;
3. inside each head cluster, the sorted channel positions are split into ``dim_groups`` contiguous
   segments minimising the within-segment sum of squares (exactly, by dynamic programming: the
   1-D k-means Quamba2 runs, whose labels it requires to be monotonic).

The result: a channel permutation, a head permutation, and a cluster id per (new) channel; each
cluster gets one int8 scale (Quamba2's [n_groups, head_groups, dim_groups] scales).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Clustering:
    channel_index: torch.Tensor  # [H * P]: new channel i is old channel channel_index[i]
    head_index: torch.Tensor  # [H]: new head j is old head head_index[j]
    cluster: torch.Tensor  # [H * P]: cluster id of each new channel


def ward(points: torch.Tensor, k: int) -> torch.Tensor:
    """Agglomerative clustering with Ward's linkage: cluster labels [n] in 0..k-1, numbered by the
    mean of their points' first coordinate sum (deterministic order)."""
    n = points.shape[0]
    k = min(k, n)
    members = [[i] for i in range(n)]
    centers = [points[i].double() for i in range(n)]
    while len(members) > k:
        best, pair = None, None
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                na, nb = len(members[a]), len(members[b])
                cost = na * nb / (na + nb) * float((centers[a] - centers[b]).pow(2).sum())
                if best is None or cost < best:
                    best, pair = cost, (a, b)
        a, b = pair
        na, nb = len(members[a]), len(members[b])
        centers[a] = (centers[a] * na + centers[b] * nb) / (na + nb)
        members[a] += members.pop(b)
        centers.pop(b)
    order = sorted(
        range(len(members)), key=lambda c: (float(points[members[c]].double().sum(-1).mean()), members[c][0])
    )
    labels = torch.empty(n, dtype=torch.long)
    for new, c in enumerate(order):
        labels[members[c]] = new
    return labels


def contiguous_segments(columns: torch.Tensor, k: int) -> torch.Tensor:
    """Split columns [m, p] (p positions, each a vector of m values) into at most k contiguous
    segments minimising the total squared distance to the segment means; labels [p], monotonic."""
    v = columns.double().t()  # [p, m]
    p = v.shape[0]
    k = min(k, p)
    s1 = torch.cat([torch.zeros(1, v.shape[1], dtype=v.dtype), v.cumsum(0)])
    s2 = torch.cat([torch.zeros(1, dtype=v.dtype), v.pow(2).sum(1).cumsum(0)])

    def cost(a: int, b: int) -> float:  # positions [a, b)
        mean_sum = s1[b] - s1[a]
        return float(s2[b] - s2[a] - mean_sum.pow(2).sum() / (b - a))

    inf = float("inf")
    best = [[inf] * (p + 1) for _ in range(k + 1)]
    cut = [[0] * (p + 1) for _ in range(k + 1)]
    best[0][0] = 0.0
    for j in range(1, k + 1):
        for b in range(j, p + 1):
            for a in range(j - 1, b):
                c = best[j - 1][a] + cost(a, b)
                if c < best[j][b]:
                    best[j][b], cut[j][b] = c, a
    labels = torch.empty(p, dtype=torch.long)
    b = p
    for j in range(k, 0, -1):
        a = cut[j][b]
        labels[a:b] = j - 1
        b = a
    return labels


def sort_and_cluster(
    channel_stat: torch.Tensor, n_heads: int, head_dim: int, n_groups: int, head_groups: int = 4, dim_groups: int = 4
) -> Clustering:
    stat = channel_stat.double().view(n_heads, head_dim)
    dim_order = stat.argsort(dim=1)  # step 1: per-head sort
    sorted_stat = stat.gather(1, dim_order)
    profile = sorted_stat / sorted_stat.norm(dim=1, keepdim=True).clamp_min(1e-12)
    heads_per_group = n_heads // n_groups
    head_index, cluster_of_head_pos, dim_label_of_head_pos = [], [], []
    next_cluster = 0
    for g in range(n_groups):
        heads = torch.arange(g * heads_per_group, (g + 1) * heads_per_group)
        labels = ward(profile[heads], head_groups)  # step 2
        for c in range(int(labels.max()) + 1):
            members = heads[labels == c]
            segments = contiguous_segments(profile[members], dim_groups)  # step 3
            for h in members.tolist():
                head_index.append(h)
                cluster_of_head_pos.append(next_cluster)
                dim_label_of_head_pos.append(segments)
            next_cluster += int(segments.max()) + 1
    head_index_t = torch.tensor(head_index, dtype=torch.long)
    channel_index = (head_index_t[:, None] * head_dim + dim_order[head_index_t]).reshape(-1)
    cluster = torch.stack(
        [base + seg for base, seg in zip(cluster_of_head_pos, dim_label_of_head_pos, strict=True)]
    ).reshape(-1)
    return Clustering(channel_index, head_index_t, cluster)
