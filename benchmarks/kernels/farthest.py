"""Greedy farthest point sampling (K-center): EVFR's frame selection and K-centered patch
sampling's token selection are the same algorithm over different points.

Start from a given point; keep each point's distance to the selected set (its running
minimum); next = the first argmax. Each selected point but the last updates that minimum with
one distance per point, so the work is ``(k - 1) * n * d`` multiply-adds
(:func:`farthest_point_macs`) and the memory O(n * d), where the authors' K-center code
computes the full ``n * n * d`` distance matrix first (:func:`pairwise_distance_macs`).

Distances (monotone forms; the argmax is the same as for the true distance):
``euclidean`` squared, as ``|x|^2 - 2 x.c + |c|^2`` (one matrix-vector product per step, no
(n, d) temporary); ``cosine`` 1 - cos on rows normalised once (EVFR's code computes 1 + cos,
which selects the same point again); ``manhattan``; ``minkowski`` sum |x - c|^p (no root).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

METRICS = ("euclidean", "cosine", "manhattan", "minkowski")


@dataclass(frozen=True)
class Points:
    """Points prepared once for repeated distance queries (norms, normalised rows)."""

    x: torch.Tensor
    metric: str = "euclidean"
    p: float = 2.0
    sq: torch.Tensor | None = None

    @classmethod
    def prepare(cls, x: torch.Tensor, metric: str = "euclidean", p: float = 2.0) -> Points:
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose from {METRICS}")
        if metric == "minkowski" and not p >= 1:
            raise ValueError(f"Minkowski p must be >= 1 (a metric), not {p}")
        if metric == "cosine":
            return cls(torch.nn.functional.normalize(x, dim=-1), metric, p)
        if metric == "euclidean":
            return cls(x, metric, p, x.pow(2).sum(-1))
        return cls(x, metric, p)


def distances_to(pts: Points, i: int) -> torch.Tensor:
    """Distance of every point to point ``i``: n * d multiply-adds."""
    x, c = pts.x, pts.x[i]
    if pts.metric == "euclidean":
        return (pts.sq - 2 * (x @ c) + pts.sq[i]).clamp_min_(0)
    if pts.metric == "cosine":
        return 1 - x @ c
    if pts.metric == "manhattan":
        return (x - c).abs().sum(-1)
    return (x - c).abs().pow(pts.p).sum(-1)


def farthest_point_sampling(x: torch.Tensor, k: int, start, metric: str = "euclidean", p: float = 2.0,
                            distance=distances_to) -> torch.Tensor:
    """Indices of ``k`` points of ``x`` (n, d), in selection order, starting from ``start``:
    one index, or a sequence of distinct indices chosen first in that order (K-center's
    hybrid frames), from which the greedy search continues.

    ``distance`` is the per-point distance function (a parameter so that a test can count
    its calls)."""
    n = x.shape[0]
    k = min(int(k), n)
    starts = [int(s) for s in np.atleast_1d(np.asarray(start, dtype=np.int64))]
    if k <= 0:
        return torch.empty(0, dtype=torch.long)
    if not starts or any(not 0 <= s < n for s in starts) or len(set(starts)) != len(starts):
        raise ValueError(f"start {start} must be distinct indices in 0..{n - 1}")
    if len(starts) >= k:
        return torch.tensor(starts[:k], dtype=torch.long)
    pts = Points.prepare(x, metric, p)
    chosen = torch.empty(k, dtype=torch.long)
    chosen[: len(starts)] = torch.tensor(starts)
    mind = distance(pts, starts[0]).clone()
    for s in starts[1:]:
        torch.minimum(mind, distance(pts, s), out=mind)
    mind[chosen[: len(starts)]] = -1.0  # chosen points never come back, even at distance 0
    for i in range(len(starts), k):
        chosen[i] = int(torch.argmax(mind))  # first maximum on ties
        mind[chosen[i]] = -1.0
        if i < k - 1:
            torch.minimum(mind, distance(pts, int(chosen[i])), out=mind)
    return chosen


def farthest_point_macs(n: int, k: int, d: int) -> int:
    """Multiply-adds of :func:`farthest_point_sampling` on n points of dimension d."""
    k = min(k, n)
    return max(k - 1, 0) * n * d


def pairwise_distance_macs(n: int, m: int, d: int) -> int:
    """Multiply-adds of a full (n, m) distance matrix in dimension d (the authors' cdist)."""
    return n * m * d


def brute_force_farthest(x: torch.Tensor, k: int, start: int, metric: str = "euclidean", p: float = 2.0) -> torch.Tensor:
    """The reference: the full (n, n) distance matrix, then the minimum over the selected set
    recomputed at every step (O(n^2) memory; the authors' approach). For tests and benchmarks."""
    n = x.shape[0]
    k = min(int(k), n)
    if metric == "cosine":
        xn = torch.nn.functional.normalize(x, dim=-1)
        full = 1 - xn @ xn.T
    elif metric == "euclidean":
        full = torch.cdist(x, x).pow(2)
    else:
        full = torch.cdist(x, x, p=1.0 if metric == "manhattan" else p).pow(1.0 if metric == "manhattan" else p)
    chosen = [int(s) for s in np.atleast_1d(np.asarray(start, dtype=np.int64))][:k]
    while len(chosen) < k:
        d = full[chosen].amin(0)
        d[chosen] = -1.0
        chosen.append(int(torch.argmax(d)))
    return torch.tensor(chosen, dtype=torch.long)
