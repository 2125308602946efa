"""Report formatting and what the report computes: a spread over seeds only where the seeds
differ, the Pareto front against brute force, the papers' points on the cost-quality plots."""

import numpy as np
import pandas as pd
import pytest

from samplerbench.reports.common import mean_std


def test_equal_seeds_show_no_spread():
    # the three seeds of a deterministic method at a matched count: pandas' std of the equal
    # floats is 5.4e-16, which printed as "2.7 ± 0.0" in the retrieval table
    v = pd.Series([2.666666666666667] * 3)
    assert v.std() > 0
    assert mean_std(v.mean(), v.std(), len(v), "{:.1f}") == "2.7"
    w = pd.Series([2.0, 3.0, 4.0])
    assert mean_std(w.mean(), w.std(), len(w), "{:.1f}") == "3.0 ± 1.0"
    assert mean_std(float("nan"), 0.0, 3, "{:.1f}") == "–"
    assert mean_std(5.0, 1.0, 1, "{:.1f}") == "5.0"


def test_pareto_front_is_the_brute_force_set_of_undominated_points():
    from samplerbench.reports.intervals import pareto_front

    rng = np.random.default_rng(0)
    for trial in range(50):
        n = int(rng.integers(1, 30))
        cost = rng.integers(0, 8, n).astype(float)  # integer grids: ties in cost and in quality
        quality = rng.integers(0, 8, n).astype(float)
        got = set(pareto_front(cost, quality).tolist())
        dominated = {i for i in range(n) for j in range(n)
                     if cost[j] <= cost[i] and quality[j] >= quality[i] and (cost[j] < cost[i] or quality[j] > quality[i])}
        undominated = set(range(n)) - dominated
        # exact duplicates: one representative of each undominated (cost, quality) pair
        assert {(cost[i], quality[i]) for i in got} == {(cost[i], quality[i]) for i in undominated}, trial
        assert len(got) == len({(cost[i], quality[i]) for i in got})


def test_reference_points_sit_at_the_papers_own_cost():
    """A paper's point is drawn at the paper's GFLOPs per video; a row without one has no place
    on a cost axis (it was drawn at this run's cost) and is named as left off."""
    from samplerbench.reports.reference import reference_points, without_cost

    reference = {"rows": [
        {"task": "classification", "label": "sllm", "budget": 16, "top1": 81.55},  # no paper cost: left off
        {"task": "classification", "label": "sosampler", "budget": 8, "top1": 70.0, "gflops_total": 12.5},
        {"task": "retrieval", "label": "no policy", "frames": 16, "gflops_total": 70.56, "t2v_R@1": 42.1},
        {"task": "classification", "label": "sosampler", "budget": 4, "mAP": 50.0, "gflops_total": 6.0}]}
    pts = reference_points(reference, "classification", "top1").set_index("label")
    assert list(pts.index) == ["sosampler"]
    assert pts.loc["sosampler", "gflops"] == 12.5 and pts.loc["sosampler", "value"] == pytest.approx(0.70)
    r = reference_points(reference, "retrieval", "t2v_R@1")
    assert r["value"].tolist() == [42.1] and r["gflops"].tolist() == [70.56]  # R@k stays percent
    assert without_cost(reference, "classification") == ["sllm"]


def test_the_reference_table_shows_the_papers_cost_beside_ours_and_the_videos_evaluated(tmp_path):
    """mmSampler's MSRVTT 'no policy' row: 16 frames and 70.56 GFLOPs per video in the paper,
    beside this run's frames and GFLOPs; a run on 6 of the paper's 1000 videos says so."""
    from samplerbench.reports.reference import comparison, render_reference
    from samplerbench.reports.render import _write

    rows = [{"task": "retrieval", "label": "no policy", "budget": "all", "seed": s, "metric": m, "value": v,
             "n_videos": 6} for s in (0, 1) for m, v in (("t2v_R@1", 40.0 + s), ("frames", 16.0), ("gflops_total", 4.4))]
    pd.DataFrame(rows).to_csv(tmp_path / "retrieval_rows.csv", index=False)
    reference = {"source": "mmSampler (MLSys 2022)", "videos": 1000, "rows": [
        {"task": "retrieval", "label": "no policy", "frames": 16, "gflops_total": 70.56, "t2v_R@1": 42.1}]}
    t = comparison(reference, tmp_path)
    assert t["Metric"].tolist() == ["t2v_R@1"]  # the cost is not compared as a metric
    r = t.iloc[0]
    assert r["Measured"] == pytest.approx(40.5) and r["Difference"] == pytest.approx(-1.6)
    assert r["Frames (paper)"] == 16 and r["Frames (measured)"] == 16.0
    assert r["GFLOPs/video (paper)"] == 70.56 and r["GFLOPs/video (measured)"] == pytest.approx(4.4)
    assert r["Videos"] == "6 of 1000"
    md = render_reference(reference, tmp_path, tmp_path, _write).read_text()
    assert "evaluated 6 of the paper's 1000 videos" in md.split("\n\n")[0]
    csv = pd.read_csv(tmp_path / "table_reference.csv")
    assert {"GFLOPs/video (paper)", "GFLOPs/video (measured)", "Videos"} <= set(csv.columns)




def test_the_failures_table_is_one_row_per_video_with_its_cells():
    """failures.csv keeps every (cell, video); the page shows one row per video: how many cells
    it failed in, the first few, and its first error."""
    from samplerbench.reports.html import failures_by_video

    cells = [f"m{i}__n4__s0" for i in range(6)]
    fails = pd.DataFrame([{"task": "classification", "cell": c, "video": "v1", "error": f"v1.mp4: bad ({c})"}
                          for c in cells] + [{"task": "classification", "cell": cells[0], "video": "v2", "error": "x"}])
    got = failures_by_video(fails)
    assert got["video"].tolist() == ["v1", "v2"]
    assert got.loc[0, "cells"] == "6: " + ", ".join(cells[:4]) + ", ..." and got.loc[0, "error"] == "v1.mp4: bad (m0__n4__s0)"
    assert got.loc[1, "cells"] == f"1: {cells[0]}"
    assert failures_by_video(pd.DataFrame()).empty
