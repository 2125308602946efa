"""Greedy farthest point sampling against a brute-force version and its MAC formula."""

import numpy as np
import pytest
import torch

from samplerbench.kernels.farthest import (
    METRICS,
    brute_force_farthest,
    choose_algorithm,
    distances_to,
    farthest_point_macs,
    farthest_point_sampling,
)


def brute_force_fps(x: np.ndarray, k: int, start: int, metric: str, p: float = 3.0) -> list[int]:
    """Recompute each point's distance to the whole selected set at every step (pure Python)."""
    def dist(a, b):
        if metric == "euclidean":
            return float(np.sqrt(((a - b) ** 2).sum()))
        if metric == "manhattan":
            return float(np.abs(a - b).sum())
        if metric == "minkowski":
            return float((np.abs(a - b) ** p).sum() ** (1 / p))
        return 1 - float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    chosen = [start]
    while len(chosen) < k:
        best, arg = -1.0, None
        for i in range(len(x)):
            if i in chosen:
                continue
            m = min(dist(x[i], x[j]) for j in chosen)
            if m > best:  # strict: first maximum wins
                best, arg = m, i
        chosen.append(arg)
    return chosen


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("seed", [3, 4])
def test_matches_brute_force(metric, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(40, 5))
    start = int(rng.integers(40))
    got = farthest_point_sampling(torch.from_numpy(x), 12, start=start, metric=metric, p=3.0).tolist()
    assert got == brute_force_fps(x, 12, start, metric)
    # and the full-distance-matrix reference used by the speed benchmark
    assert brute_force_farthest(torch.from_numpy(x), 12, start, metric, p=3.0).tolist() == got


@pytest.mark.parametrize("metric", METRICS)
def test_matches_full_matrix_reference_on_wide_points(metric):
    x = torch.from_numpy(np.random.default_rng(5).normal(size=(300, 64)))
    got = farthest_point_sampling(x, 40, start=11, metric=metric, p=1.5)
    assert got.tolist() == brute_force_farthest(x, 40, 11, metric, p=1.5).tolist()


KERNELS = ("incremental", "full", "torch")


@pytest.mark.parametrize("algorithm", KERNELS)
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [60, 120])  # 120: the transposed layout (TRANSPOSE_MIN_K)
def test_every_kernel_matches_brute_force(algorithm, metric, dtype, k):
    x = np.random.default_rng(8).normal(size=(200, 48)).astype(dtype)
    got = farthest_point_sampling(torch.from_numpy(x), k, start=[7, 3], metric=metric, algorithm=algorithm)
    assert got.tolist() == brute_force_farthest(torch.from_numpy(x.astype(np.float64)), k, [7, 3], metric).tolist()


@pytest.mark.parametrize("algorithm", KERNELS)
def test_integer_points_give_every_kernel_the_brute_force_ties(algorithm):
    """Small integers: every kernel's arithmetic is exact whatever order BLAS sums in, so exact
    ties (many here: 4 levels in 3 dimensions, repeated points) go to the first index, as in the
    pure-Python reference."""
    x = np.random.default_rng(2).integers(0, 4, size=(120, 3)).astype(np.float32)
    got = farthest_point_sampling(torch.from_numpy(x), 40, start=5, algorithm=algorithm).tolist()
    assert got == brute_force_fps(x.astype(np.float64), 40, 5, "euclidean")
    assert len(set(got)) == 40  # repeated points are still chosen once each


def test_auto_chooses_the_full_matrix_only_when_many_points_fit_the_budget():
    assert choose_algorithm(6272, 1568, 771) == "full"  # the ECCV paper's setting: 157 MB
    assert choose_algorithm(10_000, 256, 768) == "incremental"  # few selected: k sweeps are cheaper
    assert choose_algorithm(100_000, 50_000, 512) == "incremental"  # 40 GB matrix: over any budget
    assert choose_algorithm(6272, 1568, 771, full_matrix_bytes=1 << 20) == "incremental"


def test_numpy_kernels_reject_what_they_cannot_compute():
    with pytest.raises(ValueError, match="euclidean or cosine"):
        farthest_point_sampling(torch.randn(5, 2), 2, start=0, metric="manhattan", algorithm="full")
    with pytest.raises(ValueError, match="unknown algorithm"):
        farthest_point_sampling(torch.randn(5, 2), 2, start=0, algorithm="faiss")


def test_cosine_never_reselects_even_for_parallel_points():
    # rows 0-2 point the same way (cos = 1): with EVFR's 1 + cos the chosen row would come back
    x = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    got = farthest_point_sampling(x, 5, start=0, metric="cosine").tolist()
    assert sorted(got) == [0, 1, 2, 3, 4]
    assert got[1] == 3  # the orthogonal row is the farthest from row 0


def test_minkowski_rejects_p_below_one():
    with pytest.raises(ValueError, match="p must be >= 1"):
        farthest_point_sampling(torch.randn(5, 2), 2, start=0, metric="minkowski", p=0.5)


def test_hand_worked_line_with_ties():
    # points on a line: 0, 1, 2, 3, 4 starting at 2: both ends are at distance 4 (squared),
    # the first maximum (index 0) wins; then 4; then 1 and 3 tie at 1: index 1 first.
    x = torch.tensor([[0.0], [1.0], [2.0], [3.0], [4.0]])
    assert farthest_point_sampling(x, 5, start=2).tolist() == [2, 0, 4, 1, 3]


def test_duplicates_are_never_selected_twice():
    x = torch.zeros(4, 3)
    assert sorted(farthest_point_sampling(x, 4, start=1).tolist()) == [0, 1, 2, 3]


@pytest.mark.parametrize("n,k,d", [(10, 1, 3), (10, 4, 3), (50, 50, 7), (5, 9, 2)])
def test_mac_formula_matches_counted_work(n, k, d):
    calls = []

    def counting(pts, i):
        calls.append(pts.x.shape[0] * pts.x.shape[1])  # one multiply-add per point and dimension
        return distances_to(pts, i)

    farthest_point_sampling(torch.randn(n, d), k, start=0, distance=counting)
    assert sum(calls) == farthest_point_macs(n, k, d)
