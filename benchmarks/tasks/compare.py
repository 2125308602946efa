"""Two runs side by side (``samplerbench compare RUN_A RUN_B``): per cell both runs computed and
per resampled quality metric, B - A with its paired bootstrap interval over the videos both
evaluated (the same resampled videos for both runs), and the cells found in one run only.

Cells are matched by key (method and its parameters' hash, budget, seed), the same key a rerun
reuses; videos by id, so a run on a subset of the other's videos compares on the shared ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from samplerbench.metrics.stats import (
    BootstrapConfig,
    bootstrap_p_value,
    percentile_interval,
    resample_indices,
)
from samplerbench.store.cells import load_predictions


def _cells(run_dir: Path, task: str) -> dict[str, dict]:
    folder = Path(run_dir) / "cells" / task
    out = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        rec = json.loads(path.read_text())
        out[rec["cell"]] = rec
    return out


def compare_runs(run_a: Path, run_b: Path, tasks: dict,
                 cfg: BootstrapConfig | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(differences, one-sided cells). ``tasks``: {name: Task class} (the runner's registry)."""
    cfg = cfg or BootstrapConfig()
    diffs, alone = [], []
    for name, cls in tasks.items():
        a, b = _cells(run_a, name), _cells(run_b, name)
        if not a and not b:
            continue
        task = cls()
        for key in sorted(set(a) ^ set(b)):
            rec = a.get(key) or b.get(key)
            alone.append({"task": name, "cell": key, "label": rec.get("label"), "budget": rec.get("budget"),
                          "seed": rec.get("seed"), "only_in": "A" if key in a else "B"})
        if not task.resampled_metrics:
            continue
        for key in sorted(set(a) & set(b)):
            ra, rb = a[key], b[key]
            ids_b = {v["video"] for v in rb["videos"]}
            order = [v["video"] for v in ra["videos"] if v["video"] in ids_b]
            if not order:
                continue
            va, pa = task.aligned(ra["videos"], load_predictions(Path(run_a) / "cells" / name, ra), order)
            vb, pb = task.aligned(rb["videos"], load_predictions(Path(run_b) / "cells" / name, rb), order)
            idx = resample_indices(len(order), cfg.resamples, cfg.seed)
            ident = np.arange(len(order))[None, :]
            da, db = task.resampled(va, pa, idx), task.resampled(vb, pb, idx)
            pa0, pb0 = task.resampled(va, pa, ident), task.resampled(vb, pb, ident)
            for metric in sorted(set(da) & set(db)):
                d = db[metric] - da[metric]
                lo, hi = percentile_interval(d, cfg.alpha)
                va0, vb0 = float(pa0[metric][0]), float(pb0[metric][0])
                same = va0 == vb0 or (np.isnan(va0) and np.isnan(vb0))  # two NaNs (no event anywhere) agree
                delta = 0.0 if same else vb0 - va0
                diffs.append({"task": name, "cell": key, "label": ra.get("label"), "budget": ra.get("budget"),
                              "seed": ra.get("seed"), "metric": metric, "a": float(pa0[metric][0]),
                              "b": float(pb0[metric][0]), "diff": delta, "changed": not same, "lo": lo, "hi": hi,
                              "p_bootstrap": 1.0 if same else bootstrap_p_value(d),
                              "significant": bool(not same and bootstrap_p_value(d) < cfg.alpha),
                              "n_videos": len(order), "same_fingerprint": ra.get("fingerprint") == rb.get("fingerprint")})
    return pd.DataFrame(diffs), pd.DataFrame(alone)
