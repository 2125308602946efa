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


def brute_v2t_clip4clip(sim, cv, ties):
    """A loop: a video's best own caption against each other video's best caption."""
    ranks = []
    for v in range(sim.shape[1]):
        best = max(sim[q, v] for q in range(sim.shape[0]) if cv[q] == v)
        r = 1
        for g in range(sim.shape[1]):
            if g == v or not (cv == g).any():
                continue
            other = max(sim[q, v] for q in range(sim.shape[0]) if cv[q] == g)
            if other > best or (ties == "pessimistic" and other == best):
                r += 1
        ranks.append(r)
    return np.array(ranks)


def clip4clip_v2t_metrics(sim, cv):
    """CLIP4Clip's own code path (ArrowLuo/CLIP4Clip, metrics.py: tensor_video_to_text_sim and
    compute_metrics; main_task_retrieval.py pads each video's captions with -inf to a
    (videos, max captions, videos) tensor), in numpy. Its ranks are optimistic under ties."""
    videos = sim.shape[1]
    longest = np.bincount(cv, minlength=videos).max()
    padded = np.full((videos, longest, videos), -np.inf)
    for g in range(videos):
        mine = sim[cv == g]
        padded[g, :len(mine)] = mine
    x = padded.max(axis=1).T  # tensor_video_to_text_sim: (videos, caption groups)
    sx = np.sort(-x, axis=1)
    d = np.diag(-x)[:, None]
    ind = np.where(sx - d == 0)[1]
    return {"R@1": float(np.sum(ind == 0)) * 100 / len(ind), "R@5": float(np.sum(ind < 5)) * 100 / len(ind),
            "R@10": float(np.sum(ind < 10)) * 100 / len(ind), "MdR": np.median(ind) + 1, "MnR": np.mean(ind) + 1}


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
    t2v = t2v_ranks(sim, cv, ties)
    assert np.array_equal(t2v, brute_t2v(sim, cv, ties))
    assert np.array_equal(v2t_ranks(sim, cv, ties, "all-captions"), brute_v2t(sim, cv, ties))
    assert np.array_equal(v2t_ranks(sim, cv, ties), brute_v2t_clip4clip(sim, cv, ties))
    for v2t, brute in (("clip4clip", brute_v2t_clip4clip), ("all-captions", brute_v2t)):
        m = retrieval_metrics(sim, cv, ties, v2t)
        for k, v in brute_summary(list(brute_t2v(sim, cv, ties))).items():
            assert m[f"t2v_{k}"] == pytest.approx(v)
        for k, v in brute_summary(list(brute(sim, cv, ties))).items():
            assert m[f"v2t_{k}"] == pytest.approx(v)


@pytest.mark.parametrize("per_video", [1, 3, 5])
def test_video_to_text_equals_clip4clips_own_code(per_video):
    """Continuous similarities (no ties, where CLIP4Clip's compute_metrics counts a row twice)."""
    rng = np.random.default_rng(per_video)
    cv = np.repeat(np.arange(40), per_video)
    rng.shuffle(cv)
    sim = rng.normal(size=(len(cv), 40)) + 0.8 * (cv[:, None] == np.arange(40))
    m = retrieval_metrics(sim, cv)
    for k, v in clip4clip_v2t_metrics(sim, cv).items():
        assert m[f"v2t_{k}"] == pytest.approx(v)


def test_video_to_text_by_hand_with_several_captions():
    """Three videos, two captions each (rows: captions a0 a1 b0 b1 c0 c1; columns: videos a b c).
    Video a's best own caption scores 0.5. Every other caption: b0 0.9, b1 0.1, c0 0.6, c1 0.7.
    CLIP4Clip's gallery is b's best (0.9) and c's best (0.7): rank 3. Among all captions, b0, c0 and
    c1 beat it: rank 4."""
    sim = np.array([[0.5, 0.0, 0.0], [0.2, 0.0, 0.0], [0.9, 0.8, 0.0],
                    [0.1, 0.0, 0.0], [0.6, 0.0, 0.9], [0.7, 0.0, 0.0]])
    cv = np.array([0, 0, 1, 1, 2, 2])
    assert v2t_ranks(sim, cv)[0] == 3
    assert v2t_ranks(sim, cv, v2t="all-captions")[0] == 4
    assert v2t_ranks(sim, cv).tolist() == [3, 1, 1]


def test_r_at_1_is_the_same_under_both_video_to_text_definitions():
    """Another video's caption beats a video's best own caption exactly when that video's best
    caption does: R@1 (what the learned pieces validate on) does not depend on the definition."""
    rng = np.random.default_rng(3)
    cv = np.repeat(np.arange(30), 4)
    sim = rng.normal(size=(120, 30)) + (cv[:, None] == np.arange(30))
    a, b = v2t_ranks(sim, cv), v2t_ranks(sim, cv, v2t="all-captions")
    assert np.array_equal(a == 1, b == 1) and (a <= b).all() and (a < b).any()


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
