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


def test_reference_points_take_the_papers_cost_or_the_measured_one():
    from samplerbench.reports.reference import reference_points

    reference = {"rows": [
        {"task": "classification", "label": "sllm", "budget": 16, "top1": 81.55},  # measured cost of sllm N=16
        {"task": "classification", "label": "sosampler", "budget": 8, "top1": 70.0, "gflops_total": 12.5},
        {"task": "classification", "label": "missing", "budget": 8, "top1": 60.0},  # no cost anywhere: left out
        {"task": "retrieval", "label": "sllm", "t2v_R@1": 40.0},  # another task
        {"task": "classification", "label": "sllm", "budget": 4, "mAP": 50.0}]}  # another metric
    costs = pd.DataFrame({"label": ["sllm", "sllm", "sosampler"], "budget": [16, 8, 8], "gflops": [3.0, 1.5, 9.0]})
    pts = reference_points(reference, "classification", "top1", costs).set_index("label")
    assert list(pts.index) == ["sllm", "sosampler"]
    assert pts.loc["sllm", "gflops"] == 3.0 and pts.loc["sllm", "value"] == pytest.approx(0.8155)
    assert pts.loc["sllm", "cost_from"] == "measured"
    assert pts.loc["sosampler", "gflops"] == 12.5 and pts.loc["sosampler", "cost_from"] == "paper"
    r = reference_points(reference, "retrieval", "t2v_R@1", costs)
    assert r["value"].tolist() == [40.0] and r["gflops"].tolist() == [pytest.approx(2.25)]  # R@k stays percent
