"""The throughput gate: compare a pytest-benchmark run against the committed baseline.

Shared CI machines drift 10-30% between runs, so absolute times cannot gate. Each benchmark is
timed beside a fixed reference workload in the same run; the gate compares the *normalised*
time (the median over rounds of round time / reference time just before it) with the
baseline's.

The reference removes most of a machine's drift, not all of it: on the CI machine of
2026-11-22 the median benchmark came out 15% slower than the baseline machine, every kind of
work together (a different CPU balances interpreter, numpy, FFmpeg and memory work
differently). So the gate also estimates the run-wide *drift*, the median ratio over all
benchmarks of the first (complete) run, and judges each benchmark against it: a change slows a
few benchmarks, a machine slows them all. Slower than the drift by more than the tolerance
fails; a drift itself beyond the tolerance fails too (an across-the-board slowdown is not
forgiven); faster by more than it is reported, with the command that updates the baseline; a
benchmark with no baseline (a new sampler) is reported as new, never failed. With fewer than
``MIN_FOR_DRIFT`` benchmarks in common the drift is taken as 1.

The reference does not remove what another CPU changes in the *balance* of the work: on an AMD
EPYC (AVX-512) against the Intel Xeon baseline, after the drift, benchmarks ranged from 0.46x
(the encoder's convolutions) to 2.3x (a faiss-kernel FPS comparison), far beyond any tolerance
that still catches a regression. So the baseline keeps one section per machine (CPU platform
and core count, :func:`samplerbench.devices.cpu_platform`) and a run is gated against its
own machine's section. On a machine with none, each benchmark is gated against every recorded
machine and flagged only when it regresses against all of them: the recorded machines' spread is
its allowance, and the report says so.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from samplerbench.devices import describe_platform, own_section, platform_matches

DEFAULT_BASELINE = Path("results/baselines/throughput.json")
DEFAULT_TOLERANCE = 0.5
MIN_FOR_DRIFT = 8  # a median of fewer ratios is too easily one changed benchmark
DRIFT = "(run-wide drift)"  # the verdict that gates the drift itself
UPDATE_HINT = "nox -s throughput -- --update-baseline"


@dataclass
class Verdict:
    name: str
    status: str  # ok, regression, improvement, new, missing, ungated (time reported, not gated)
    now: float | None
    baseline: float | None

    @property
    def change(self) -> float | None:
        if self.now is None or self.baseline is None:
            return None
        return self.now / self.baseline - 1


def normalised_times(run: dict) -> dict[str, dict]:
    """{benchmark name: {normalised, min_s, reference_min_s, time_gated}} from a pytest-benchmark
    JSON. ``normalised`` is the median over rounds of (round time / reference time just before
    it) where the benchmark recorded it, else its minimum over the reference's minimum. A
    benchmark whose target is not its time (the memory benchmark: asserted in the benchmark)
    records ``time_gated: false``: its time is reported, never gated, and not in the drift."""
    out = {}
    for b in run["benchmarks"]:
        info = b.get("extra_info", {})
        ref = info.get("reference_min_s")
        if not ref:
            raise ValueError(f"benchmark {b['name']}: no reference time (run it through the 'normalised' fixture)")
        norm = info.get("normalised", b["stats"]["min"] / ref)
        out[b["name"]] = {"normalised": norm, "min_s": b["stats"]["min"], "reference_min_s": ref,
                          "reference": info.get("reference"), "time_gated": info.get("time_gated", True)}
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


def drift(runs: list[dict], baseline: dict) -> float:
    """The median normalised-time ratio to the baseline over the benchmarks a run shares with
    it: what the machine, not the code, changed. Over several runs the smallest (the best
    attempt, as for a benchmark); runs sharing fewer than ``MIN_FOR_DRIFT`` benchmarks (a re-run
    of the flagged ones) don't count, and with none left it is 1.0."""
    import numpy as np

    base = baseline.get("benchmarks", {})
    found = []
    for run in runs:
        ratios = [v["normalised"] / base[n]["normalised"] for n, v in normalised_times(run).items()
                  if n in base and v["time_gated"]]
        if len(ratios) >= MIN_FOR_DRIFT:
            found.append(float(np.median(ratios)))
    return min(found, default=1.0)


def machine_of(run: dict) -> dict:
    """The machine a pytest-benchmark run was measured on: CPU platform and cores ({} if unrecorded)."""
    hw = run.get("machine_info", {}).get("samplerbench", {})
    if not hw:
        return {}
    return {**(hw.get("cpu_platform") or {"cpu": hw.get("cpu")}), "cpu_cores": hw.get("cpu_cores")}


def sections(baseline: dict) -> list[dict]:
    """The baseline's per-machine sections; a file from before machines is one for any machine."""
    if "machines" in baseline:
        return baseline["machines"]
    return [{"platform": {}, **baseline}] if baseline.get("benchmarks") else []


def _status(ratio: float, tolerance: float) -> str:
    return "regression" if ratio > 1 + tolerance else "improvement" if ratio < 1 / (1 + tolerance) else "ok"


def compare(run: dict | list[dict], baseline: dict, tolerance: float) -> list[Verdict]:
    """Verdicts per benchmark (its best attempt over ``run``, divided by the drift) and one for
    the drift itself (name ``DRIFT``, now = the drift, baseline = 1), against ``baseline``'s
    benchmarks (one section's)."""
    runs = run if isinstance(run, list) else [run]
    now = combined(runs, "min")
    base = baseline.get("benchmarks", {})
    d = drift(runs, baseline)
    verdicts = [Verdict(DRIFT, "regression" if d > 1 + tolerance else "ok", d, 1.0)]
    for name, v in now.items():
        if name not in base:
            verdicts.append(Verdict(name, "new", v["normalised"], None))
            continue
        b = base[name]["normalised"]
        status = _status(v["normalised"] / b / d, tolerance) if v["time_gated"] else "ungated"
        verdicts.append(Verdict(name, status, v["normalised"], b))
    verdicts += [Verdict(name, "missing", None, base[name]["normalised"]) for name in base if name not in now]
    return verdicts


def gate(runs: list[dict], baseline: dict, tolerance: float) -> tuple[list[Verdict], str]:
    """The verdicts against this machine's section; on a machine with none, each benchmark's (and
    the drift's) most favourable verdict over the recorded machines; and a line saying which."""
    machine = machine_of(runs[0])
    own = own_section(sections(baseline), machine) if all(machine_of(r) == machine for r in runs) else None
    if own is not None:
        return compare(runs, own, tolerance), (f"against this machine's section ({describe_platform(own['platform'])}, "
                                               f"recorded {own.get('created_utc')})")
    secs = sections(baseline)
    if not secs:
        return compare(runs, {}, tolerance), "no baseline recorded"
    rank = {"improvement": 0, "ok": 1, "ungated": 1, "new": 2, "missing": 3, "regression": 4}

    def favour(v: Verdict) -> tuple:
        return rank[v.status], v.now / v.baseline if v.now is not None and v.baseline else float("inf")

    per = [compare(runs, s, tolerance) for s in secs]
    best: dict[str, Verdict] = {}
    for v in (v for verdicts in per for v in verdicts):
        if v.name not in best or favour(v) < favour(best[v.name]):
            best[v.name] = v
    order = [v.name for verdicts in per for v in verdicts]
    return [best[n] for n in dict.fromkeys(order)], (
        f"no section for this machine ({describe_platform(machine)}): each benchmark against the {len(secs)} recorded "
        f"machine(s) ({'; '.join(describe_platform(s['platform']) for s in secs)}), a regression only when slower than "
        f"every one of them; record this machine: {UPDATE_HINT}")


def baseline_from(runs: list[dict], tolerance: float, previous: dict | None = None) -> dict:
    """The baseline file: ``previous``'s machine sections, with one from ``runs`` (their medians)
    replacing those of its machine."""
    machine = machine_of(runs[0])
    section = {"platform": machine, "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "runs": len(runs), "machine": runs[0].get("machine_info", {}).get("samplerbench", {}),
               "benchmarks": combined(runs, "median")}
    kept = [s for s in sections(previous or {}) if not platform_matches(s["platform"], machine)]
    return {"about": "normalised time = median over rounds of (round time / reference time just before it), "
                     "per call; per machine section, the median over its runs; see README",
            "tolerance": tolerance, "machines": [*kept, section]}


def report(verdicts: list[Verdict], tolerance: float, how: str = "") -> str:
    d = next((v.now for v in verdicts if v.name == DRIFT), 1.0)
    lines = [f"throughput gate: normalised time vs baseline, tolerance {100 * tolerance:.0f}% beyond the run-wide "
             f"drift ({100 * (d - 1):+.1f}%, the median over the benchmarks; 'change' below is raw, the verdict "
             f"is on change / drift)", *([f"baseline: {how}"] if how else []), ""]
    for v in sorted(verdicts, key=lambda v: (v.status == "ok", v.name != DRIFT, v.name)):
        ch = "" if v.change is None else f"{100 * v.change:+6.1f}%"
        now = "" if v.now is None else f"{v.now:10.4f}"
        base = "" if v.baseline is None else f"{v.baseline:10.4f}"
        lines.append(f"  {v.status:11s} {ch:>8s}  now {now:>10s}  baseline {base:>10s}  {v.name}")
    counts = {s: sum(v.status == s for v in verdicts if v.name != DRIFT)
              for s in ("regression", "improvement", "new", "missing", "ungated", "ok")}
    lines.append("")
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()))
    if counts["improvement"] or counts["new"]:
        lines.append(f"faster or new benchmarks: record them with `{UPDATE_HINT}` (and commit the baseline)")
    return "\n".join(lines)


def run_gate(run_json: Path | list[Path], baseline_path: Path = DEFAULT_BASELINE, tolerance: float | None = None,
             update: bool = False, add_new: bool = False, accept: tuple[str, ...] = ()) -> int:
    """Print the verdicts; 1 on a regression, else 0. Several run files: each benchmark's best
    attempt is gated. ``update`` rewrites the baseline from the runs' medians; ``add_new``
    records only the benchmarks the baseline lacks (a new sampler's), and ``accept`` those whose
    names match one of its patterns (fnmatch: an intended change), keeping every other entry."""
    from fnmatch import fnmatch

    paths = [Path(p) for p in (run_json if isinstance(run_json, list) else [run_json])]
    runs = [json.loads(p.read_text()) for p in paths]
    baseline = json.loads(baseline_path.read_text()) if baseline_path.is_file() else {}
    tol = tolerance if tolerance is not None else float(baseline.get("tolerance", DEFAULT_TOLERANCE))
    verdicts, how = gate(runs, baseline, tol)
    print(report(verdicts, tol, how))
    paths[-1].with_suffix(".gate.json").write_text(json.dumps(
        {"baseline": str(baseline_path), "tolerance": tol, "section": how,
         "verdicts": [{**v.__dict__, "change": v.change} for v in verdicts]}, indent=1))
    if (add_new or accept) and baseline:
        machine = machine_of(runs[0])
        own = own_section(sections(baseline), machine)
        if own is None:
            print(f"no baseline section for this machine ({describe_platform(machine)}) to add to: record one with "
                  f"`{UPDATE_HINT}`")
            return 2

        def taken(name: str) -> bool:
            return (add_new and name not in own["benchmarks"]) or any(fnmatch(name, p) for p in accept)

        new = {k: v for k, v in combined(runs, "median").items() if taken(k)}
        own["benchmarks"].update(new)  # own is one of baseline's sections (or baseline itself, an old file)
        _write(baseline_path, baseline)
        print(f"baseline: recorded {sorted(new) or 'nothing'} in the section of {describe_platform(own['platform'])}")
        return 1 if any(v.status == "regression" and not taken(v.name) for v in verdicts) else 0
    if update:
        base = baseline_from(runs, tol, baseline)
        _write(baseline_path, base)
        print(f"baseline updated: {baseline_path} (this machine's section: {describe_platform(base['machines'][-1]['platform'])}; "
              f"{len(base['machines'])} machine(s) recorded)")
        return 0
    return 1 if any(v.status == "regression" for v in verdicts) else 0


def _write(path: Path, baseline: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(baseline, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)
