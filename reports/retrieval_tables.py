"""Paper-style retrieval tables (mmSampler's layout) and the R@1-against-GFLOPs plot, from a
run's ``retrieval_rows.csv``:

  table_retrieval_t2v.{md,tex,csv}, table_retrieval_v2t.{md,tex,csv}
      Method, Frames used (mean ± std over videos), GFLOPs/video, R@1, R@5, R@10, MdR, MnR
      (mean ± std over seeds where there are several)
  retrieval_r1_vs_gflops.{png,pdf}
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from samplerbench.reports.common import UPPER, UPPER_NOTE, mark_upper_bounds, mean_std, same_videos_note

COLUMNS = (("R@1", "{:.1f}"), ("R@5", "{:.1f}"), ("R@10", "{:.1f}"), ("MdR", "{:.1f}"), ("MnR", "{:.1f}"))
NOTE = ("R@k in %. Ranks are 1-based; ties count against the query (pessimistic rank). Text-to-video ranks each caption's "
        "video; video-to-text ranks a video's best caption among the other videos' captions. GFLOPs per video: "
        "the sampler's own work on every candidate (mmSampler: light encoder + policy) + the frame encoder and "
        "projection on the frames kept; the text encoder is excluded, as in mmSampler's tables. "
        "'(= X)': at the mean frame count that X kept.")


def _fmt(values: pd.Series, fmt: str) -> str:
    return mean_std(values.mean(), values.std(), len(values), fmt)


def render_retrieval(run_dir: Path, out: Path, write, caption_prefix: str = "") -> list[Path]:
    """Write the retrieval tables and plot if the run has a retrieval task; returns the files."""
    path = Path(run_dir) / "retrieval_rows.csv"
    if not path.is_file() or path.stat().st_size == 0:
        return []
    df = pd.read_csv(path)
    if df.empty:
        return []
    df = mark_upper_bounds(df)
    order = list(dict.fromkeys(df["label"]))
    caption_prefix += same_videos_note(df) + (UPPER_NOTE.strip() + " " if df["label"].str.endswith(UPPER).any() else "")
    written = []
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
                r[metric] = _fmt(by[f"{direction}_{metric}"], fmt)
            rows.append(r)
        table = pd.DataFrame(rows).set_index("Method")
        seeds = df["seed"].nunique()
        write(table, out, f"table_retrieval_{direction}", f"{title} retrieval (mean ± std over {seeds} seed(s) "
              f"where a method is random). {caption_prefix}{NOTE}")
        written.append(out / f"table_retrieval_{direction}.md")
    wide = df[df["metric"].isin(["t2v_R@1", "v2t_R@1", "gflops_total"])].pivot_table(
        index=["label", "seed"], columns="metric", values="value").reset_index()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
    palette = dict(zip(order, sns.color_palette("tab10" if len(order) <= 10 else "tab20", len(order)), strict=False))
    for ax, metric, title in ((axes[0], "t2v_R@1", "Text-to-video R@1 (%)"), (axes[1], "v2t_R@1", "Video-to-text R@1 (%)")):
        sns.scatterplot(data=wide, x="gflops_total", y=metric, hue="label", hue_order=order, palette=palette,
                        style="label", style_order=order, s=60, ax=ax, legend=ax is axes[1])
        ax.set_xlabel("GFLOPs per video (fvcore: 1 multiply-add = 1 FLOP)")
        ax.set_ylabel(title)
    axes[1].legend(title="Method", fontsize=7, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    for ext in ("png", "pdf"):
        fig.savefig(out / f"retrieval_r1_vs_gflops.{ext}", dpi=150)
        written.append(out / f"retrieval_r1_vs_gflops.{ext}")
    plt.close(fig)
    return written
