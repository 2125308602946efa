"""Greedy farthest point sampling (K-center): EVFR's frame selection and K-centered patch
sampling's token selection are the same algorithm over different points.

Start from a given point; keep each point's distance to the selected set (its running
minimum); next = the first argmax. Each selected point but the last updates that minimum with
one distance per point, so the work is ``(k - 1) * n * d`` multiply-adds
(:func:`farthest_point_macs`), where the authors' K-center code computes the full
``n * n * d`` distance matrix first (:func:`pairwise_distance_macs`).
"""

from __future__ import annotations

import torch

METRICS = ("euclidean", "cosine", "manhattan")


def distances_to(x: torch.Tensor, c: torch.Tensor, metric: str = "euclidean") -> torch.Tensor:
    """Distance of every row of ``x`` (n, d) to one point ``c`` (d,): n * d multiply-adds."""
    if metric == "euclidean":
        return (x - c).pow(2).sum(-1)  # squared: same argmax, no sqrt
    if metric == "cosine":  # 1 - cos (EVFR's code computes 1 + cos, which reselects points)
        return 1 - torch.nn.functional.normalize(x, dim=-1) @ torch.nn.functional.normalize(c, dim=0)
    if metric == "manhattan":
        return (x - c).abs().sum(-1)
    raise ValueError(f"unknown metric {metric!r}; choose from {METRICS}")


def farthest_point_sampling(x: torch.Tensor, k: int, start: int, metric: str = "euclidean",
                            distance=distances_to) -> torch.Tensor:
    """Indices of ``k`` points of ``x`` (n, d), in selection order, starting from ``start``.

    ``distance`` is the per-point distance function (a parameter so that a test can count
    its calls)."""
    n = x.shape[0]
    k = min(int(k), n)
    if k <= 0:
        return torch.empty(0, dtype=torch.long)
    chosen = torch.empty(k, dtype=torch.long)
    chosen[0] = int(start)
    if k == 1:
        return chosen
    mind = distance(x, x[chosen[0]], metric)
    for i in range(1, k):
        mind[chosen[i - 1]] = -1.0  # chosen points never come back, even at distance 0
        chosen[i] = int(torch.argmax(mind))  # first maximum on ties
        if i < k - 1:
            mind = torch.minimum(mind, distance(x, x[chosen[i]], metric))
    return chosen


def farthest_point_macs(n: int, k: int, d: int) -> int:
    """Multiply-adds of :func:`farthest_point_sampling` on n points of dimension d."""
    k = min(k, n)
    return max(k - 1, 0) * n * d


def pairwise_distance_macs(n: int, m: int, d: int) -> int:
    """Multiply-adds of a full (n, m) distance matrix in dimension d (the authors' cdist)."""
    return n * m * d
