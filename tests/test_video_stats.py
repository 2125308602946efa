"""The runner's statistics over videos: resampled metrics agree with scoring the resample
itself, the paired test against uniform flags a clearly better method and not an identical one,
and a run writes the intervals and tests that the report shows."""

import numpy as np
import pytest

from samplerbench.metrics.stats import BootstrapConfig, resample_indices
from samplerbench.store.cells import write_cell
from samplerbench.suite import MethodSpec
from samplerbench.tasks.classification import Classification
from samplerbench.tasks.core import Cell
from samplerbench.tasks.stats import video_statistics

N, C = 120, 6


def _cell(folder, key, method, correct: np.ndarray, seed=0, budget=4, rng=None):
    """A stored classification cell whose top-1 is right exactly on ``correct``."""
    rng = rng or np.random.default_rng(seed)
    labels = np.arange(N) % C
    probs = rng.random((N, C)) * 0.5
    wrong = (labels + 1 + rng.integers(0, C - 1, N)) % C
    top = np.where(correct, labels, wrong)
    probs[np.arange(N), top] = 1.0
    probs /= probs.sum(1, keepdims=True)
    videos = [{"video": f"v{i:03d}", "frames": [i % 8], "events": [[0, 4]] if i % 3 else [], "n": 1,
               "gflops_sampler": 0.0, "gflops_encoder": 1.0, "gflops_head": 0.0} for i in range(N)]
    preds = {"probs": probs, "labels": np.eye(C, dtype=np.int64)[labels], "multilabel": np.array(False)}
    task = Classification()
    rec = {"cell": key, "method": method, "videos": videos, "values": task.score(videos, preds)}
    write_cell(folder, key, rec, preds)
    return Cell(key, MethodSpec(method), budget, seed), rec, videos, preds


def test_resampled_metrics_equal_scoring_the_resample(tmp_path):
    task = Classification()
    _, _, videos, preds = _cell(tmp_path, "a", "uniform", np.random.default_rng(1).random(N) < 0.6)
    ident = task.resampled(videos, preds, np.arange(N)[None])
    scored = task.score(videos, preds)
    for m, v in ident.items():
        assert v[0] == pytest.approx(scored[m]), m
    idx = resample_indices(N, 5, 3)
    got = task.resampled(videos, preds, idx)
    for r, rows in enumerate(idx):  # the resample materialised (videos repeated) and scored as a split
        sub = task.score([videos[i] for i in rows], {"probs": preds["probs"][rows], "labels": preds["labels"][rows],
                                                     "multilabel": preds["multilabel"]})
        for m in got:
            assert got[m][r] == pytest.approx(sub[m]), (m, r)


def test_paired_test_flags_a_better_method_not_an_identical_one(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.random(N) < 0.4
    better = base | (rng.random(N) < 0.5)
    cells = [_cell(tmp_path, "u", "uniform", base), _cell(tmp_path, "b", "better", better),
             _cell(tmp_path, "s", "same", base)]
    intervals, tests = video_statistics(Classification(), tmp_path, [(c, r) for c, r, *_ in cells],
                                        BootstrapConfig(resamples=500, seed=0, alpha=0.05))
    t = tests[tests.metric == "top1"].set_index("method")
    assert t.loc["better", "significant"] and t.loc["better", "p_bootstrap"] < 0.01
    assert t.loc["better", "diff"] == pytest.approx(better.mean() - base.mean())
    assert t.loc["better", "p_mcnemar"] < 0.001
    assert not t.loc["same", "significant"] and t.loc["same", "diff"] == 0 and t.loc["same", "p_mcnemar"] == 1.0
    i = intervals[intervals.metric == "top1"].set_index("method")
    for m, v in (("uniform", base), ("better", better)):
        assert i.loc[m, "value"] == pytest.approx(v.mean()) and i.loc[m, "lo"] < v.mean() < i.loc[m, "hi"]
    assert "uniform" not in set(tests["method"])  # no test of uniform against itself


def _retrieval_cell(rng, n=30, per=(3, 5)):
    """A retrieval cell's stored form: every video with 3-5 captions, similarities that favour
    each caption's own video for some of them."""
    cv = np.concatenate([np.full(rng.integers(*per, endpoint=True), j) for j in range(n)])
    sim = rng.normal(size=(len(cv), n))
    sim[np.arange(len(cv)), cv] += rng.random(len(cv)) * 3
    videos = [{"video": f"v{j:02d}", "n": 4, "gflops_sampler": 0.0, "gflops_encoder": 1.0} for j in range(n)]
    return videos, {"sim": sim, "caption_video": cv, "candidates": np.array(8)}


def test_retrieval_resamples_query_videos_with_their_captions():
    from samplerbench.metrics.ranking import t2v_ranks, v2t_ranks
    from samplerbench.tasks.retrieval import Retrieval

    task, rng = Retrieval(), np.random.default_rng(5)
    videos, preds = _retrieval_cell(rng)
    n = len(videos)
    scored = task.score(videos, preds)
    ident = task.resampled(videos, preds, np.arange(n)[None])
    assert set(ident) == set(task.resampled_metrics)
    for m, v in ident.items():
        assert v[0] == pytest.approx(scored[m]), m
    t2v, v2t = t2v_ranks(preds["sim"], preds["caption_video"]), v2t_ranks(preds["sim"], preds["caption_video"])
    idx = resample_indices(n, 4, 1)
    got = task.resampled(videos, preds, idx)
    for r, rows in enumerate(idx):  # by hand: every caption of every drawn video (with repeats)
        caps = np.concatenate([t2v[preds["caption_video"] == j] for j in rows])
        assert got["t2v_R@5"][r] == pytest.approx(100 * np.mean(caps <= 5))
        assert got["t2v_MnR"][r] == pytest.approx(caps.mean())
        assert got["v2t_R@1"][r] == pytest.approx(100 * np.mean(v2t[rows] <= 1))


def test_retrieval_aligned_reorders_columns_and_keeps_their_captions():
    from samplerbench.tasks.retrieval import Retrieval

    videos, preds = _retrieval_cell(np.random.default_rng(2), n=12)
    order = [f"v{j:02d}" for j in (7, 3, 11, 0, 5)]
    got_v, got = Retrieval.aligned(videos, preds, order)
    assert [v["video"] for v in got_v] == order
    want_rows = [(i, order.index(f"v{c:02d}")) for i, c in enumerate(preds["caption_video"]) if f"v{c:02d}" in order]
    assert len(got["caption_video"]) == len(want_rows)
    for k, (i, col) in enumerate(want_rows):  # caption i of the original, now pointing at its video's new column
        assert got["caption_video"][k] == col
        assert np.array_equal(got["sim"][k], preds["sim"][i, [int(o[1:]) for o in order]])
