"""Metric functions: pure, numpy in, float out. Definitions follow MMAction2 and sklearn.

Scores are class probabilities (softmax of a single-label model's logits; sigmoid for
multi-label), as MMAction2 and the papers average them: top-k and mean class accuracy depend
only on each video's ranking of classes, but mAP ranks videos per class, which softmax changes.

Ties: top-k ranks break ties the way sklearn's ``top_k_accuracy_score`` does (a stable ascending
argsort, reversed: among equal scores the higher class index ranks first), so that results do
not depend on an unstable sort. mAP groups tied scores into one threshold, as sklearn's
``average_precision_score`` and MMAction2's ``mean_average_precision`` do. Every function
raises ``ValueError`` on a NaN or infinite score: a NaN compares false everywhere and would
rank wherever a sort happens to put it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _ranking(scores: np.ndarray) -> np.ndarray:
    """Class indices by descending score; ties: higher index first (sklearn's rule)."""
    return np.argsort(scores, axis=1, kind="stable")[:, ::-1]


def check_finite(scores: np.ndarray, what: str = "scores") -> np.ndarray:
    """``scores`` as an array; ValueError naming the first non-finite entry."""
    scores = np.asarray(scores)
    bad = ~np.isfinite(scores)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{what} must be finite: {scores[where]} at {where} ({int(bad.sum())} non-finite)")
    return scores


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (class probabilities from a single-label model's logits)."""
    x = np.asarray(logits, dtype=np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic in float64 (per-class probabilities of a multi-label model)."""
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


def top_k_hits(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per sample: whether its true class is among the k best-scored classes (bool)."""
    scores, labels = check_finite(scores), np.asarray(labels)
    return np.any(_ranking(scores)[:, :k] == labels[:, None], axis=1)


def top_k_accuracy(scores: np.ndarray, labels: np.ndarray, topk: Sequence[int] = (1, 5)) -> list[float]:
    """Share of samples whose true class is among the k best-scored classes, for each k."""
    return [float(np.mean(top_k_hits(scores, labels, k))) for k in topk]


def mean_class_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """MMAction2's ``mean_class_accuracy``: per-class top-1 recall averaged over every class that
    occurs in the labels *or the predictions*; a class that is predicted but never true counts
    as 0 (so this is at most :func:`balanced_accuracy`, and lower when the model predicts a class
    absent from the split). Prediction = ``np.argmax`` (the first of tied scores), as MMAction2."""
    scores, labels = check_finite(scores), np.asarray(labels)
    pred = np.argmax(scores, axis=1)
    classes = np.union1d(pred, labels)
    return float(np.mean([np.mean(pred[labels == c] == c) if np.any(labels == c) else 0.0 for c in classes]))


def balanced_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """sklearn's ``balanced_accuracy_score``: top-1 recall averaged over the classes that occur
    in the labels only."""
    scores, labels = check_finite(scores), np.asarray(labels)
    pred = np.argmax(scores, axis=1)
    return float(np.mean([np.mean(pred[labels == c] == c) for c in np.unique(labels)]))


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """Non-interpolated step AP, tied scores grouped; NaN when there is no positive."""
    scores, positives = check_finite(scores).astype(np.float64), np.asarray(positives).astype(bool)
    total = positives.sum()
    if total == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    s, p = scores[order], positives[order]
    tp = np.cumsum(p)
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last position of each distinct score
    tp_at, n_at = tp[last], last + 1
    precision = tp_at / n_at
    recall = tp_at / total
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(scores: np.ndarray, multi_hot: np.ndarray) -> float:
    """Mean over classes of ``average_precision``; classes with no positive are dropped."""
    scores, multi_hot = check_finite(scores), np.asarray(multi_hot)
    aps = [average_precision(scores[:, c], multi_hot[:, c]) for c in range(scores.shape[1])]
    aps = [a for a in aps if not np.isnan(a)]
    return float(np.mean(aps)) if aps else float("nan")


def event_hit_rate(selected: Sequence[np.ndarray], events: Sequence[Sequence[tuple[int, int]]]) -> float:
    """Share of videos whose selected frames include at least one frame of every event.

    ``selected[i]`` are frame indices of video i; ``events[i]`` its [start, end) windows.
    Videos without events are left out.
    """
    hits, has = event_hits(selected, events)
    return float(np.mean(hits[has])) if has.any() else float("nan")


def event_hits(selected: Sequence[np.ndarray], events: Sequence[Sequence[tuple[int, int]]]) -> tuple[np.ndarray, np.ndarray]:
    """Per video: whether the selection hits every event, and whether the video has events."""
    hits = np.zeros(len(selected), dtype=bool)
    has = np.zeros(len(selected), dtype=bool)
    for i, (frames, evs) in enumerate(zip(selected, events, strict=True)):
        if evs:
            f = np.asarray(frames)
            has[i] = True
            hits[i] = all(np.any((f >= s) & (f < e)) for s, e in evs)
    return hits, has


def one_hot(labels: Sequence[Sequence[int]], num_classes: int) -> np.ndarray:
    """Multi-hot matrix (N, C) from per-sample label lists."""
    out = np.zeros((len(labels), num_classes), dtype=np.int64)
    for i, labs in enumerate(labels):
        out[i, list(labs)] = 1
    return out
