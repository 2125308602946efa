"""The quality gate: a run's quality metrics against a committed baseline
(``results/baselines/quality.json``), beside the throughput gate in CI.

The baseline holds, per (task, method label, budget) and quality metric, the value (the mean over
seeds), each seed's value and, where the task resamples the metric, its bootstrap interval from
the run's ``<task>_intervals.csv``. On CPU a run is bit-reproducible, so *any* change of a value is
reported, with the cells it touches; the gate fails only when a metric got worse beyond the
tolerance: by default, outside the baseline's bootstrap interval (below ``lo``, or above ``hi``
for a rank where less is better); metrics without an interval (medians of ranks, the reduction
task's) fall back to ``absolute`` (default 0: any worsening fails). A baseline entry the run lacks
fails too (a method that stopped running hides whatever it would have shown); an entry the
baseline lacks is reported as new. A value whose reader (or the method's own trained piece) did
not learn (rows' ``reader``) is named in the report whatever its value; it fails as ``unlearned``
when that reader learned in the baseline.

Bit-reproducibility holds per *CPU platform* only (:func:`samplerbench.devices.cpu_platform`:
vendor, family, model, torch's kernel set): MKL and oneDNN take other kernels on another CPU, the
trained pieces come out different, and the quick suite's values move by as much as a regression
would (seen: an AMD EPYC against the Intel Xeon baseline, mAP by up to 0.04, accuracies by 0.09).
So the file keeps one section per platform, and a run is gated exactly against its own platform's
section. On a platform with none, values cannot be held to the same standard: each is gated
against the recorded platforms' values widened by ``spread_k`` times the cross-platform spread of
its (task, metric): the largest difference between two recorded platforms' values of that metric.
The largest, not an RMS: platform differences are heavy-tailed (a hit rate that most methods keep
moves by 0.075 for one), and a gate on a machine nobody measured must not cry wolf. That catches a
broken method, not a small regression, and the report says so.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from samplerbench.devices import describe_platform, own_section, platform_matches
from samplerbench.metrics.stats import NOT_LEARNED

DEFAULT_BASELINE = Path("results/baselines/quality.json")
SPREAD_K = 2.0  # a third platform may differ from the envelope by twice what two platforms did
UPDATE_HINT = "nox -s quality -- --update-baseline  (or: samplerbench quality RUN --update-baseline)"
EPS = 1e-9  # float round-off of a mean over seeds, not a change


@dataclass(frozen=True)
class Entry:
    """One (task, label, budget, metric) of a run or a baseline."""

    task: str
    label: str
    budget: str
    metric: str
    value: float
    seeds: dict[str, float]
    lo: float | None = None
    hi: float | None = None
    lower_is_better: bool = False
    reader: str = ""  # "did not learn" when a cell's reader is at chance (rows' reader column)

    @property
    def key(self) -> str:
        return f"{self.task} | {self.label} | N={self.budget} | {self.metric}"


def _finite(x) -> float | None:
    return float(x) if x is not None and not (isinstance(x, float) and math.isnan(x)) else None


def run_entries(run_dir: Path, tasks: dict) -> dict[str, Entry]:
    """Every quality metric of a run's rows, by :attr:`Entry.key`; intervals where the run has them."""
    out: dict[str, Entry] = {}
    for name, cls in tasks.items():
        rows_path = Path(run_dir) / cls.rows_file
        if not rows_path.is_file():
            continue
        rows = pd.read_csv(rows_path, dtype={"budget": str, "seed": str})
        rows = rows[(rows["task"] == name) & rows["metric"].isin(cls.quality)]
        ivs = Path(run_dir) / f"{name}_intervals.csv"
        bounds = {}
        if ivs.is_file():
            iv = pd.read_csv(ivs, dtype={"budget": str})
            bounds = {(r.label, r.budget, r.metric): (r.lo, r.hi) for r in iv.itertuples()}
        for (label, budget, metric), g in rows.groupby(["label", "budget", "metric"], sort=True):
            lo, hi = bounds.get((label, budget, metric), (None, None))
            unlearned = "reader" in g and (g["reader"].astype("string").fillna("") == NOT_LEARNED).any()
            e = Entry(name, label, budget, metric, float(g["value"].mean()),
                      {s: float(v) for s, v in zip(g["seed"], g["value"], strict=True)},
                      _finite(lo), _finite(hi), metric in cls.lower_is_better, NOT_LEARNED if unlearned else "")
            out[e.key] = e
    return out


def run_platform(run_dir: Path) -> dict | None:
    """The CPU platform a run was computed on, from its provenance records; None when it has
    none or its invocations (a resumed run) ran on different platforms."""
    found = []
    for path in sorted((Path(run_dir) / "provenance").glob("*.json")):
        hw = json.loads(path.read_text()).get("hardware", {})
        found.append(hw.get("cpu_platform") or {"cpu": hw.get("cpu")})  # records older than cpu_platform
    return found[0] if found and all(f == found[0] for f in found) else None


def sections(baseline: dict) -> list[dict]:
    """The baseline's per-platform sections; a file from before platforms is one section that
    matches any platform."""
    return baseline["platforms"] if "platforms" in baseline else [{"platform": {}, **baseline}]


def _metric_of(key: str) -> str:
    task, _label, _budget, metric = key.split(" | ")
    return f"{task} | {metric}"


def platform_spread(secs: list[dict]) -> dict[str, float]:
    """Per "task | metric": the largest absolute difference of one entry's values between two
    recorded platforms (over entries and platform pairs)."""
    import itertools

    import numpy as np

    diffs: dict[str, list[float]] = {}
    for a, b in itertools.combinations(secs, 2):
        for key in a["entries"].keys() & b["entries"].keys():
            diffs.setdefault(_metric_of(key), []).append(a["entries"][key]["value"] - b["entries"][key]["value"])
    return {m: float(np.max(np.abs(d))) for m, d in sorted(diffs.items())}


def baseline_from(run_dir: Path, tasks: dict, absolute: float = 0.0, previous: dict | None = None,
                  keep_others: bool = True) -> dict:
    """The baseline file's content: ``previous``'s sections, with this run's replacing those of
    its platform, and the cross-platform spread measured again. ``keep_others=False`` (a change
    that moves every platform's numbers, e.g. another kernel layout): only this run's section,
    and the spread measured before kept (how far two platforms differ is the machines', not the
    change's), so another platform is gated across this one until it records its own."""
    entries = run_entries(run_dir, tasks)
    platform = run_platform(run_dir)
    if platform is None:
        raise ValueError(f"{run_dir}: no single CPU platform in its provenance records (resumed on another "
                         "machine?); record a baseline from a run made on one machine")
    summary = json.loads((Path(run_dir) / "summary.json").read_text()) if (Path(run_dir) / "summary.json").is_file() else {}
    section = {"platform": platform, "run": Path(run_dir).name,
               "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "provenance_id": summary.get("provenance_id"),
               "entries": {k: {"value": e.value, "seeds": e.seeds, "lo": e.lo, "hi": e.hi,
                               "lower_is_better": e.lower_is_better, "reader": e.reader} for k, e in entries.items()}}
    kept = [s for s in sections(previous or {"platforms": []}) if not platform_matches(s["platform"], platform)]
    secs = [*kept, section] if keep_others else [section]
    spread = platform_spread(secs) if keep_others else (previous or {}).get("platform_spread", {})
    return {"about": "quality gate baseline, one section per CPU platform: per (task, label, budget, metric) the "
                     "value (mean over seeds), each seed's value and the bootstrap interval; platform_spread: the "
                     "largest difference between two platforms per (task, metric); see samplerbench.tasks.quality",
            "tolerance": "interval", "absolute": absolute, "spread_k": SPREAD_K,
            "platform_spread": spread, "platforms": secs}


@dataclass
class Verdict:
    key: str
    status: str  # same, changed (within tolerance), better, worse, new, missing, unlearned
    now: float | None
    baseline: float | None
    bound: float | None  # the limit a worse value crossed (or had to cross)
    seeds: list[str]  # the seeds (cells) whose value changed

    @property
    def fails(self) -> bool:
        return self.status in ("worse", "missing", "unlearned")


def _limit(b: dict, tolerance: str | float, absolute: float) -> float:
    """The worst value the baseline entry allows."""
    sign = 1 if b.get("lower_is_better") else -1
    if tolerance == "interval" and b.get("lo") is not None and b.get("hi") is not None:
        return b["hi"] if sign > 0 else b["lo"]
    allowance = absolute if tolerance == "interval" else float(tolerance)
    return b["value"] + sign * allowance


def compare(entries: dict[str, Entry], baseline: dict, tolerance: str | float | None = None) -> list[Verdict]:
    """One verdict per key in the run or the baseline, in key order."""
    tolerance = baseline.get("tolerance", "interval") if tolerance is None else tolerance
    absolute = float(baseline.get("absolute", 0.0))
    base = baseline["entries"]
    verdicts = []
    for key in sorted(set(base) | set(entries)):
        b, e = base.get(key), entries.get(key)
        if b is None:
            verdicts.append(Verdict(key, "new", e.value, None, None, sorted(e.seeds)))
            continue
        if e is None:
            verdicts.append(Verdict(key, "missing", None, b["value"], None, sorted(b["seeds"])))
            continue
        seeds = sorted(s for s in set(b["seeds"]) | set(e.seeds)
                       if abs(b["seeds"].get(s, math.inf) - e.seeds.get(s, -math.inf)) > EPS)
        limit = _limit(b, tolerance, absolute)
        worse_by = (e.value - b["value"]) * (1 if b.get("lower_is_better") else -1)
        if abs(e.value - b["value"]) <= EPS and not seeds:
            status = "same"
        elif (e.value > limit + EPS) if b.get("lower_is_better") else (e.value < limit - EPS):
            status = "worse"
        else:
            status = "better" if worse_by < -EPS else "changed"
        verdicts.append(Verdict(key, status, e.value, b["value"], limit, seeds))
    return verdicts


def compare_across(entries: dict[str, Entry], baseline: dict) -> list[Verdict]:
    """A run of a platform the baseline has no section for: each value against the recorded
    platforms' values, widened by ``spread_k`` x the platform spread of its (task, metric). A metric
    with no spread measured (one platform recorded) is reported, never failed; a missing entry fails."""
    secs = sections(baseline)
    spread = baseline.get("platform_spread", {})
    k = float(baseline.get("spread_k", SPREAD_K))
    verdicts = []
    for key in sorted({key for s in secs for key in s["entries"]} | set(entries)):
        recorded = [s["entries"][key] for s in secs if key in s["entries"]]
        e = entries.get(key)
        if not recorded:
            verdicts.append(Verdict(key, "new", e.value, None, None, sorted(e.seeds)))
            continue
        values = [b["value"] for b in recorded]
        mean = sum(values) / len(values)
        if e is None:
            verdicts.append(Verdict(key, "missing", None, mean, None, sorted(recorded[0]["seeds"])))
            continue
        sign = 1 if recorded[0].get("lower_is_better") else -1  # +1: more is worse
        moved = spread.get(_metric_of(key))
        limit = None if moved is None else (max(values) + k * moved if sign > 0 else min(values) - k * moved)
        if limit is not None and sign * (e.value - limit) > EPS:
            status = "worse"
        elif sign * (e.value - (min(values) if sign > 0 else max(values))) < -EPS:
            status = "better"  # better than every platform recorded
        else:
            status = "changed"
        verdicts.append(Verdict(key, status, e.value, mean, limit, []))  # another platform: no seed is comparable
    return verdicts


def _unlearned(verdicts: list[Verdict], entries: dict[str, Entry], secs: list[dict]) -> list[Verdict]:
    """A value whose reader did not learn, where the baseline's (any recorded section's) did:
    ``unlearned``, which fails; a value whose reader did not learn in the baseline either keeps its
    verdict (the report names it all the same)."""
    for v in verdicts:
        e = entries.get(v.key)
        if e is None or e.reader != NOT_LEARNED:
            continue
        before = [sec["entries"][v.key].get("reader", "") for sec in secs if v.key in sec["entries"]]
        if before and any(r != NOT_LEARNED for r in before):
            v.status = "unlearned"
    return verdicts


def gate(entries: dict[str, Entry], baseline: dict, platform: dict | None,
         tolerance: str | float | None = None) -> tuple[list[Verdict], str, bool]:
    """The verdicts against the baseline section of the run's platform (the most specific one
    that matches), else across the recorded platforms; a line saying which; whether across."""
    own = own_section(sections(baseline), platform)
    if own is not None:
        section = {**baseline, **own}
        return (_unlearned(compare(entries, section, tolerance), entries, [own]),
                f"this run's platform ({describe_platform(platform)}): gated exactly against its own baseline section "
                f"(run {own.get('run')}, recorded {own.get('recorded')})", False)
    secs = sections(baseline)
    return (_unlearned(compare_across(entries, baseline), entries, secs),
            f"no baseline section for this run's platform ({describe_platform(platform)}); gated across the "
            f"{len(secs)} recorded platform(s) ({'; '.join(describe_platform(s['platform']) for s in secs)}): worse = beyond "
            f"their values by more than {baseline.get('spread_k', SPREAD_K):g} x the largest difference two recorded platforms showed in that metric, which "
            f"catches a broken method, not a small regression"
            + ("" if baseline.get("platform_spread") else " (no spread measured: one platform recorded; nothing is "
               "gated but missing values)")
            + f". Record this platform's section: {UPDATE_HINT}", True)


def report(verdicts: list[Verdict], tolerance: str | float, how: str = "", across: bool = False,
           unlearned: list[str] | None = None) -> str:
    """The gate's text: counts, the rule (``how``: which baseline section ruled), then every value
    that is not the same, worst first; ``unlearned``: the (task, method) pairs whose reader did
    not learn."""
    counts = pd.Series([v.status for v in verdicts]).value_counts().to_dict() if verdicts else {}
    rule = ("worse = outside the baseline's bootstrap interval (no interval: by more than the baseline's 'absolute')"
            if tolerance == "interval" else f"worse = by more than {tolerance} (metric units)")
    lines = [f"quality gate: {len(verdicts)} values; " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
             + ("" if across else f"  [{rule}]")]
    if how:
        lines.append(f"  {how}")
    order = {"unlearned": 0, "worse": 1, "missing": 2, "changed": 3, "better": 4, "new": 5}
    for v in sorted((v for v in verdicts if v.status != "same"), key=lambda v: (order[v.status], v.key)):
        now = "-" if v.now is None else f"{v.now:.4f}"
        was = "-" if v.baseline is None else f"{v.baseline:.4f}"
        limit = "" if v.bound is None else f" (limit {v.bound:.4f})"
        cells = f"; changed in seed(s) {', '.join(v.seeds)}" if v.seeds and v.status not in ("new", "missing") else ""
        lines.append(f"  {v.status.upper():8s} {v.key}: {was} -> {now}{limit}{cells}")
    if unlearned:
        lines.append("  READER DID NOT LEARN (validation within chance; these values are no comparison): "
                     + ", ".join(unlearned))
    failed = [v for v in verdicts if v.fails]
    if failed:
        lines.append(f"FAIL: {len(failed)} value(s) worse than the baseline allows or missing. After an intended "
                     f"change, record a new baseline: {UPDATE_HINT}")
    else:
        lines.append("PASS" + ("" if all(v.status == "same" for v in verdicts) else
                               f" (values changed within tolerance; to record them: {UPDATE_HINT})"))
    return "\n".join(lines)


def run_gate(run_dir: Path, tasks: dict, baseline_path: Path = DEFAULT_BASELINE,
             tolerance: str | float | None = None, update: bool = False, drop_others: bool = False) -> int:
    """Exit code: 0 pass (or baseline written), 1 fail, 2 no baseline / not a run.
    ``drop_others`` (with ``update``): the other platforms' sections go (see :func:`baseline_from`)."""
    if not (Path(run_dir) / "cells").is_dir():
        print(f"{run_dir}: not a run folder (no cells/)")
        return 2
    if update:
        previous = json.loads(baseline_path.read_text()) if baseline_path.is_file() else None
        try:
            base = baseline_from(run_dir, tasks, previous=previous, keep_others=not drop_others)
        except ValueError as err:
            print(err)
            return 2
        if not base["platforms"][-1]["entries"]:
            print(f"{run_dir}: no quality rows to record")
            return 2
        baseline_path.parent.mkdir(parents=True, exist_ok=True)
        baseline_path.write_text(json.dumps(base, indent=1, sort_keys=True) + "\n")
        print(f"quality baseline written: {baseline_path} ({len(base['platforms'][-1]['entries'])} values from "
              f"{Path(run_dir).name}, platform {base['platforms'][-1]['platform']}; {len(base['platforms'])} platform(s) "
              f"recorded)")
        return 0
    if not baseline_path.is_file():
        print(f"{baseline_path}: no quality baseline; record one with {UPDATE_HINT}")
        return 2
    baseline = json.loads(baseline_path.read_text())
    tol = baseline.get("tolerance", "interval") if tolerance is None else tolerance
    entries = run_entries(run_dir, tasks)
    verdicts, how, across = gate(entries, baseline, run_platform(run_dir), tol)
    unlearned = sorted({f"{e.task} | {e.label}" for e in entries.values() if e.reader == NOT_LEARNED})
    print(report(verdicts, tol, how, across, unlearned))
    return 1 if any(v.fails for v in verdicts) else 0
