"""The papers' published numbers beside the measured ones: a suite's ``[reference]`` table
(copied from the seed READMEs, with the table it comes from), matched to the run's rows by
label, task and (optionally) budget. A reference row's ``frames`` and ``gflops_total`` are the
paper's cost, shown beside the measured cost (not compared as metrics) and where its point is
drawn; ``[reference] videos`` is the size of the paper's evaluation split, so a run on fewer
videos (``--limit``, videos missing) says so."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from samplerbench.suite import REFERENCE_KEYS as KEYS

#: stored as fractions in the classification rows; papers print percent
FRACTION_METRICS = {"top1", "top5", "mean_class_acc", "balanced_acc", "mAP", "event_hit_rate"}
ROWS_FILES = {"classification": "rows.csv", "retrieval": "retrieval_rows.csv", "reduction": "reduction_rows.csv"}
#: a reference row's cost (the paper's), shown beside the run's, never compared as a metric
COSTS = ("frames", "gflops_total")


def _fmt(v: float, fmt: str = "{:.2f}") -> str:
    return "–" if v is None or pd.isna(v) else fmt.format(v)


def _measured(mine: pd.DataFrame, metric: str) -> float:
    """The mean over seeds of ``metric`` in a reference row's matching rows (percent where the
    paper prints percent); NaN where the run has none."""
    d = mine[mine["metric"] == metric] if len(mine) else mine
    return float(d["value"].mean()) * (100 if metric in FRACTION_METRICS else 1) if len(d) else float("nan")


def comparison(reference: dict, run_dir: Path) -> pd.DataFrame:
    """Per reference row and metric: the paper's value, the measured mean over seeds (percent
    where the paper prints percent) and their difference; the paper's frames and GFLOPs per
    video beside the run's; the videos evaluated (of the paper's split, ``[reference] videos``).
    NaN where the run has no such row."""
    frames = {t: pd.read_csv(Path(run_dir) / f) for t, f in ROWS_FILES.items()
              if (Path(run_dir) / f).is_file() and (Path(run_dir) / f).stat().st_size}
    split = reference.get("videos")
    out = []
    for row in reference.get("rows", []):
        task = row.get("task", "classification")
        df = frames.get(task)
        mine = pd.DataFrame()
        if df is not None:
            mine = df[df["label"] == row["label"]]
            if "budget" in row:
                mine = mine[mine["budget"].astype(str) == str(row["budget"])]

        videos = int(mine["n_videos"].min()) if len(mine) else None
        for metric, paper in row.items():
            if metric in KEYS or metric in COSTS:
                continue
            value = _measured(mine, metric)
            seeds = int(mine[mine["metric"] == metric]["seed"].nunique()) if len(mine) else 0
            out.append({"Task": task, "Method": row["label"], "N": row.get("budget", ""), "Metric": metric,
                        "Paper": float(paper), "Measured": value, "Difference": value - float(paper), "Seeds": seeds,
                        "Frames (paper)": row.get("frames", row.get("budget")), "Frames (measured)": _measured(mine, "frames"),
                        "GFLOPs/video (paper)": row.get("gflops_total"),
                        "GFLOPs/video (measured)": _measured(mine, "gflops_total"),
                        "Videos": (f"{videos} of {split}" if split and videos is not None else videos)})
    return pd.DataFrame(out)


def reference_points(reference: dict, task: str, metric: str, costs: pd.DataFrame | None = None) -> pd.DataFrame:
    """The papers' points for a cost-quality plot: each ``[reference]`` row of ``task`` with
    ``metric``, at the paper's own ``gflops_total``. A row without the paper's cost has no place
    on a cost axis and is left out (drawing it at this run's cost put a paper's accuracy at our
    cost). Values in the rows' units (fractions where the paper prints percent). ``costs`` is
    not read (kept for callers)."""
    out = []
    for row in reference.get("rows", []):
        if row.get("task", "classification") != task or metric not in row or row.get("gflops_total") is None:
            continue
        value = float(row[metric]) / (100 if metric in FRACTION_METRICS else 1)
        out.append({"label": row["label"], "budget": row.get("budget", ""), "value": value,
                    "gflops": float(row["gflops_total"]), "cost_from": "paper"})
    return pd.DataFrame(out, columns=["label", "budget", "value", "gflops", "cost_from"])


def without_cost(reference: dict, task: str) -> list[str]:
    """The reference rows of ``task`` that give no cost of their own (left off cost plots)."""
    return [r["label"] for r in reference.get("rows", [])
            if r.get("task", "classification") == task and r.get("gflops_total") is None]


def render_reference(reference: dict, run_dir: Path, out: Path, write, where: str = "") -> Path | None:
    """``table_reference.{md,tex,csv}``: paper and measured side by side, quality and cost, with
    the videos evaluated (nothing without a reference)."""
    if not reference.get("rows"):
        return None
    t = comparison(reference, run_dir)
    shown = t.copy()
    for c in ("Paper", "Measured", "Difference", "Frames (measured)", "GFLOPs/video (paper)",
              "GFLOPs/video (measured)"):
        shown[c] = [_fmt(v, "{:+.2f}" if c == "Difference" else "{:.2f}") for v in t[c]]
    shown["Frames (paper)"] = [_fmt(v, "{:g}") for v in t["Frames (paper)"]]
    shown["Videos"] = ["–" if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v) for v in t["Videos"]]
    split = reference.get("videos")
    counts = sorted({int(str(v).split()[0]) for v in t["Videos"] if v is not None and str(v).split()[0].isdigit()})
    partial = ""
    if split and counts and counts[0] < int(split):
        partial = (f"This run evaluated {counts[0]} of the paper's {split} videos (--limit or videos missing): the "
                   "measured numbers are not a reproduction of the paper's. ")
    write(shown.set_index(["Task", "Method", "N", "Metric"]), out, "table_reference",
          f"Published numbers ({reference.get('source')}) beside this run's (mean over seeds; percent where the "
          f"paper prints percent), with the paper's frames and GFLOPs per video beside the measured ones "
          f"(each counts by its own convention). {partial}{reference.get('note', '')} {where}")
    return out / "table_reference.md"
