"""The throughput gate: compare a pytest-benchmark run against the committed baseline.

Shared CI machines drift 10-30% between runs, so absolute times cannot gate. Each benchmark is
timed beside a fixed reference workload in the same run; the gate compares the *normalised*
time (the median over rounds of round time / reference time just before it) with the
baseline's. Slower by more than the
tolerance fails; faster by more than it is reported, with the command that updates the
baseline; a benchmark with no baseline (a new sampler) is reported as new, never failed.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_BASELINE = Path("results/baselines/throughput.json")
DEFAULT_TOLERANCE = 0.5
UPDATE_HINT = "nox -s throughput -- --update-baseline"


@dataclass
class Verdict:
    name: str
    status: str  # ok, regression, improvement, new, missing
    now: float | None
    baseline: float | None

    @property
    def change(self) -> float | None:
        if self.now is None or self.baseline is None:
            return None
        return self.now / self.baseline - 1


def normalised_times(run: dict) -> dict[str, dict]:
    """{benchmark name: {normalised, min_s, reference_min_s}} from a pytest-benchmark JSON.
    ``normalised`` is the median over rounds of (round time / reference time just before it)
    where the benchmark recorded it, else its minimum over the reference's minimum."""
    out = {}
    for b in run["benchmarks"]:
        info = b.get("extra_info", {})
        ref = info.get("reference_min_s")
        if not ref:
            raise ValueError(f"benchmark {b['name']}: no reference time (run it through the 'normalised' fixture)")
        norm = info.get("normalised", b["stats"]["min"] / ref)
        out[b["name"]] = {"normalised": norm, "min_s": b["stats"]["min"], "reference_min_s": ref,
                          "reference": info.get("reference")}
    return out


def combined(runs: list[dict], how: str) -> dict[str, dict]:
    """Per benchmark across several runs: the ``min`` normalised time (best of the attempts: a
    regression must persist on a re-run to count) or the ``median`` (for a baseline)."""
    import numpy as np

    per = [normalised_times(r) for r in runs]
    out = {}
    for name in dict.fromkeys(n for p in per for n in p):
        vals = [p[name] for p in per if name in p]
        pick = np.min if how == "min" else np.median
        norm = float(pick([v["normalised"] for v in vals]))
        out[name] = {**vals[0], "normalised": norm, "runs": len(vals)}
    return out


def compare(run: dict | list[dict], baseline: dict, tolerance: float) -> list[Verdict]:
    now = combined(run if isinstance(run, list) else [run], "min")
    base = baseline.get("benchmarks", {})
    verdicts = []
    for name, v in now.items():
        if name not in base:
            verdicts.append(Verdict(name, "new", v["normalised"], None))
            continue
        b = base[name]["normalised"]
        ratio = v["normalised"] / b
        status = "regression" if ratio > 1 + tolerance else "improvement" if ratio < 1 / (1 + tolerance) else "ok"
        verdicts.append(Verdict(name, status, v["normalised"], b))
    verdicts += [Verdict(name, "missing", None, base[name]["normalised"]) for name in base if name not in now]
    return verdicts


def baseline_from(runs: list[dict], tolerance: float) -> dict:
    return {"about": "normalised time = median over rounds of (round time / reference time just before it), "
                     "per call; the baseline is the median over the runs; see README",
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "tolerance": tolerance,
            "runs": len(runs), "machine": runs[0].get("machine_info", {}).get("samplerbench", {}),
            "benchmarks": combined(runs, "median")}


def report(verdicts: list[Verdict], tolerance: float) -> str:
    lines = [f"throughput gate: normalised time vs baseline, tolerance {100 * tolerance:.0f}%", ""]
    for v in sorted(verdicts, key=lambda v: (v.status == "ok", v.name)):
        ch = "" if v.change is None else f"{100 * v.change:+6.1f}%"
        now = "" if v.now is None else f"{v.now:10.4f}"
        base = "" if v.baseline is None else f"{v.baseline:10.4f}"
        lines.append(f"  {v.status:11s} {ch:>8s}  now {now:>10s}  baseline {base:>10s}  {v.name}")
    counts = {s: sum(v.status == s for v in verdicts) for s in ("regression", "improvement", "new", "missing", "ok")}
    lines.append("")
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()))
    if counts["improvement"] or counts["new"]:
        lines.append(f"faster or new benchmarks: record them with `{UPDATE_HINT}` (and commit the baseline)")
    return "\n".join(lines)


def run_gate(run_json: Path | list[Path], baseline_path: Path = DEFAULT_BASELINE, tolerance: float | None = None,
             update: bool = False) -> int:
    """Print the verdicts; 1 on a regression, else 0. Several run files: each benchmark's best
    attempt is gated. ``update`` rewrites the baseline from the runs' medians."""
    paths = [Path(p) for p in (run_json if isinstance(run_json, list) else [run_json])]
    runs = [json.loads(p.read_text()) for p in paths]
    baseline = json.loads(baseline_path.read_text()) if baseline_path.is_file() else {}
    tol = tolerance if tolerance is not None else float(baseline.get("tolerance", DEFAULT_TOLERANCE))
    verdicts = compare(runs, baseline, tol)
    print(report(verdicts, tol))
    paths[-1].with_suffix(".gate.json").write_text(json.dumps(
        {"baseline": str(baseline_path), "tolerance": tol,
         "verdicts": [{**v.__dict__, "change": v.change} for v in verdicts]}, indent=1))
    if update:
        baseline_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = baseline_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(baseline_from(runs, tol), indent=1, sort_keys=True) + "\n")
        tmp.replace(baseline_path)
        print(f"baseline updated: {baseline_path}")
        return 0
    return 1 if any(v.status == "regression" for v in verdicts) else 0
