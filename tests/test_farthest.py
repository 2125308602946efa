"""Greedy farthest point sampling against a brute-force version and its MAC formula."""

import numpy as np
import pytest
import torch

from samplerbench.farthest import distances_to, farthest_point_macs, farthest_point_sampling


def brute_force_fps(x: np.ndarray, k: int, start: int, metric: str) -> list[int]:
    """Recompute each point's distance to the whole selected set at every step."""
    def dist(a, b):
        if metric == "euclidean":
            return float(((a - b) ** 2).sum())
        if metric == "manhattan":
            return float(np.abs(a - b).sum())
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


@pytest.mark.parametrize("metric", ["euclidean", "manhattan", "cosine"])
def test_matches_brute_force(metric):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 5))
    got = farthest_point_sampling(torch.from_numpy(x), 12, start=7, metric=metric).tolist()
    assert got == brute_force_fps(x, 12, 7, metric)


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

    def counting(x, c, metric):
        calls.append(x.shape[0] * x.shape[1])  # one multiply-add per point and dimension
        return distances_to(x, c, metric)

    farthest_point_sampling(torch.randn(n, d), k, start=0, distance=counting)
    assert sum(calls) == farthest_point_macs(n, k, d)
