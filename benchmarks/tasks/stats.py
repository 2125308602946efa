"""A task's statistics over videos, from the cells' stored predictions: a percentile bootstrap
interval for every resampled quality metric of every (method, budget), and a paired test of each
method against ``uniform`` at the same budget (a token sampler: against its dense reference, every
token of the N uniform frames read by the same token ViT, or else ``tokens-uniform``).

The resamples are drawn once per task over the videos every cell evaluated (in the first cell's
order), so every cell and metric sees the same resampled videos: the difference of two cells on
a resample is paired. With several seeds the bootstrap is hierarchical: each resample also draws
seeds with replacement (the same draw for every method: seed s of a method and of uniform share
replicate s's reader), and a (method, budget)'s value is the mean of the drawn seeds' values on
the resampled videos. A seed is a whole replicate (every learned piece trains once per seed),
so the intervals and tests cover training variance as well as the choice of videos. Written
beside the rows as ``<task>_intervals.csv`` and ``<task>_tests.csv``.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from samplerbench.metrics.stats import (
    BootstrapConfig,
    bootstrap_p_value,
    mcnemar_exact,
    over_seeds,
    percentile_interval,
    resample_indices,
    seed_draws,
)
from samplerbench.store.cells import load_predictions
from samplerbench.store.files import write_csv

BASELINE = "uniform"
TOKEN_BASELINE = "tokens-uniform"  # token samplers are read by a token ViT: their own baseline


def baseline_of(record: dict) -> str:
    """The method a cell is tested against: uniform frames, or every token of uniform frames for
    a token sampler (its videos record ``tokens``), read by the same kind of model."""
    videos = record.get("videos") or [{}]
    return TOKEN_BASELINE if "tokens" in videos[0] else BASELINE


def video_statistics(task, folder: Path, cells: list[tuple], cfg: BootstrapConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(intervals, tests) of a task's cells; empty frames when the task resamples no metric."""
    if not task.resampled_metrics or not cells:
        return pd.DataFrame(), pd.DataFrame()
    common = set.intersection(*({v["video"] for v in rec["videos"]} for _, rec in cells))
    order = [v["video"] for v in cells[0][1]["videos"] if v["video"] in common]
    idx = resample_indices(len(order), cfg.resamples, cfg.seed)
    ident = np.arange(len(order))[None, :]
    # per (label, budget): each seed's values on the resamples, its point values and outcomes
    groups: dict[tuple, dict] = defaultdict(lambda: {"dist": defaultdict(dict), "point": defaultdict(list),
                                                     "correct": {}, "method": None, "baseline": BASELINE})
    for cell, rec in cells:
        videos, preds = task.aligned(rec["videos"], load_predictions(folder, rec), order)
        g = groups[(cell.display, cell.budget)]
        g["method"], g["baseline"] = rec["method"], baseline_of(rec)
        columns = dict(cell.columns)
        g["against"], g["reference"] = columns.get("tested_against"), bool(columns.get("reference_of"))
        for metric, dist in task.resampled(videos, preds, idx).items():
            g["dist"][metric][cell.seed] = dist
        for metric, v in task.resampled(videos, preds, ident).items():
            g["point"][metric].append(float(v[0]))
        correct = task.correct(videos, preds)
        if correct is not None:
            g["correct"][cell.seed] = correct
    intervals, tests = [], []
    level = 1 - cfg.alpha
    draws: dict[int, np.ndarray] = {}  # per number of seeds: one draw, shared by every method (paired)

    def hierarchical(per_seed: dict[int, np.ndarray]) -> np.ndarray:
        s = len(per_seed)
        if s not in draws:
            draws[s] = seed_draws(s, cfg.resamples, cfg.seed)
        return over_seeds(np.stack([per_seed[k] for k in sorted(per_seed)]), draws[s])

    for (label, budget), g in groups.items():
        for metric, dists in g["dist"].items():
            mean = hierarchical(dists)
            lo, hi = percentile_interval(mean, cfg.alpha)
            intervals.append({"task": task.name, "label": label, "method": g["method"], "budget": budget,
                              "metric": metric, "value": float(np.mean(g["point"][metric])), "lo": lo, "hi": hi,
                              "seeds": len(dists), "n_videos": len(order), "resamples": cfg.resamples,
                              "bootstrap_seed": cfg.seed, "level": level,
                              "bootstrap": "hierarchical (seeds, videos)" if len(dists) > 1 else "videos"})
        # a token sampler against its dense reference (the same ViT on every token of the N
        # uniform frames) when the run has it; else uniform frames, or uniform tokens
        base = groups.get((g["against"], budget)) if g["against"] else None
        if base is None:
            base = next((b for (_, bb), b in groups.items()
                         if bb == budget and b["method"] == g["baseline"] and not b["reference"]), None)
        if base is None or base is g or g["reference"] or (g["method"] == g["baseline"] and not g["against"]):
            continue
        base_label = next(lab for (lab, bb), b in groups.items() if b is base)
        for metric, dists in g["dist"].items():
            if metric not in base["dist"] or set(base["dist"][metric]) != set(dists):
                continue  # paired on seeds as on videos: the same replicates on both sides
            diff = hierarchical(dists) - hierarchical(base["dist"][metric])
            lo, hi = percentile_interval(diff, cfg.alpha)
            p = bootstrap_p_value(diff)
            row = {"task": task.name, "label": label, "method": g["method"], "budget": budget, "metric": metric,
                   "baseline": base["method"], "baseline_label": base_label, "diff": float(np.mean(g["point"][metric]) - np.mean(base["point"][metric])),
                   "lo": lo, "hi": hi, "p_bootstrap": p, "significant": bool(p < cfg.alpha),
                   "test": "paired hierarchical bootstrap over seeds and videos" if len(dists) > 1
                   else "paired bootstrap over videos", "seeds": len(dists), "n_videos": len(order), "resamples": cfg.resamples,
                   "alpha": cfg.alpha}
            if metric == "top1" and g["correct"] and set(g["correct"]) == set(base["correct"]):
                seeds = sorted(g["correct"])  # McNemar on the (video, seed) pairs
                row["p_mcnemar"] = mcnemar_exact(np.concatenate([g["correct"][s] for s in seeds]),
                                                 np.concatenate([base["correct"][s] for s in seeds]))
            tests.append(row)
    return pd.DataFrame(intervals), pd.DataFrame(tests)


def write_statistics(task, run_dir: Path, folder: Path, cells: list[tuple], cfg: BootstrapConfig) -> None:
    """``<task>_intervals.csv`` and ``<task>_tests.csv`` beside the rows (removed when empty)."""
    intervals, tests = video_statistics(task, folder, cells, cfg)
    for name, df in (("intervals", intervals), ("tests", tests)):
        path = Path(run_dir) / f"{task.name}_{name}.csv"
        if df.empty:
            path.unlink(missing_ok=True)
        else:
            write_csv(df, path)
