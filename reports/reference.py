"""The papers' published numbers beside the measured ones: a suite's ``[reference]`` table
(copied from the seed READMEs, with the table it comes from), matched to the run's rows by
label, task and (optionally) budget."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from samplerbench.suite import REFERENCE_KEYS as KEYS

#: stored as fractions in the classification rows; papers print percent
FRACTION_METRICS = {"top1", "top5", "mean_class_acc", "balanced_acc", "mAP", "event_hit_rate"}
ROWS_FILES = {"classification": "rows.csv", "retrieval": "retrieval_rows.csv", "reduction": "reduction_rows.csv"}


def comparison(reference: dict, run_dir: Path) -> pd.DataFrame:
    """Per reference row and metric: the paper's value, the measured mean over seeds (percent
    where the paper prints percent) and their difference; ``–`` where the run has no such row."""
    frames = {t: pd.read_csv(Path(run_dir) / f) for t, f in ROWS_FILES.items()
              if (Path(run_dir) / f).is_file() and (Path(run_dir) / f).stat().st_size}
    out = []
    for row in reference.get("rows", []):
        task = row.get("task", "classification")
        df = frames.get(task)
        for metric, paper in row.items():
            if metric in KEYS:
                continue
            measured = float("nan")
            seeds = 0
            if df is not None:
                d = df[(df["label"] == row["label"]) & (df["metric"] == metric)]
                if "budget" in row:
                    d = d[d["budget"].astype(str) == str(row["budget"])]
                if len(d):
                    measured = float(d["value"].mean()) * (100 if metric in FRACTION_METRICS else 1)
                    seeds = int(d["seed"].nunique())
            out.append({"Task": task, "Method": row["label"], "N": row.get("budget", ""), "Metric": metric,
                        "Paper": float(paper), "Measured": measured, "Difference": measured - float(paper),
                        "Seeds": seeds})
    return pd.DataFrame(out)


def reference_points(reference: dict, task: str, metric: str, costs: pd.DataFrame) -> pd.DataFrame:
    """The papers' points for a cost-quality plot: each ``[reference]`` row of ``task`` with
    ``metric``, at the row's own ``gflops_total`` where it gives one, else at the GFLOPs this run
    measured for the same (label, budget) configuration. ``costs``: label, budget, gflops (the
    run's means). Values in the rows' units (fractions where the paper prints percent). Rows
    with no cost either way are left out (a point needs an x)."""
    out = []
    by_label = costs.assign(budget=costs["budget"].astype(str))
    for row in reference.get("rows", []):
        if row.get("task", "classification") != task or metric not in row:
            continue
        gflops = row.get("gflops_total")
        if gflops is None:
            c = by_label[by_label["label"] == row["label"]]
            if "budget" in row:
                c = c[c["budget"] == str(row["budget"])]
            if c.empty:
                continue
            gflops = float(c["gflops"].mean())
        value = float(row[metric]) / (100 if metric in FRACTION_METRICS else 1)
        out.append({"label": row["label"], "budget": row.get("budget", ""), "value": value, "gflops": float(gflops),
                    "cost_from": "paper" if "gflops_total" in row else "measured"})
    return pd.DataFrame(out, columns=["label", "budget", "value", "gflops", "cost_from"])


def render_reference(reference: dict, run_dir: Path, out: Path, write, where: str = "") -> Path | None:
    """``table_reference.{md,tex,csv}``: paper and measured side by side (nothing without a reference)."""
    if not reference.get("rows"):
        return None
    t = comparison(reference, run_dir)
    shown = t.copy()
    for c in ("Paper", "Measured", "Difference"):
        shown[c] = [("–" if pd.isna(v) else f"{v:+.2f}" if c == "Difference" else f"{v:.2f}") for v in t[c]]
    write(shown.set_index(["Task", "Method", "N", "Metric"]), out, "table_reference",
          f"Published numbers ({reference.get('source')}) beside this run's (mean over seeds; percent where the "
          f"paper prints percent). {reference.get('note', '')} {where}")
    return out / "table_reference.md"
