"""Every metric against an independent implementation (sklearn or a brute-force loop), ties included."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, balanced_accuracy_score, top_k_accuracy_score

from samplerbench.metrics import classification as metrics


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("k", [1, 2, 5])
def test_top_k_matches_sklearn(ties, k):
    rng = np.random.default_rng(k + 10 * ties)
    scores = rng.random((200, 7))
    if ties:
        scores = np.round(scores * 3) / 3  # many exact ties
    labels = rng.integers(0, 7, 200)
    ours = metrics.top_k_accuracy(scores, labels, (k,))[0]
    assert ours == pytest.approx(top_k_accuracy_score(labels, scores, k=k, labels=np.arange(7)))


@pytest.mark.parametrize("ties", [False, True])
def test_mean_class_accuracy_matches_balanced_accuracy(ties):
    rng = np.random.default_rng(5)
    scores = rng.random((300, 6))
    if ties:
        scores = np.round(scores * 2) / 2
    labels = rng.integers(0, 5, 300)  # class 5 never occurs: it must not count
    pred = np.array([max(np.flatnonzero(r == r.max())) for r in scores])  # ties: higher index, as documented
    assert metrics.mean_class_accuracy(scores, labels) == pytest.approx(balanced_accuracy_score(labels, pred))


@pytest.mark.parametrize("ties", [False, True])
def test_map_matches_sklearn_and_drops_empty_classes(ties):
    rng = np.random.default_rng(7)
    scores = rng.random((120, 8))
    if ties:
        scores = np.round(scores * 4) / 4
    y = (rng.random((120, 8)) < 0.2).astype(int)
    y[:, 3] = 0  # no positive: dropped
    expect = np.mean([average_precision_score(y[:, c], scores[:, c]) for c in range(8) if y[:, c].any()])
    assert metrics.mean_average_precision(scores, y) == pytest.approx(expect)


def test_average_precision_hand_worked():
    # ranking: + - + -  -> precisions at positives 1/1 and 2/3 -> AP = (1 + 2/3) / 2
    assert metrics.average_precision(np.array([0.9, 0.8, 0.7, 0.1]), np.array([1, 0, 1, 0])) == pytest.approx(5 / 6)
    # all tied: one threshold, precision = 2/4 at recall 1
    assert metrics.average_precision(np.ones(4), np.array([1, 0, 1, 0])) == pytest.approx(0.5)
    assert np.isnan(metrics.average_precision(np.ones(3), np.zeros(3)))


def test_event_hit_rate_brute_force():
    rng = np.random.default_rng(0)
    selected, events, expect = [], [], []
    for _ in range(100):
        sel = np.sort(rng.choice(60, rng.integers(1, 6), replace=False))
        evs = []
        for _ in range(rng.integers(1, 3)):
            s = int(rng.integers(0, 50))
            evs.append((s, s + int(rng.integers(1, 10))))
        hit = all(any(s <= f < e for f in sel) for s, e in evs)
        selected.append(sel)
        events.append(evs)
        expect.append(hit)
    assert metrics.event_hit_rate(selected, events) == pytest.approx(np.mean(expect))
    # boundary: end is exclusive
    assert metrics.event_hit_rate([np.array([10])], [[(5, 10)]]) == 0.0
    assert metrics.event_hit_rate([np.array([5])], [[(5, 10)]]) == 1.0
