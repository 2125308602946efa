"""What the report shows of the statistics over videos (``<task>_intervals.csv``,
``<task>_tests.csv``, written by the runner): values with their bootstrap interval, the marks of
differences from uniform that are significant, and the cost-quality Pareto front."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from samplerbench.reports.common import UNLEARNED, UPPER  # noqa: E402

SIGNIFICANT = "*"
STYLES = ("pm", "range")


def load(run_dir: Path, task: str, kind: str) -> pd.DataFrame | None:
    """A task's ``intervals`` or ``tests`` table, None for a run that has none (older runs)."""
    path = Path(run_dir) / f"{task}_{kind}.csv"
    return pd.read_csv(path) if path.is_file() and path.stat().st_size else None


def with_interval(value: float, lo: float, hi: float, style: str = "pm", fmt: str = "{:.1f}", scale: float = 1.0) -> str:
    """``value ± half-width`` (half the interval's length: percentile intervals need not be
    symmetric) or ``value [lo, hi]``."""
    if style not in STYLES:
        raise ValueError(f"interval style {style!r}: choose from {STYLES}")
    if pd.isna(value):
        return "–"
    v, a, b = value * scale, lo * scale, hi * scale
    if pd.isna(a) or pd.isna(b):
        return fmt.format(v)
    if style == "pm":
        return f"{fmt.format(v)} ± {fmt.format((b - a) / 2)}"
    return f"{fmt.format(v)} [{fmt.format(a)}, {fmt.format(b)}]"


#: whom a method is tested against, in the caption (retrieval's caption replaces it)
TOKEN_CLAUSE = ("from uniform at the same budget (token samplers: from their dense reference, every token of the "
                "N uniform frames read by the same token ViT; else from tokens-uniform)")


def caption(intervals: pd.DataFrame, tests: pd.DataFrame | None, style: str) -> str:
    """The sentence that names the interval and the test behind the marks."""
    r = intervals.iloc[0]
    level = int(round(100 * float(r["level"])))
    shape = "± half its width" if style == "pm" else "[low, high]"
    seeds = int(intervals["seeds"].max()) if "seeds" in intervals else 1
    if seeds > 1:
        text = (f"{level}% interval ({shape}): hierarchical percentile bootstrap over {seeds} seeds and the "
                f"{int(r['n_videos'])} videos ({int(r['resamples'])} resamples, seed {int(r['bootstrap_seed'])}; each "
                "resample draws seeds, then videos, the same draws for every method). A seed is a whole replicate: "
                "every learned piece (reader, token ViTs, learned samplers, retrieval model) trained again under it, "
                "so the intervals include training variance.")
    else:
        text = (f"{level}% interval ({shape}): percentile bootstrap over the {int(r['n_videos'])} videos "
                f"({int(r['resamples'])} resamples, seed {int(r['bootstrap_seed'])}; the same resampled videos for "
                "every method; one seed: training variance is not included).")
    if tests is not None and len(tests):
        alpha = float(tests["alpha"].iloc[0])
        text += (f" {SIGNIFICANT}: differs {TOKEN_CLAUSE}, "
                 f"paired bootstrap test over the same resamples, two-sided p < {alpha:g}")
        if "p_mcnemar" in tests:
            text += " (McNemar's exact test on top-1, in the tests file, is the second opinion)"
        text += "."
    return text


def pareto_front(cost: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """Positions of the points no other point beats (cost no higher and quality no lower, one of
    them strictly), by increasing cost."""
    cost, quality = np.asarray(cost, float), np.asarray(quality, float)
    order = np.lexsort((-quality, cost))  # by cost, then best quality first
    front, best = [], -np.inf
    for i in order:
        if quality[i] > best:
            front.append(i)
            best = quality[i]
    return np.asarray(front, dtype=np.int64)


def pareto(intervals: pd.DataFrame, costs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per (method, budget): the metric with its interval, GFLOPs per video, and whether
    it is on the front (upper bounds, which see labels, and methods whose reader did not learn are
    drawn but never on it)."""
    q = intervals[intervals["metric"] == metric][["label", "budget", "value", "lo", "hi"]]
    df = q.merge(costs, on=["label", "budget"], how="inner").dropna(subset=["gflops", "value"])
    df["upper_bound"] = df["label"].str.removesuffix(UNLEARNED).str.endswith(UPPER)
    df["on_front"] = False
    eligible = df[~df["upper_bound"] & ~df["label"].str.endswith(UNLEARNED)]
    if len(eligible):
        front = eligible.index[pareto_front(eligible["gflops"].to_numpy(), eligible["value"].to_numpy())]
        df.loc[front, "on_front"] = True
    return df.sort_values(["gflops", "value"], ascending=[True, False]).reset_index(drop=True)


def pareto_plot(df: pd.DataFrame, ylabel: str, out: Path, stem: str, scale: float = 100.0, palette=None,
                order: list[str] | None = None, reference: pd.DataFrame | None = None) -> None:
    """Quality against GFLOPs per video, each point with its interval, the front drawn as a step
    line; methods in ``order`` with ``palette``'s colours (the other plots'); the papers' points
    (:func:`samplerbench.reports.reference.reference_points`) as hollow stars in their method's colour."""
    fig, ax = plt.subplots(figsize=(7.6, 4.4))
    present = set(df["label"])
    labels = [n for n in (order or []) if n in present] + [n for n in dict.fromkeys(df["label"]) if n not in (order or [])]
    colors = palette or dict(zip(labels, plt.get_cmap("tab20")(np.linspace(0, 1, max(len(labels), 2))), strict=False))
    for label in labels:
        d = df[df["label"] == label]
        y = d["value"] * scale
        err = np.vstack([y - d["lo"] * scale, d["hi"] * scale - y]).clip(min=0)
        ax.errorbar(d["gflops"], y, yerr=err, fmt="o", ms=4, capsize=2, lw=0.8, color=colors[label], label=label)
    refs = reference if reference is not None else pd.DataFrame()
    for r in refs.itertuples():
        color = colors.get(r.label, colors.get(r.label + UPPER, "black"))
        ax.scatter([r.gflops], [r.value * scale], marker="*", s=110, facecolors="none", edgecolors=[color],
                   linewidths=1.1, zorder=3)
    if len(refs):  # one legend entry, in black: each star has its method's colour
        ax.scatter([], [], marker="*", s=110, facecolors="none", edgecolors="black", label="paper (published)")
    front = df[df["on_front"]].sort_values("gflops")
    if len(front):
        ax.step(front["gflops"], front["value"] * scale, where="post", color="black", lw=1.2, alpha=0.7,
                label="Pareto front")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels overlap
    ax.set_xlabel("GFLOPs per video (fvcore: 1 multiply-add = 1 FLOP)")
    ax.set_ylabel(ylabel)
    marks = "† sees labels" + (f", {UNLEARNED} reader did not learn" if any(n.endswith(UNLEARNED) for n in labels) else "")
    ax.legend(title=f"Method ({marks})", fontsize=7, title_fontsize=7, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    for ext in ("png", "pdf"):
        fig.savefig(Path(out) / f"{stem}.{ext}", dpi=150)
    plt.close(fig)
