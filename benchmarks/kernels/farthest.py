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

Kernels (:func:`farthest_point_sampling` chooses; every one gives the brute-force selection,
see *Ties* below):

- ``incremental`` (CPU, euclidean and cosine): numpy and its BLAS, one matrix-vector product
  per step. From ``TRANSPOSE_MIN_K`` selections the points are first copied transposed, (d, n),
  so each step is BLAS's column sweep ``c @ X^T`` (an axpy per dimension into an n-vector that
  stays in cache): 1.01 vs 1.70 ms a step at 10k x 768, one thread; below it the copy (about 25
  row sweeps) does not pay and the rows are swept as given. The copy's cost varies: its fresh
  memory's first-touch page faults took 0.2 to 3.5 s for 200 MB on this VM (the benchmark
  ``test_select[kcenter-T4096]``, 65536 tokens, moves by 2x from run to run for that reason). Written with numpy rather than
  torch: torch's per-step ops ran 1.5-3.7x slower here, its ``x @ c`` being the slow row form
  and its small element-wise ops splitting across threads above 32k elements, which stalls on a
  busy machine; numpy's element-wise ops run on the caller's thread.
- ``full``: the Gram matrix ``X X^T`` in one matrix multiply (compute-bound), then the same
  greedy over its rows. It wins when many points are selected (at the ECCV paper's setting,
  6272 tokens, K = 1568: 574 vs 737 ms, one thread) and is used when ``k >= n / 5`` and the
  (n, n) matrix fits ``full_matrix_bytes`` (256 MiB by default).
- ``torch``: the per-step torch version; any device (the CUDA path), every metric, and a
  ``distance`` function a test can count.

Ties: the first maximum of the *computed* running minimum wins. Two true distances closer
than float rounding (about 1e-7 of |x|^2 in float32) may be computed in either order by
different kernels (BLAS sums in its own order); integer-valued points give every kernel exact
arithmetic, hence the brute force's selection, ties included (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from samplerbench.kernels.threads import blas_threads_for

METRICS = ("euclidean", "cosine", "manhattan", "minkowski")
ALGORITHMS = ("auto", "incremental", "full", "torch")
FULL_MATRIX_BYTES = 256 << 20
FULL_MATRIX_MIN_FRACTION = 0.2  # k / n from which one matrix multiply beats k matrix-vector sweeps
TRANSPOSE_MIN_K = 96  # selections from which the transposed copy pays for itself (about 25 row sweeps)


@dataclass(frozen=True)
class Points:
    """Points prepared once for repeated distance queries (norms, normalised rows)."""

    x: torch.Tensor
    metric: str = "euclidean"
    p: float = 2.0
    sq: torch.Tensor | None = None

    @classmethod
    def prepare(cls, x: torch.Tensor, metric: str = "euclidean", p: float = 2.0) -> Points:
        _check_metric(metric, p)
        if metric == "cosine":
            return cls(torch.nn.functional.normalize(x, dim=-1), metric, p)
        if metric == "euclidean":
            return cls(x, metric, p, x.pow(2).sum(-1))
        return cls(x, metric, p)


def _check_metric(metric: str, p: float) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose from {METRICS}")
    if metric == "minkowski" and not p >= 1:
        raise ValueError(f"Minkowski p must be >= 1 (a metric), not {p}")


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


class _Columns:
    """The numpy kernels' points, in the layout the per-step products read: ``rows`` (the
    points as given: BLAS's row-dot sweep), ``columns`` (a transposed copy (d, n): BLAS's
    column sweep, 1.6-1.8x faster a step, but the copy costs about 25 row sweeps), or ``gram``
    (every product at once); squared norms for the Euclidean form."""

    def __init__(self, x: np.ndarray, metric: str, layout: str):
        if metric == "cosine":
            norms = np.sqrt(np.einsum("ij,ij->i", x, x))
            x = x / np.maximum(norms, np.finfo(x.dtype).tiny)[:, None]  # torch's normalize: x / max(|x|, eps)
        self.x, self.metric = np.ascontiguousarray(x), metric
        self.sq = np.einsum("ij,ij->i", x, x) if metric == "euclidean" else None
        self.xt = np.ascontiguousarray(x.T) if layout != "rows" else None
        self.gram = self.x @ self.xt if layout == "gram" else None
        self.buf = np.empty(x.shape[0], dtype=x.dtype)

    def distances(self, i: int) -> np.ndarray:
        """Distances to point ``i`` into a reused buffer, with the torch kernel's arithmetic order."""
        dot = self.buf
        if self.gram is not None:
            dot[:] = self.gram[i]
        elif self.xt is not None:
            np.dot(self.x[i], self.xt, out=dot)
        else:
            np.dot(self.x, self.x[i], out=dot)
        if self.metric == "cosine":
            np.subtract(1, dot, out=dot)
            return dot
        dot *= -2  # exact: (|x|^2 - 2 x.c) + |c|^2 rounds as the torch form does
        dot += self.sq
        dot += self.sq[i]
        return np.maximum(dot, 0, out=dot)


def choose_algorithm(n: int, k: int, d: int, itemsize: int = 4, full_matrix_bytes: int = FULL_MATRIX_BYTES) -> str:
    """``full`` when many points are selected and the (n, n) matrix fits the budget, else ``incremental``."""
    if k >= FULL_MATRIX_MIN_FRACTION * n and n * n * itemsize <= full_matrix_bytes:
        return "full"
    return "incremental"


def farthest_point_sampling(x: torch.Tensor, k: int, start, metric: str = "euclidean", p: float = 2.0,
                            distance=None, algorithm: str = "auto",
                            full_matrix_bytes: int = FULL_MATRIX_BYTES) -> torch.Tensor:
    """Indices of ``k`` points of ``x`` (n, d), in selection order, starting from ``start``:
    one index, or a sequence of distinct indices chosen first in that order (K-center's
    hybrid frames), from which the greedy search continues.

    ``algorithm``: ``auto`` (the numpy kernels on CPU for euclidean and cosine, chosen by
    :func:`choose_algorithm`; torch otherwise), or one by name. ``distance``: the torch kernel's
    per-point distance function (a parameter so that a test can count its calls)."""
    _check_metric(metric, p)
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; choose from {ALGORITHMS}")
    n = x.shape[0]
    k = min(int(k), n)
    starts = [int(s) for s in np.atleast_1d(np.asarray(start, dtype=np.int64))]
    if k <= 0:
        return torch.empty(0, dtype=torch.long)
    if not starts or any(not 0 <= s < n for s in starts) or len(set(starts)) != len(starts):
        raise ValueError(f"start {start} must be distinct indices in 0..{n - 1}")
    if len(starts) >= k:
        return torch.tensor(starts[:k], dtype=torch.long)
    numpy_ok = x.device.type == "cpu" and metric in ("euclidean", "cosine") and distance is None
    if algorithm == "auto":
        algorithm = (choose_algorithm(n, k, x.shape[1], x.element_size(), full_matrix_bytes) if numpy_ok
                     else "torch")
    if algorithm != "torch":
        if not numpy_ok:
            raise ValueError(f"the {algorithm} kernel takes CPU points in euclidean or cosine distance")
        layout = "gram" if algorithm == "full" else "columns" if k >= TRANSPOSE_MIN_K else "rows"
        macs = n * n * x.shape[1] if layout == "gram" else farthest_point_macs(n, k, x.shape[1])
        with blas_threads_for(macs):
            cols = _Columns(x.detach().numpy(), metric, layout)
            return torch.from_numpy(_greedy(cols.distances, n, k, starts, np.minimum, np.argmax))
    pts = Points.prepare(x, metric, p)
    dist = distance or distances_to
    order = _greedy(lambda i: dist(pts, i), n, k, starts, lambda a, b, out: torch.minimum(a, b, out=out),
                    torch.argmax, like=x)
    return torch.from_numpy(order)


def _greedy(distance, n: int, k: int, starts: list[int], minimum, argmax, like: torch.Tensor | None = None) -> np.ndarray:
    """The greedy loop shared by every kernel: running minimum, first argmax, chosen points at -1."""
    chosen = np.empty(k, dtype=np.int64)
    chosen[: len(starts)] = starts
    mind = distance(starts[0])
    mind = mind.clone() if like is not None else mind.copy()
    for s in starts[1:]:
        minimum(mind, distance(s), out=mind)
    mind[chosen[: len(starts)]] = -1.0  # chosen points never come back, even at distance 0
    for i in range(len(starts), k):
        chosen[i] = c = int(argmax(mind))  # first maximum on ties
        mind[c] = -1.0
        if i < k - 1:
            minimum(mind, distance(c), out=mind)
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
