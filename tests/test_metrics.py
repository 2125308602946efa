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
def test_balanced_accuracy_matches_sklearn(ties):
    rng = np.random.default_rng(5)
    scores = rng.random((300, 6))
    if ties:
        scores = np.round(scores * 2) / 2
    labels = rng.integers(0, 5, 300)  # class 5 never occurs: it must not count
    pred = scores.argmax(1)  # ties: the first index, as np.argmax
    assert metrics.balanced_accuracy(scores, labels) == pytest.approx(balanced_accuracy_score(labels, pred))


def _mmaction2_mean_class_accuracy(scores, labels):
    """MMAction2's algorithm (mmaction/evaluation/functional/accuracy.py), written out: a confusion
    matrix over the union of predicted and true labels, rows = true; 0 for a class never true."""
    pred = np.argmax(scores, axis=1)
    label_set = np.unique(np.concatenate((pred, labels)))
    index = {c: i for i, c in enumerate(label_set)}
    cm = np.zeros((len(label_set), len(label_set)))
    for p, t in zip(pred, labels, strict=True):
        cm[index[t], index[p]] += 1
    cnt, hit = cm.sum(axis=1), np.diag(cm)
    return float(np.mean([h / c if c else 0.0 for c, h in zip(cnt, hit, strict=True)]))


@pytest.mark.parametrize("ties", [False, True])
def test_mean_class_accuracy_is_mmaction2s(ties):
    rng = np.random.default_rng(5)
    scores = rng.random((300, 6))
    if ties:
        scores = np.round(scores * 2) / 2
    labels = rng.integers(0, 5, 300)  # class 5 never true, sometimes predicted: it counts as 0
    assert (scores.argmax(1) == 5).any()
    got = metrics.mean_class_accuracy(scores, labels)
    assert got == pytest.approx(_mmaction2_mean_class_accuracy(scores, labels))
    assert got < metrics.balanced_accuracy(scores, labels)


def test_mean_class_accuracy_hand_worked():
    # true 0 0 1 1, predicted 0 1 1 2: recall 1/2 (class 0), 1/2 (class 1), class 2 predicted only: 0
    scores = np.eye(3)[[0, 1, 1, 2]]
    labels = np.array([0, 0, 1, 1])
    assert metrics.mean_class_accuracy(scores, labels) == pytest.approx(1 / 3)
    assert metrics.balanced_accuracy(scores, labels) == pytest.approx(1 / 2)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_metrics_refuse_non_finite_scores(bad):
    from samplerbench.metrics.ranking import retrieval_metrics

    scores = np.random.default_rng(0).random((6, 3))
    scores[2, 1] = bad
    labels = np.array([0, 1, 2, 0, 1, 2])
    for fn in (lambda: metrics.top_k_accuracy(scores, labels, (1,)), lambda: metrics.mean_class_accuracy(scores, labels),
               lambda: metrics.mean_average_precision(scores, np.eye(3)[labels])):
        with pytest.raises(ValueError, match=r"must be finite.*at \(2, 1\)"):
            fn()
    # a NaN similarity would otherwise give its caption rank 1
    with pytest.raises(ValueError, match="similarities must be finite"):
        retrieval_metrics(scores, np.array([0, 1, 2, 0, 1, 2]))


def test_map_of_probabilities_differs_from_map_of_logits():
    """Softmax changes the per-class ranking of videos: mAP must be taken on probabilities."""
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(200, 5)) * rng.uniform(0.2, 3, size=(200, 1))  # per-video scale
    multi_hot = np.eye(5)[rng.integers(0, 5, 200)]
    on_probs = metrics.mean_average_precision(metrics.softmax(logits), multi_hot)
    assert on_probs != pytest.approx(metrics.mean_average_precision(logits, multi_hot), abs=1e-3)
    assert on_probs == pytest.approx(np.mean([average_precision_score(multi_hot[:, c], metrics.softmax(logits)[:, c])
                                              for c in range(5)]))


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
