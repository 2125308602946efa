"""EVFR's figure and tables, from a run's ``reduction_rows.csv``:

  reduction_map_vs_ratio.{png,pdf}   mask AP and box AP against S1..S10, one line per method,
                                     seeds as a band (± one standard deviation); the full set and
                                     the untrained model (chance) as references
  table_reduction_mask_ap, table_reduction_box_ap   Method x S_k, mean ± std over seeds; ``*``
                                     marks a reduced set within one standard deviation of the full
                                     set's mean (or above it)
  table_reduction_frames             training frames per ratio (the counts EVFR lists)
  table_reduction_detail             per method and ratio: frames, AP/AP50/AP75 (mask, box),
                                     mask AP of the event shapes and of the distractors apart,
                                     the sampler's GFLOPs per video, training seconds
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from samplerbench.reports.common import UPPER, UPPER_NOTE, mark_upper_bounds, mean_std

FULL, CHANCE = "full", "untrained"
DETAIL = (("frames", "Frames", "{:.0f}"), ("mask_AP", "Mask AP", "{:.1f}"), ("mask_AP50", "Mask AP50", "{:.1f}"),
          ("mask_AP75", "Mask AP75", "{:.1f}"), ("box_AP", "Box AP", "{:.1f}"), ("box_AP50", "Box AP50", "{:.1f}"),
          ("box_AP75", "Box AP75", "{:.1f}"), ("mask_AP_event", "Mask AP events", "{:.1f}"),
          ("mask_AP_distractor", "Mask AP distractors", "{:.1f}"), ("gflops_sampler", "Sampler GFLOPs/video", "{:.4f}"),
          ("train_s", "Train (s)", "{:.1f}"))
NOTE = ("AP: COCO AP@[.5:.95] (pycocotools) in %, on every frame of the test videos; S_k: 1/k of each training "
        "video's frames (S1: all). Every selection trains the same model from the same initial weights (per seed) "
        "for the same number of steps. Mean ± std over seeds (training seed; also the selection's for random "
        "methods and FPS's start).")


def _fmt(v: pd.Series, fmt: str) -> str:
    if v.empty:
        return "–"
    return mean_std(v.mean(), v.std(), len(v), fmt)


def within_full(df: pd.DataFrame, metric: str) -> dict[tuple[str, int], bool]:
    """(method, k) -> whether its mean is at least the full set's mean minus one std over seeds."""
    full = df[(df["method"] == FULL) & (df["metric"] == metric)]["value"]
    bar = full.mean() - (full.std() if len(full) > 1 else 0.0)
    g = df[(df["metric"] == metric) & ~df["method"].isin([FULL, CHANCE])].groupby(["method", "k"])["value"].mean()
    return {key: bool(v >= bar) for key, v in g.items()}


def render_reduction(run_dir: Path, out: Path, write, caption_prefix: str = "") -> list[Path]:
    """Write the figure and tables if the run is a reduction run; returns the files written."""
    path = Path(run_dir) / "reduction_rows.csv"
    if not path.is_file() or path.stat().st_size == 0:
        return []
    df = mark_upper_bounds(pd.read_csv(path))
    if df["label"].str.endswith(UPPER).any():
        caption_prefix += UPPER_NOTE.strip() + " "
    methods = [m for m in dict.fromkeys(df["method"]) if m not in (FULL, CHANCE)]
    labels = dict(zip(df["method"], df["label"], strict=False))
    ks = sorted(k for k in df["k"].unique() if k >= 1)
    seeds = df["seed"].nunique()
    written = []
    chance = {m: df[(df["method"] == CHANCE) & (df["metric"] == m)]["value"].mean() for m in ("mask_AP", "box_AP")}
    for metric, stem, title in (("mask_AP", "table_reduction_mask_ap", "Mask AP"),
                                ("box_AP", "table_reduction_box_ap", "Box AP")):
        close = within_full(df, metric)
        full = df[(df["method"] == FULL) & (df["metric"] == metric)]["value"]
        rows = []
        for m in methods:
            r = {"Method": labels[m]}
            for k in ks:
                v = full if k == 1 else df[(df["method"] == m) & (df["k"] == k) & (df["metric"] == metric)]["value"]
                r[f"S{k}"] = _fmt(v, "{:.1f}") + ("*" if close.get((m, k)) else "")
            rows.append(r)
        write(pd.DataFrame(rows).set_index("Method"), out, stem,
              f"{title} (%) by training-set ratio ({seeds} seed(s)); S1 is the full set, shared by every method; "
              f"* within one std of the full set's mean, or above. Untrained model (chance): {chance[metric]:.2f}. "
              f"{caption_prefix}{NOTE}")
        written.append(out / f"{stem}.md")

    frames = df[df["metric"] == "frames"]
    fpv = df[df["metric"] == "frames_per_video"]
    rows = []
    for k in ks:
        f = frames[(frames["k"] == k) & (frames["method"] != CHANCE)]["value"]
        rows.append({"Set": f"S{k}", "Training frames": f"{f.max():.0f}",
                     "Per video (mean)": f"{fpv[(fpv['k'] == k) & (fpv['method'] != CHANCE)]['value'].max():.1f}",
                     "Share of S1 (%)": f"{100 * f.max() / frames[frames['k'] == 1]['value'].max():.1f}",
                     "Methods with fewer": ", ".join(sorted({labels[m] for m in frames[(frames['k'] == k) & (
                         frames['value'] < f.max())]['method'] if m != CHANCE})) or "–"})
    write(pd.DataFrame(rows).set_index("Set"), out, "table_reduction_frames",
          "Training frames per ratio: ceil(n / k) of each video of n frames (UFS takes every k-th frame from the "
          "first; the others select as many, unless their rule returns fewer). " + caption_prefix)
    written.append(out / "table_reduction_frames.md")

    rows = []
    for m in [CHANCE, FULL, *methods]:
        for k in sorted(df[df["method"] == m]["k"].unique()):
            d = df[(df["method"] == m) & (df["k"] == k)]
            r = {"Method": labels[m], "Set": f"S{k}" if k else "–"}
            for metric, name, fmt in DETAIL:
                r[name] = _fmt(d[d["metric"] == metric]["value"], fmt)
            rows.append(r)
    write(pd.DataFrame(rows).set_index(["Method", "Set"]), out, "table_reduction_detail",
          f"Per method and ratio (mean ± std over {seeds} seed(s)). Sampler GFLOPs: what the method computed "
          f"to choose (embeddings, variance indices, FPS), per training video. {caption_prefix}{NOTE}")
    written.append(out / "table_reduction_detail.md")
    written += _figure(df, methods, labels, ks, chance, out)
    return written


def _figure(df, methods, labels, ks, chance, out: Path) -> list[Path]:
    sns.set_theme(style="whitegrid", context="paper")
    full = df[df["method"] == FULL]
    curves = [df[df["method"].isin(methods)]]
    for m in methods:  # every curve starts at the shared full set
        curves.append(full.assign(method=m, label=labels[m]))
    data = pd.concat(curves)
    order = [labels[m] for m in methods]
    palette = dict(zip(order, sns.color_palette("tab10", len(order)), strict=False))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric, title in ((axes[0], "mask_AP", "Mask AP (%)"), (axes[1], "box_AP", "Box AP (%)")):
        d = data[data["metric"] == metric]
        sns.lineplot(data=d, x="k", y="value", hue="label", hue_order=order, palette=palette, style="label",
                     style_order=order, markers=True, dashes=False, errorbar="sd", ax=ax, legend=ax is axes[1])
        f = full[full["metric"] == metric]["value"]
        ax.axhline(f.mean(), color="0.3", lw=0.8, ls="--", label="_full")
        ax.text(ks[-1], f.mean(), " full set", va="bottom", ha="right", fontsize=7, color="0.3")
        if pd.notna(chance[metric]):
            ax.axhline(chance[metric], color="0.6", lw=0.8, ls=":")
            ax.text(ks[-1], chance[metric], " untrained", va="bottom", ha="right", fontsize=7, color="0.5")
        ax.set_xticks(ks, [f"S{k}" for k in ks])
        ax.set_xlabel("Training set (S_k: 1/k of each video's frames)")
        ax.set_ylabel(title)
    axes[1].legend(title="Method", fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    written = []
    for ext in ("png", "pdf"):
        fig.savefig(out / f"reduction_map_vs_ratio.{ext}", dpi=150)
        written.append(out / f"reduction_map_vs_ratio.{ext}")
    plt.close(fig)
    return written
