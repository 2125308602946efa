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


# --- per-platform sections -------------------------------------------------------------------

INTEL = {"vendor": "GenuineIntel", "cpu": "Intel(R) Xeon(R) Processor"}
AMD = {"vendor": "AuthenticAMD", "family": "25", "model": "17", "cpu": "AMD EPYC", "capability": "AVX512"}


def _section(platform, **values):
    return {"platform": platform, "run": "r", "recorded": "t",
            "entries": {k: _b(v) for k, v in values.items()}}


def _file(*secs, spread=None, k=2.0):
    from samplerbench.tasks.quality import platform_spread

    return {"tolerance": "interval", "absolute": 0.0, "spread_k": k, "platforms": list(secs),
            "platform_spread": platform_spread(list(secs)) if spread is None else spread}


def test_a_run_is_gated_exactly_against_its_own_platforms_section():
    from samplerbench.tasks.quality import gate

    e = _e("t2v_R@1", 0.30)
    base = _file(_section(INTEL, **{e.key: 0.50}), _section(AMD, **{e.key: 0.30}))
    verdicts, how, across = gate({e.key: e}, base, {**AMD, "extra": "x"})
    assert [v.status for v in verdicts] == ["same"] and not across and "exactly" in how
    # on the Intel machine the same value is 0.2 worse than its own section, with no interval: fails
    verdicts, _, across = gate({e.key: e}, base, {**INTEL, "family": "6", "capability": "AVX512"})
    assert [v.status for v in verdicts] == ["worse"] and not across
    # a section recording fewer fields (an older file's) loses to the one that names more
    legacy = _section({}, **{e.key: 0.9})
    verdicts, _, _ = gate({e.key: e}, _file(legacy, _section(AMD, **{e.key: 0.30})), AMD)
    assert [v.status for v in verdicts] == ["same"]


def test_a_file_from_before_platforms_is_one_section_for_any_platform():
    from samplerbench.tasks.quality import gate

    e = _e("t2v_R@1", 0.45)
    verdicts, _, across = gate({e.key: e}, _base(**{e.key: _b(0.50, 0.40, 0.60)}), AMD)
    assert [v.status for v in verdicts] == ["changed"] and not across


def test_platform_spread_is_the_largest_difference_between_two_platforms():
    from samplerbench.tasks.quality import platform_spread

    keys = [_e(m, 0).key for m in ("t2v_R@1", "t2v_R@5", "t2v_R@10")]
    other = Entry("retrieval", "random", "4", "t2v_R@1", 0, {}).key  # same metric, another label
    a = _section(INTEL, **dict(zip([*keys, other], [1.0, 2.0, 3.0, 5.0], strict=True)))
    b = _section(AMD, **dict(zip([*keys, other], [1.1, 2.0, 2.7, 4.8], strict=True)))
    spread = platform_spread([a, b])
    # t2v_R@1: differences 0.1 (uniform) and 0.2 (random) -> 0.2; R@5: 0; R@10: 0.3
    assert spread == {"retrieval | t2v_R@1": pytest.approx(0.2), "retrieval | t2v_R@5": 0,
                      "retrieval | t2v_R@10": pytest.approx(0.3)}
    # three platforms: every pair counts (1.5 against 1.0)
    c = _section({"vendor": "x"}, **{keys[0]: 1.5})
    assert platform_spread([a, b, c])["retrieval | t2v_R@1"] == pytest.approx(0.5)


@pytest.mark.parametrize(("now", "status"), [(0.45, "changed"), (0.55, "changed"), (0.61, "better"),
                                             (0.40 - 2 * 0.03 + 1e-6, "changed"), (0.339, "worse")])
def test_an_unknown_platform_is_gated_across_the_recorded_ones_by_k_spread(now, status):
    from samplerbench.tasks.quality import gate

    e = _e("t2v_R@1", now)
    base = _file(_section(INTEL, **{e.key: 0.40}), _section(AMD, **{e.key: 0.60}),
                 spread={"retrieval | t2v_R@1": 0.03})
    (v,), how, across = gate({e.key: e}, base, {"vendor": "HygonGenuine"})
    assert across and "catches a broken method" in how
    assert v.status == status and v.bound == pytest.approx(0.34) and v.baseline == pytest.approx(0.5)
    rank = _e("t2v_MnR", 13.5, lower=True)
    base = _file({"platform": INTEL, "entries": {rank.key: _b(10.0, lower=True)}},
                 {"platform": AMD, "entries": {rank.key: _b(12.0, lower=True)}}, spread={"retrieval | t2v_MnR": 0.6})
    (v,), _, _ = gate({rank.key: rank}, base, None)  # a resumed run of mixed platforms is unknown too
    assert v.status == "worse" and v.bound == pytest.approx(13.2)


def test_with_one_platform_recorded_an_unknown_one_fails_only_on_missing_values():
    from samplerbench.tasks.quality import gate

    e, gone = _e("t2v_R@1", 0.0), _e("t2v_R@5", 0.7)
    base = _file(_section(INTEL, **{e.key: 0.5, gone.key: 0.7}))
    verdicts, how, _ = gate({e.key: e}, base, AMD)
    assert {v.key: v.status for v in verdicts} == {e.key: "changed", gone.key: "missing"}
    assert "no spread measured" in how
    text = report(verdicts, "interval", how, across=True)
    assert "outside the baseline's bootstrap interval" not in text and "FAIL: 1 value" in text


def _run(tmp_path, name, platforms, values):
    """A run folder as the runner writes it: rows, a summary, one provenance record per invocation."""
    import json

    run = tmp_path / name
    (run / "cells").mkdir(parents=True)
    (run / "provenance").mkdir()
    for i, p in enumerate(platforms):
        hw = {"cpu": p.get("cpu")} if p.get("old") else {"cpu": p.get("cpu"), "cpu_platform": p}
        (run / "provenance" / f"{i}.json").write_text(json.dumps({"hardware": hw}))
    (run / "summary.json").write_text(json.dumps({"provenance_id": name}))
    rows = ["task,label,budget,seed,metric,value"] + [f"retrieval,uniform,4,0,{m},{v}" for m, v in values.items()]
    (run / "rows.csv").write_text("\n".join(rows) + "\n")
    return run


class _Task:
    rows_file = "rows.csv"
    quality = ("t2v_R@1", "t2v_R@5")
    lower_is_better = ()


def test_recording_a_platform_replaces_its_own_section_and_keeps_the_others(tmp_path, capsys):
    import json

    from samplerbench.tasks.quality import run_gate, run_platform

    tasks = {"retrieval": _Task}
    path = tmp_path / "quality.json"
    intel = _run(tmp_path, "intel", [INTEL], {"t2v_R@1": 10.0, "t2v_R@5": 20.0})
    amd = _run(tmp_path, "amd", [AMD, AMD], {"t2v_R@1": 11.0, "t2v_R@5": 20.0})
    assert run_gate(intel, tasks, path, update=True) == 0
    assert run_gate(amd, tasks, path, update=True) == 0
    base = json.loads(path.read_text())
    assert [s["platform"] for s in base["platforms"]] == [INTEL, AMD]
    assert base["platform_spread"]["retrieval | t2v_R@1"] == pytest.approx(1.0)
    amd2 = _run(tmp_path, "amd2", [AMD], {"t2v_R@1": 12.0, "t2v_R@5": 21.0})
    assert run_gate(amd2, tasks, path, update=True) == 0
    base = json.loads(path.read_text())
    assert [s["run"] for s in base["platforms"]] == ["intel", "amd2"]
    assert base["platform_spread"]["retrieval | t2v_R@1"] == pytest.approx(2.0)
    capsys.readouterr()
    assert run_gate(amd2, tasks, path) == 0 and "exactly" in capsys.readouterr().out
    assert run_gate(amd, tasks, path) == 1  # 11 < 12 with no interval: worse on its own platform
    # a run resumed on another machine has no single platform: gated across, never recorded
    mixed = _run(tmp_path, "mixed", [AMD, INTEL], {"t2v_R@1": 11.0, "t2v_R@5": 20.0})
    assert run_platform(mixed) is None
    capsys.readouterr()
    assert run_gate(mixed, tasks, path) == 0 and "no baseline section" in capsys.readouterr().out
    assert run_gate(mixed, tasks, path, update=True) == 2 and "no single CPU platform" in capsys.readouterr().out
    # a record from before cpu_platform: the model name is all it has
    assert run_platform(_run(tmp_path, "old", [{"cpu": "AMD EPYC", "old": True}], {})) == {"cpu": "AMD EPYC"}


def test_dropping_the_other_platforms_keeps_only_this_one_and_the_spread_measured_before(tmp_path, capsys):
    """After a change that moves every platform's numbers, the other sections are stale: the
    record keeps this run's section alone and the spread measured before; a run on the dropped
    platform is then gated across this one with that spread, not exactly against stale values."""
    import json

    from samplerbench.cli import main
    from samplerbench.tasks.quality import run_gate

    tasks = {"retrieval": _Task}
    path = tmp_path / "quality.json"
    assert run_gate(_run(tmp_path, "intel", [INTEL], {"t2v_R@1": 10.0, "t2v_R@5": 20.0}), tasks, path, update=True) == 0
    assert run_gate(_run(tmp_path, "amd", [AMD], {"t2v_R@1": 11.0, "t2v_R@5": 20.0}), tasks, path, update=True) == 0
    changed = _run(tmp_path, "amd-new", [AMD], {"t2v_R@1": 14.0, "t2v_R@5": 20.5})
    assert run_gate(changed, tasks, path, update=True, drop_others=True) == 0
    base = json.loads(path.read_text())
    assert [s["run"] for s in base["platforms"]] == ["amd-new"]
    assert base["platform_spread"]["retrieval | t2v_R@1"] == pytest.approx(1.0)  # not 4 (10 vs 14): the change's
    capsys.readouterr()
    # Intel's old value (10) against 14 - 2 x 1: worse; 13 passes; neither exactly against 10
    assert run_gate(_run(tmp_path, "intel-old", [INTEL], {"t2v_R@1": 10.0, "t2v_R@5": 20.5}), tasks, path) == 1
    assert "no baseline section" in capsys.readouterr().out
    assert run_gate(_run(tmp_path, "intel-new", [INTEL], {"t2v_R@1": 13.0, "t2v_R@5": 20.5}), tasks, path) == 0
    # the CLI flag goes with --update-baseline only
    assert main(["quality", str(changed), "--baseline", str(path), "--drop-other-platforms"]) == 2


def test_the_cpu_platform_names_the_vendor_and_torchs_kernel_set():
    import torch

    from samplerbench.devices import cpu_platform
    from samplerbench.store.provenance import hardware

    p = cpu_platform()
    assert p["capability"] == torch.backends.cpu.get_cpu_capability()
    assert hardware("cpu")["cpu_platform"] == p


# --- readers that did not learn -----------------------------------------------------------------


def test_a_reader_that_learned_in_the_baseline_and_not_now_fails_and_is_named():
    from dataclasses import replace

    from samplerbench.tasks.quality import gate

    e = replace(_e("t2v_R@1", 0.30), reader="did not learn")
    learned = _section(AMD, **{e.key: 0.30})
    verdicts, _, _ = gate({e.key: e}, _file(learned), AMD)
    assert [v.status for v in verdicts] == ["unlearned"] and verdicts[0].fails
    text = report(verdicts, "interval", unlearned=["retrieval | uniform"])
    assert "UNLEARNED" in text and "READER DID NOT LEARN" in text and "retrieval | uniform" in text and "FAIL" in text
    # at chance in the baseline too: the value is gated as usual, and the report still names it
    was = _section(AMD, **{e.key: 0.30})
    was["entries"][e.key]["reader"] = "did not learn"
    verdicts, _, _ = gate({e.key: e}, _file(was), AMD)
    assert [v.status for v in verdicts] == ["same"]
    assert "READER DID NOT LEARN" in report(verdicts, "interval", unlearned=["retrieval | uniform"])
