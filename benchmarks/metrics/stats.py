"""Statistics over videos: percentile bootstrap intervals, paired bootstrap tests and McNemar's
exact test, as pure functions of per-video outcomes.

Every cell of a run is resampled with the *same* video indices (:func:`resample_indices` of the
videos every cell evaluated, one seeded generator), so two cells' bootstrap distributions are
paired: the difference of a method and uniform on resample r is the difference on the same
videos. With several seeds the bootstrap is hierarchical (:func:`over_seeds`): each resample
also draws seeds with replacement, the same draw for every method, so that an interval covers
what another training run (a seed is a whole replicate) would give as well as other videos.

Written here rather than with ``scipy.stats.bootstrap``: that function draws its own indices per
call, and the paired test needs one draw shared by every cell and metric of a run. Its
percentile interval is the reference the tests compare against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BootstrapConfig:
    """How intervals and tests are computed (``[eval] resamples``, ``bootstrap_seed``, ``alpha``)."""

    resamples: int = 1000
    seed: int = 0
    alpha: float = 0.05  # two-sided level of the intervals (1 - alpha) and of the tests

    @classmethod
    def of(cls, eval_cfg: dict) -> BootstrapConfig:
        return cls(int(eval_cfg.get("resamples", 1000)), int(eval_cfg.get("bootstrap_seed", 0)),
                   float(eval_cfg.get("alpha", 0.05)))


def resample_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) video positions drawn with replacement: one draw for a whole run."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n)) if n else np.zeros((resamples, 0), int)


def seed_draws(seeds: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, seeds) seed positions drawn with replacement: the upper level of the
    hierarchical bootstrap, one draw per number of seeds for a whole run (paired across methods)."""
    return np.random.default_rng([seed, seeds]).integers(0, seeds, size=(resamples, seeds))


def over_seeds(per_seed: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """The hierarchical bootstrap distribution (R,) from each seed's values on the video resamples
    ``per_seed`` (S, R) and the seed draws (R, S): resample r averages the drawn seeds' values on
    resample r's videos. One seed: its own distribution."""
    d = np.asarray(per_seed, dtype=np.float64)
    if d.shape[0] == 1:
        return d[0]
    return d[np.asarray(draws), np.arange(d.shape[1])[:, None]].mean(axis=1)


def percentile_interval(dist: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """The (alpha/2, 1 - alpha/2) percentiles of a bootstrap distribution (NaNs dropped)."""
    d = np.asarray(dist, dtype=np.float64)
    d = d[np.isfinite(d)]
    if not d.size:
        return float("nan"), float("nan")
    lo, hi = np.percentile(d, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def bootstrap_p_value(diff: np.ndarray) -> float:
    """Two-sided p-value of "no difference" from a paired bootstrap distribution of differences:
    twice the smaller share of resamples on either side of 0 (at most 1), with the +1 correction
    so that it is never 0 with finitely many resamples."""
    d = np.asarray(diff, dtype=np.float64)
    d = d[np.isfinite(d)]
    if not d.size:
        return float("nan")
    below, above = np.sum(d <= 0), np.sum(d >= 0)
    return float(min(1.0, 2 * (min(below, above) + 1) / (d.size + 1)))


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> float:
    """McNemar's exact test of paired binary outcomes (two-sided binomial test on the discordant
    pairs); 1.0 when no pair is discordant."""
    a, b = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    if only_a + only_b == 0:
        return 1.0
    # imported here: scipy.stats costs 1.2 s in every process that loads a task
    from scipy.stats import binomtest

    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def resampled_mean(values: np.ndarray, idx: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The mean of per-video ``values`` on each resample (rows of ``idx``); with ``weights`` (0/1:
    videos that count, e.g. those with events), the weighted mean (NaN where none counts)."""
    v = np.asarray(values, dtype=np.float64)
    if weights is None:
        return v[idx].mean(axis=1) if idx.shape[1] else np.full(len(idx), np.nan)
    w = np.asarray(weights, dtype=np.float64)
    num, den = (v * w)[idx].sum(axis=1), w[idx].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1e-300), np.nan)


def resample_counts(idx: np.ndarray, n: int) -> np.ndarray:
    """(R, n) how many times each video is drawn in each resample (rows of ``idx``)."""
    counts = np.zeros((len(idx), n), dtype=np.float64)
    np.add.at(counts, (np.repeat(np.arange(len(idx)), idx.shape[1]), idx.reshape(-1)), 1.0)
    return counts


def resampled_mean_class_accuracy(pred: np.ndarray, labels: np.ndarray, idx: np.ndarray, num_classes: int) -> np.ndarray:
    """MMAction2's mean class accuracy (``metrics.classification.mean_class_accuracy``: per-class
    top-1 recall over the classes that occur in the labels or the predictions, a predicted class
    never true counting 0) on every resample at once, from the draw counts."""
    counts = resample_counts(idx, len(labels))
    onehot_true = np.eye(num_classes)[labels]
    hit = onehot_true * (pred == labels)[:, None]
    den, num = counts @ onehot_true, counts @ hit
    present = (den > 0) | (counts @ np.eye(num_classes)[pred] > 0)
    recall = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return (recall * present).sum(axis=1) / np.maximum(present.sum(axis=1), 1)


#: a cell's ``reader`` value (rows, tables, the quality gate) when a piece it rests on is at chance
NOT_LEARNED = "did not learn"

#: how far above chance a validation score must be for its piece to count as having learned:
#: this many binomial standard errors of a score at chance on the validation videos
CHANCE_MARGIN_SE = 3.0


def chance_top1(labels: list[list[int]], num_classes: int) -> float:
    """The top-1 of the best constant prediction: the largest share of videos that have one
    class among their labels (a reader that always predicts the majority class scores this)."""
    if not labels:
        return float("nan")
    counts = np.zeros(num_classes)
    for lab in labels:
        counts[list(set(lab))] += 1
    return float(counts.max() / len(labels))


def chance_margin(chance: float, n: int, z: float = CHANCE_MARGIN_SE) -> float:
    """``z`` binomial standard errors of a score at ``chance`` measured on ``n`` videos."""
    return z * float(np.sqrt(chance * (1 - chance) / max(n, 1)))


def above_chance(score: float, chance: float, n: int, z: float = CHANCE_MARGIN_SE) -> bool:
    """Whether a validation score is more than :func:`chance_margin` above chance: a piece that
    is not has not learned, and what it reads is no comparison."""
    return bool(score > chance + chance_margin(chance, n, z))
