"""Statistics over videos against independent implementations: scipy's percentile bootstrap,
McNemar's exact test summed by hand, and the resampled metrics against scoring the resample."""

from math import comb

import numpy as np
import pytest
from scipy.stats import bootstrap

from samplerbench.metrics.stats import (
    bootstrap_p_value,
    mcnemar_exact,
    percentile_interval,
    resample_indices,
    resampled_mean,
)


def test_percentile_interval_matches_scipys_bootstrap():
    x = np.random.default_rng(0).random(300) < 0.4  # a top-1 correctness vector
    idx = resample_indices(len(x), 20000, seed=1)
    ours = percentile_interval(resampled_mean(x, idx), alpha=0.05)
    ref = bootstrap((x.astype(float),), np.mean, n_resamples=20000, method="percentile", confidence_level=0.95,
                    random_state=np.random.default_rng(2)).confidence_interval
    assert ours[0] == pytest.approx(ref.low, abs=0.01) and ours[1] == pytest.approx(ref.high, abs=0.01)
    assert ours[0] < x.mean() < ours[1]


def test_resample_indices_are_one_seeded_draw():
    a, b = resample_indices(50, 10, 3), resample_indices(50, 10, 3)
    assert np.array_equal(a, b) and a.shape == (10, 50) and a.min() >= 0 and a.max() < 50
    assert not np.array_equal(a, resample_indices(50, 10, 4))


def hand_mcnemar(b: int, c: int) -> float:
    n, k = b + c, min(b, c)
    return min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2 ** n)


@pytest.mark.parametrize("only_a,only_b,both,neither", [(10, 2, 30, 8), (3, 3, 5, 5), (0, 7, 1, 1), (25, 11, 0, 0)])
def test_mcnemar_exact_equals_the_binomial_sum(only_a, only_b, both, neither):
    a = np.array([1] * only_a + [0] * only_b + [1] * both + [0] * neither, bool)
    b = np.array([0] * only_a + [1] * only_b + [1] * both + [0] * neither, bool)
    assert mcnemar_exact(a, b) == pytest.approx(hand_mcnemar(only_a, only_b), rel=1e-9)


def test_mcnemar_without_discordant_pairs_is_one():
    assert mcnemar_exact(np.ones(5, bool), np.ones(5, bool)) == 1.0


def test_bootstrap_p_value_is_small_for_a_clear_difference_and_large_for_none():
    rng = np.random.default_rng(0)
    idx = resample_indices(400, 2000, 0)
    base = rng.random(400) < 0.5
    better = base | (rng.random(400) < 0.3)  # the same videos, some more right
    assert bootstrap_p_value(resampled_mean(better, idx) - resampled_mean(base, idx)) < 0.01
    same = rng.permutation(base)  # an unrelated vector with the same accuracy
    assert bootstrap_p_value(resampled_mean(same, idx) - resampled_mean(base, idx)) > 0.2
    assert bootstrap_p_value(np.zeros(10)) == 1.0


def test_weighted_resampled_mean_counts_only_weighted_videos():
    values, weights = np.array([1.0, 0.0, 1.0, 5.0]), np.array([1, 1, 1, 0])
    idx = np.array([[0, 1, 2, 3], [3, 3, 3, 3], [0, 0, 1, 3]])
    got = resampled_mean(values, idx, weights)
    assert got[0] == pytest.approx(2 / 3) and np.isnan(got[1]) and got[2] == pytest.approx(2 / 3)


def test_resampled_mean_class_accuracy_equals_the_metric_on_each_resample():
    from samplerbench.metrics.classification import mean_class_accuracy
    from samplerbench.metrics.stats import resampled_mean_class_accuracy

    rng = np.random.default_rng(5)
    labels = rng.integers(0, 7, 60)
    pred = np.where(rng.random(60) < 0.5, labels, rng.integers(0, 7, 60))
    pred[0] = 6  # a class predicted that may be absent from a resample's labels
    idx = resample_indices(60, 50, 1)
    got = resampled_mean_class_accuracy(pred, labels, idx, 7)
    for r, rows in enumerate(idx):
        assert got[r] == pytest.approx(mean_class_accuracy(np.eye(7)[pred[rows]], labels[rows])), r


def test_chance_and_its_margin_by_hand():
    """Four videos, labels 0, 0, 1, 2 of 3 classes: always predicting class 0 scores 1/2. On 100
    validation videos at chance 0.1, three standard errors are 3 * sqrt(0.1 * 0.9 / 100) = 0.09."""
    from samplerbench.metrics.stats import above_chance, chance_margin, chance_top1

    assert chance_top1([[0], [0], [1], [2]], 3) == 0.5
    assert chance_top1([[0, 1], [1], [1, 2], [2]], 3) == 0.75  # multi-label: class 1 is in three of four
    assert chance_margin(0.1, 100) == pytest.approx(0.09)
    assert not above_chance(0.19, 0.1, 100) and above_chance(0.191, 0.1, 100)
    assert not above_chance(0.132, 0.1, 100)  # the default suite's tokens-uniform ViT (best val 0.132)


def test_reader_status_reads_every_trained_piece_and_its_parts():
    from samplerbench.tasks.core import reader_status

    good = {"val": 0.43, "chance": 0.1, "n_val": 100}
    bad = {"val": 0.13, "chance": 0.1, "n_val": 100}
    assert reader_status([good]) == "learned"
    assert reader_status([good, bad]) == "did not learn"
    assert reader_status([{**good, "base": bad}]) == "did not learn"  # a composed method's base
    assert reader_status([{"val": 0.9}, {}]) == ""  # nothing with a chance level: not judged
