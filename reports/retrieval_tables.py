"""Paper-style retrieval tables (mmSampler's layout) and the R@1-against-GFLOPs plot, from a
run's ``retrieval_rows.csv``:

  table_retrieval_t2v.{md,tex,csv}, table_retrieval_v2t.{md,tex,csv}
      Method, Frames used (mean ± std over videos), GFLOPs/video, R@1, R@5, R@10, MdR, MnR:
      R@k and MnR with their bootstrap interval over the query videos and the mark of a
      significant difference from uniform at the same frame count (``retrieval_intervals.csv``,
      ``retrieval_tests.csv``); mean ± std over seeds for a run without them (and for MdR)
  retrieval_r1_vs_gflops.{png,pdf}
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from samplerbench.reports import intervals as iv
from samplerbench.reports.common import (
    UNLEARNED,
    UNLEARNED_NOTE,
    UPPER,
    UPPER_NOTE,
    mark_unlearned,
    mark_upper_bounds,
    mean_std,
    plain,
    same_videos_note,
)
from samplerbench.reports.intervals import TOKEN_CLAUSE
from samplerbench.reports.reference import reference_points

COLUMNS = (("R@1", "{:.1f}"), ("R@5", "{:.1f}"), ("R@10", "{:.1f}"), ("MdR", "{:.1f}"), ("MnR", "{:.1f}"))
#: how video-to-text ranks, by the rows' ``v2t`` column (samplerbench.metrics.ranking)
V2T_NOTES = {
    "clip4clip": "video-to-text as CLIP4Clip's tensor_video_to_text_sim: a video's best caption ranked among "
                 "the other videos' best captions (one per video)",
    "all-captions": "video-to-text ranks a video's best caption among every caption of the other videos "
                    "(not CLIP4Clip's definition)",
}
NOTE = ("R@k in %. Ranks are 1-based; ties count against the query (pessimistic rank). Text-to-video ranks each caption's "
        "video; {v2t}. GFLOPs per video: "
        "the sampler's own work on every candidate (mmSampler: light encoder + policy) + the frame encoder and "
        "projection on the frames kept; the text encoder is excluded, as in mmSampler's tables. "
        "'(= X)': at the mean frame count that X kept.")


def _fmt(values: pd.Series, fmt: str) -> str:
    return mean_std(values.mean(), values.std(), len(values), fmt)


def _interval_cells(run_dir: Path) -> dict[tuple[str, str], str]:
    """{(label, metric): ``value ± half-width`` with its significance mark}, in the table's units."""
    intervals, tests = iv.load(run_dir, "retrieval", "intervals"), iv.load(run_dir, "retrieval", "tests")
    if intervals is None:
        return {}
    sig = set()
    if tests is not None and len(tests):
        sig = {(r.label, r.metric) for r in tests[tests["significant"].astype(bool)].itertuples()}
    return {(r.label, r.metric): (r.value, r.lo, r.hi, (r.label, r.metric) in sig) for r in intervals.itertuples()}


def render_retrieval(run_dir: Path, out: Path, write, caption_prefix: str = "", style: str = "pm",
                     reference: dict | None = None) -> list[Path]:
    """Write the retrieval tables and plot if the run has a retrieval task; returns the files.
    A suite's ``[reference]`` retrieval rows are drawn on the plot as hollow stars."""
    path = Path(run_dir) / "retrieval_rows.csv"
    if not path.is_file() or path.stat().st_size == 0:
        return []
    df = pd.read_csv(path)
    if df.empty:
        return []
    df = mark_unlearned(mark_upper_bounds(df))
    order = list(dict.fromkeys(df["label"]))
    upper = df["label"].str.removesuffix(UNLEARNED).str.endswith(UPPER).any()
    caption_prefix += same_videos_note(df) + (UPPER_NOTE.strip() + " " if upper else "")
    if df["label"].str.endswith(UNLEARNED).any():
        caption_prefix += UNLEARNED_NOTE.strip() + " "
    defs = sorted(set(df["v2t"].fillna("all-captions"))) if "v2t" in df else ["all-captions"]
    note = NOTE.format(v2t="; ".join(V2T_NOTES.get(d, d) for d in defs))
    written = []
    cis = _interval_cells(run_dir)
    stats_note = ""
    if cis:
        ivs = iv.load(run_dir, "retrieval", "intervals")
        stats_note = (iv.caption(ivs, iv.load(run_dir, "retrieval", "tests"), style)
                  .replace("videos (", "query videos, each with its captions (")
                  .replace(TOKEN_CLAUSE, "from uniform at the same frame count") + " ")
    for direction, title in (("t2v", "Text-to-video"), ("v2t", "Video-to-text")):
        rows = []
        for label in order:
            d = df[df["label"] == label]
            by = {m: d[d["metric"] == m]["value"] for m in d["metric"].unique()}
            frames = by.get("frames", pd.Series(dtype=float))
            spread = by.get("frames_std", pd.Series([0.0])).mean()
            r = {"Method": label,
                 "Frames used": f"{frames.mean():.1f}" + (f" (sd {spread:.1f})" if spread > 0 else ""),
                 "GFLOPs/video": f"{by['gflops_total'].mean():.4f}"}
            for metric, fmt in COLUMNS:
                ci = cis.get((plain(label), f"{direction}_{metric}"))
                r[metric] = (_fmt(by[f"{direction}_{metric}"], fmt) if ci is None else
                             iv.with_interval(by[f"{direction}_{metric}"].mean(), ci[1], ci[2], style, fmt)
                             + (f" {iv.SIGNIFICANT}" if ci[3] else ""))
            rows.append(r)
        table = pd.DataFrame(rows).set_index("Method")
        seeds = df["seed"].nunique()
        write(table, out, f"table_retrieval_{direction}", f"{title} retrieval (mean{'' if cis else ' ± std'} over {seeds} seed(s)). {stats_note}"
              f"{caption_prefix}{note}")
        written.append(out / f"table_retrieval_{direction}.md")
    wide = df[df["metric"].isin(["t2v_R@1", "v2t_R@1", "gflops_total"])].pivot_table(
        index=["label", "seed"], columns="metric", values="value").reset_index()
    costs = (df[df["metric"] == "gflops_total"].assign(label=df["label"].map(plain))
             .groupby(["label", "budget"])["value"].mean().rename("gflops").reset_index())
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
    palette = dict(zip(order, sns.color_palette("tab10" if len(order) <= 10 else "tab20", len(order)), strict=False))
    for ax, metric, title in ((axes[0], "t2v_R@1", "Text-to-video R@1 (%)"), (axes[1], "v2t_R@1", "Video-to-text R@1 (%)")):
        sns.scatterplot(data=wide, x="gflops_total", y=metric, hue="label", hue_order=order, palette=palette,
                        style="label", style_order=order, s=60, ax=ax, legend=ax is axes[1])
        refs = reference_points(reference or {}, "retrieval", metric, costs)
        for r in refs.itertuples():
            ax.scatter([r.gflops], [r.value], marker="*", s=110, facecolors="none",
                       edgecolors=[palette.get(r.label, palette.get(r.label + UPPER, "black"))], linewidths=1.1, zorder=3)
        if len(refs) and ax is axes[1]:  # one legend entry, in black: each star has its method's colour
            ax.scatter([], [], marker="*", s=110, facecolors="none", edgecolors="black", label="paper (published)")
        ax.set_xlabel("GFLOPs per video (fvcore: 1 multiply-add = 1 FLOP)")
        ax.set_ylabel(title)
    title = "Method" + (f" ({UNLEARNED} reader did not learn)" if any(n.endswith(UNLEARNED) for n in order) else "")
    axes[1].legend(title=title, fontsize=7, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    for ext in ("png", "pdf"):
        fig.savefig(out / f"retrieval_r1_vs_gflops.{ext}", dpi=150)
        written.append(out / f"retrieval_r1_vs_gflops.{ext}")
    plt.close(fig)
    return written
