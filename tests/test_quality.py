"""The quality gate's rule, hand-worked: a value outside the baseline's bootstrap interval on the
worse side fails (below ``lo``; above ``hi`` for a rank), inside it is a reported change; without
an interval the absolute allowance rules; a missing entry fails, a new one does not."""

import pytest

from samplerbench.tasks.quality import Entry, compare, report


def _base(**entries):
    return {"tolerance": "interval", "absolute": 0.0, "entries": entries}


def _e(metric, value, seeds=None, lower=False):
    return Entry("retrieval", "uniform", "4", metric, value, seeds or {"0": value}, lower_is_better=lower)


def _b(value, lo=None, hi=None, lower=False):
    return {"value": value, "seeds": {"0": value}, "lo": lo, "hi": hi, "lower_is_better": lower}


@pytest.mark.parametrize(("now", "status"), [(0.50, "same"), (0.46, "changed"), (0.40, "changed"),
                                             (0.399, "worse"), (0.55, "better"), (0.70, "better")])
def test_more_is_better_fails_below_the_interval(now, status):
    e = _e("t2v_R@1", now)
    (v,) = compare({e.key: e}, _base(**{e.key: _b(0.50, 0.40, 0.60)}))
    assert v.status == status and v.fails == (status == "worse")
    assert v.bound == 0.40


@pytest.mark.parametrize(("now", "status"), [(10.0, "same"), (11.9, "changed"), (12.01, "worse"), (8.0, "better")])
def test_a_rank_fails_above_the_interval(now, status):
    e = _e("t2v_MnR", now, lower=True)
    (v,) = compare({e.key: e}, _base(**{e.key: _b(10.0, 8.5, 12.0, lower=True)}))
    assert v.status == status


def test_without_an_interval_the_absolute_allowance_rules():
    e = _e("t2v_MdR", 3.0, lower=True)
    base = _base(**{e.key: _b(2.0, lower=True)})
    assert compare({e.key: e}, base)[0].status == "worse"
    assert compare({e.key: e}, {**base, "absolute": 1.0})[0].status == "changed"
    assert compare({e.key: e}, base, tolerance=1.5)[0].status == "changed"  # an explicit tolerance: units
    lower = _e("t2v_R@5", 49.0)
    assert compare({lower.key: lower}, _base(**{lower.key: _b(50.0)}), tolerance=0.5)[0].status == "worse"


def test_missing_fails_new_does_not_and_the_report_says_how_to_record():
    kept, gone, new = _e("t2v_R@1", 0.5), _e("t2v_R@5", 0.7), _e("t2v_R@10", 0.9)
    verdicts = compare({kept.key: kept, new.key: new},
                       _base(**{kept.key: _b(0.5, 0.4, 0.6), gone.key: _b(0.7, 0.6, 0.8)}))
    status = {v.key: v.status for v in verdicts}
    assert status == {kept.key: "same", gone.key: "missing", new.key: "new"}
    text = report(verdicts, "interval")
    assert "MISSING" in text and "NEW" in text and text.splitlines()[-1].startswith("FAIL")
    assert "--update-baseline" in text.splitlines()[-1]


def test_a_changed_seed_is_reported_even_when_the_mean_is_the_same():
    e = _e("t2v_R@1", 0.5, seeds={"0": 0.4, "1": 0.6})
    b = {**_b(0.5, 0.4, 0.6), "seeds": {"0": 0.6, "1": 0.4}}
    (v,) = compare({e.key: e}, _base(**{e.key: b}))
    assert v.status == "changed" and v.seeds == ["0", "1"]
    assert "PASS (values changed" in report([v], "interval")
