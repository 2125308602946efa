"""Retrieval metrics against a brute-force loop, with ties and several captions per video."""

import numpy as np
import pytest

from samplerbench.metrics.ranking import retrieval_metrics, summarise, t2v_ranks, v2t_ranks


def brute_t2v(sim, cv, ties):
    ranks = []
    for q in range(sim.shape[0]):
        own = sim[q, cv[q]]
        r = 1
        for v in range(sim.shape[1]):
            if v == cv[q]:
                continue
            if sim[q, v] > own or (ties == "pessimistic" and sim[q, v] == own):
                r += 1
        ranks.append(r)
    return np.array(ranks)


def brute_v2t(sim, cv, ties):
    ranks = []
    for v in range(sim.shape[1]):
        best = max(sim[q, v] for q in range(sim.shape[0]) if cv[q] == v)
        r = 1
        for q in range(sim.shape[0]):
            if cv[q] != v and (sim[q, v] > best or (ties == "pessimistic" and sim[q, v] == best)):
                r += 1
        ranks.append(r)
    return np.array(ranks)


def brute_summary(ranks):
    s = sorted(ranks)
    n = len(s)
    median = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    return {"R@1": 100 * sum(r <= 1 for r in s) / n, "R@5": 100 * sum(r <= 5 for r in s) / n,
            "R@10": 100 * sum(r <= 10 for r in s) / n, "MdR": median, "MnR": sum(s) / n}


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
@pytest.mark.parametrize("levels", [None, 3], ids=["continuous", "tied"])
@pytest.mark.parametrize("per_video", [1, 3])
def test_ranks_equal_a_brute_force_loop(ties, levels, per_video):
    rng = np.random.default_rng(7)
    videos = 23
    cv = np.repeat(np.arange(videos), per_video)
    rng.shuffle(cv)
    sim = rng.normal(size=(len(cv), videos))
    if levels:  # few distinct values: many ties
        sim = rng.integers(0, levels, size=sim.shape).astype(float)
    t2v, v2t = t2v_ranks(sim, cv, ties), v2t_ranks(sim, cv, ties)
    assert np.array_equal(t2v, brute_t2v(sim, cv, ties))
    assert np.array_equal(v2t, brute_v2t(sim, cv, ties))
    m = retrieval_metrics(sim, cv, ties)
    for k, v in brute_summary(list(brute_t2v(sim, cv, ties))).items():
        assert m[f"t2v_{k}"] == pytest.approx(v)
    for k, v in brute_summary(list(brute_v2t(sim, cv, ties))).items():
        assert m[f"v2t_{k}"] == pytest.approx(v)


def test_a_constant_matrix_is_last_or_first_by_the_tie_rule():
    sim = np.zeros((4, 4))
    cv = np.arange(4)
    assert t2v_ranks(sim, cv, "pessimistic").tolist() == [4, 4, 4, 4]
    assert t2v_ranks(sim, cv, "optimistic").tolist() == [1, 1, 1, 1]
    assert v2t_ranks(sim, cv, "pessimistic").tolist() == [4, 4, 4, 4]


def test_identity_is_perfect_and_own_captions_never_count_against_a_video():
    sim = np.array([[0.9, 0.1], [0.9, 0.2], [0.0, 0.8]])  # captions 0, 1 of video 0; caption 2 of video 1
    cv = np.array([0, 0, 1])
    assert t2v_ranks(sim, cv).tolist() == [1, 1, 1]
    assert v2t_ranks(sim, cv).tolist() == [1, 1]  # caption 1 ties caption 0 on video 0: its own, not counted
    m = retrieval_metrics(sim, cv)
    assert m["t2v_R@1"] == 100.0 and m["v2t_MdR"] == 1.0 and m["v2t_MnR"] == 1.0


def test_summary_by_hand():
    s = summarise(np.array([1, 2, 6, 11]))
    assert s == {"R@1": 25.0, "R@5": 50.0, "R@10": 75.0, "MdR": 4.0, "MnR": 5.0}


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="ties"):
        t2v_ranks(np.zeros((2, 2)), np.arange(2), "random")
    with pytest.raises(ValueError, match="does not match"):
        t2v_ranks(np.zeros((3, 2)), np.arange(2))
