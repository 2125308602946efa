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
baseline lacks is reported as new.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

DEFAULT_BASELINE = Path("results/baselines/quality.json")
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
            e = Entry(name, label, budget, metric, float(g["value"].mean()),
                      {s: float(v) for s, v in zip(g["seed"], g["value"], strict=True)},
                      _finite(lo), _finite(hi), metric in cls.lower_is_better)
            out[e.key] = e
    return out


def baseline_from(run_dir: Path, tasks: dict, absolute: float = 0.0) -> dict:
    """The baseline file's content from a run."""
    entries = run_entries(run_dir, tasks)
    summary = json.loads((Path(run_dir) / "summary.json").read_text()) if (Path(run_dir) / "summary.json").is_file() else {}
    return {"about": "quality gate baseline: per (task, label, budget, metric) the value (mean over seeds), each "
                     "seed's value and the bootstrap interval; see samplerbench.tasks.quality",
            "run": Path(run_dir).name, "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "provenance_id": summary.get("provenance_id"), "tolerance": "interval", "absolute": absolute,
            "entries": {k: {"value": e.value, "seeds": e.seeds, "lo": e.lo, "hi": e.hi,
                            "lower_is_better": e.lower_is_better} for k, e in entries.items()}}


@dataclass
class Verdict:
    key: str
    status: str  # same, changed (within tolerance), better, worse, new, missing
    now: float | None
    baseline: float | None
    bound: float | None  # the limit a worse value crossed (or had to cross)
    seeds: list[str]  # the seeds (cells) whose value changed

    @property
    def fails(self) -> bool:
        return self.status in ("worse", "missing")


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


def report(verdicts: list[Verdict], tolerance: str | float) -> str:
    """The gate's text: counts, then every value that is not the same, worst first."""
    counts = pd.Series([v.status for v in verdicts]).value_counts().to_dict() if verdicts else {}
    rule = ("worse = outside the baseline's bootstrap interval (no interval: by more than the baseline's 'absolute')"
            if tolerance == "interval" else f"worse = by more than {tolerance} (metric units)")
    lines = [f"quality gate: {len(verdicts)} values; " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
             + f"  [{rule}]"]
    order = {"worse": 0, "missing": 1, "changed": 2, "better": 3, "new": 4}
    for v in sorted((v for v in verdicts if v.status != "same"), key=lambda v: (order[v.status], v.key)):
        now = "-" if v.now is None else f"{v.now:.4f}"
        was = "-" if v.baseline is None else f"{v.baseline:.4f}"
        limit = "" if v.bound is None else f" (limit {v.bound:.4f})"
        cells = f"; seeds changed: {', '.join(v.seeds)}" if v.seeds and v.status not in ("new", "missing") else ""
        lines.append(f"  {v.status.upper():8s} {v.key}: {was} -> {now}{limit}{cells}")
    failed = [v for v in verdicts if v.fails]
    if failed:
        lines.append(f"FAIL: {len(failed)} value(s) worse than the baseline allows or missing. After an intended "
                     f"change, record a new baseline: {UPDATE_HINT}")
    else:
        lines.append("PASS" + ("" if all(v.status == "same" for v in verdicts) else
                               f" (values changed within tolerance; to record them: {UPDATE_HINT})"))
    return "\n".join(lines)


def run_gate(run_dir: Path, tasks: dict, baseline_path: Path = DEFAULT_BASELINE,
             tolerance: str | float | None = None, update: bool = False) -> int:
    """Exit code: 0 pass (or baseline written), 1 fail, 2 no baseline / not a run."""
    if not (Path(run_dir) / "cells").is_dir():
        print(f"{run_dir}: not a run folder (no cells/)")
        return 2
    if update:
        base = baseline_from(run_dir, tasks)
        if not base["entries"]:
            print(f"{run_dir}: no quality rows to record")
            return 2
        baseline_path.parent.mkdir(parents=True, exist_ok=True)
        baseline_path.write_text(json.dumps(base, indent=1, sort_keys=True) + "\n")
        print(f"quality baseline written: {baseline_path} ({len(base['entries'])} values from {Path(run_dir).name})")
        return 0
    if not baseline_path.is_file():
        print(f"{baseline_path}: no quality baseline; record one with {UPDATE_HINT}")
        return 2
    baseline = json.loads(baseline_path.read_text())
    tol = baseline.get("tolerance", "interval") if tolerance is None else tolerance
    verdicts = compare(run_entries(run_dir, tasks), baseline, tol)
    print(report(verdicts, tol))
    return 1 if any(v.fails for v in verdicts) else 0
