"""Render a run's stored rows as paper-style tables and plots, without recomputing anything.

Output in ``reports/out/<run-id>/``:
  table_top1.{md,tex,csv}     methods x budgets, top-1 accuracy (%) (mAP for multi-label data)
  table_hit_rate.{md,tex,csv} methods x budgets, event hit rate (%)
  table_detail.{md,tex,csv}   per method and budget: frames, GFLOPs (total and sampler), quality
                              metrics, videos/s end-to-end and model-only, peak memory
  table_training.{md,tex,csv}  every learned piece (classifier, token ViTs, learned samplers and
                              heads): epochs, best epoch, validation score, training wall time;
                              training is a one-off cost, kept out of the per-video GFLOPs
  acc_vs_frames.{png,pdf}, acc_vs_gflops.{png,pdf}
  pareto_<metric>.{png,pdf}, table_pareto.*  the headline metric against GFLOPs per video with each
                              cell's bootstrap interval, the Pareto front drawn and listed
  table_retrieval_*, retrieval_r1_vs_gflops.*   the [retrieval] task, if any (reports/retrieval.py)
  index.html                  all of it on one self-contained page, with the selection strips
                              (reports/html.py)
A reduction run (EVFR's task) renders reports/reduction.py's figure and tables instead.
Values are means over seeds, with their 95% bootstrap interval over the videos and a mark where
the difference from uniform at the same budget is significant (``<task>_intervals.csv`` and
``<task>_tests.csv``, written by the runner); a run without them shows the std over seeds.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from samplerbench.reports import intervals as iv  # noqa: E402
from samplerbench.reports.common import (  # noqa: E402
    UNLEARNED,
    UNLEARNED_NOTE,
    UPPER,
    UPPER_NOTE,
    mark_unlearned,
    mark_upper_bounds,
    mean_std,
    same_videos_note,
)
from samplerbench.reports.html import render_page  # noqa: E402
from samplerbench.reports.reduction_tables import render_reduction  # noqa: E402
from samplerbench.reports.reference import reference_points, render_reference, without_cost  # noqa: E402
from samplerbench.reports.retrieval_tables import render_retrieval  # noqa: E402

UNITS = ("GFLOPs follow fvcore's convention: one multiply-add counts as one FLOP, per video, "
         "including the sampler's own work. Frames: frames encoded per video; for token samplers, "
         "frame-equivalents (tokens / tokens per frame), with the frames their tokens touch apart; "
         "their event hit rate counts a touched frame. SLLM: N frames sampled, every other one encoded "
         "(Frames = N/2), the rest restored in feature space; sllm-full encodes all N.")
PCT = {"top1", "top5", "mean_class_acc", "mAP", "event_hit_rate"}
DETAIL_COLUMNS = [
    ("frames", "Frames", "{:.1f}"), ("tokens", "Tokens", "{:.0f}"), ("frames_touched", "Frames touched", "{:.1f}"),
    ("gflops_total", "GFLOPs", "{:.4f}"), ("gflops_sampler", "Sampler GFLOPs", "{:.4f}"),
    ("top1", "Top-1", "{:.1f}"), ("top5", "Top-5", "{:.1f}"), ("mean_class_acc", "Mean class acc.", "{:.1f}"),
    ("mAP", "mAP", "{:.1f}"), ("event_hit_rate", "Event hit rate", "{:.1f}"),
    ("videos_per_s_e2e", "Videos/s (end-to-end)", "{:.1f}"), ("videos_per_s_model", "Videos/s (model)", "{:.0f}"),
    ("peak_mem_mib", "Peak mem. (MiB)", "{:.0f}"),
]


def load_rows(run_dir: Path) -> pd.DataFrame:
    path = Path(run_dir) / "rows.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no result rows (run the suite first)")
    df = pd.read_csv(path)
    df.loc[df["metric"].isin(PCT), "value"] *= 100
    marked = mark_upper_bounds(df)
    df["name"] = mark_unlearned(marked.assign(label=df["label"], name=marked["label"]), "name")["name"]
    return df


def _summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds for each (method, budget, metric)."""
    g = df.groupby(["name", "method", "budget", "metric"], sort=False)["value"]
    return g.agg(mean="mean", std="std", seeds="count").reset_index()


def _fmt(mean: float, std: float, seeds: int, fmt: str) -> str:
    return mean_std(mean, std, seeds, fmt)


def _method_order(df: pd.DataFrame) -> list[str]:
    names = list(dict.fromkeys(df["name"]))
    upper = [n for n in names if n.removesuffix(UNLEARNED).endswith(UPPER)]
    return [n for n in names if n not in upper] + upper


def _write(table: pd.DataFrame, out: Path, stem: str, caption: str) -> None:
    table = table.reset_index()
    table.to_csv(out / f"{stem}.csv", index=False)
    md = table.to_markdown(index=False)
    (out / f"{stem}.md").write_text(f"{caption}\n\n{md}\n")
    latex = table.to_latex(index=False, escape=True, column_format="l" + "r" * (table.shape[1] - 1))
    latex = latex.replace(UPPER, "$^\\dagger$").replace(UNLEARNED, "$^\\oslash$")
    (out / f"{stem}.tex").write_text(
        "% requires \\usepackage{booktabs}\n\\begin{table}\n\\centering\n\\small\n" + latex
        + f"\\caption{{{_latex_escape(caption)}}}\n\\end{{table}}\n")


def _latex_escape(s: str) -> str:
    return (s.replace("%", "\\%").replace("_", "\\_").replace("†", "$^\\dagger$").replace("&", "\\&")
            .replace(UNLEARNED, "$^\\oslash$"))


def render(run_dir: Path, out_root: Path = Path("reports/out"), interval: str = "pm") -> Path:
    """Render every table and plot of a run; returns the output folder. ``interval``: ``pm``
    (value ± half the bootstrap interval) or ``range`` (value [low, high])."""
    run_dir = Path(run_dir)
    out = Path(out_root) / run_dir.name
    if (run_dir / "reduction_rows.csv").is_file():  # EVFR's selection-for-training task
        out.mkdir(parents=True, exist_ok=True)
        provs = [json.loads(p.read_text()) for p in sorted((run_dir / "provenance").glob("*.json"))]
        p0 = provs[-1] if provs else {}
        red = p0.get("reduction", {})
        where = (f"Run {run_dir.name}: {p0.get('dataset')}, {red.get('train_videos')} training videos "
                 f"({p0.get('train_frames')} frames) and {red.get('test_videos')} test videos ({p0.get('test_frames')} "
                 f"frames, {p0.get('test_instances')} instances), commit {str(p0.get('git_commit'))[:10]}"
                 f"{' (dirty)' if p0.get('git_dirty') else ''}, {p0.get('hardware', {}).get('cpu')}. ")
        where += paper_note(p0.get("paper") or {})
        render_reduction(run_dir, out, _write, where)
        render_reference(p0.get("reference") or {}, run_dir, out, _write, where)
        return out
    df = load_rows(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    summ = _summary(df)
    order = _method_order(df)
    headline = "top1" if "top1" in set(df["metric"]) else "mAP"
    head_name = {"top1": "Top-1 accuracy (%)", "mAP": "mAP (%)"}[headline]
    provs = [json.loads(p.read_text()) for p in sorted((run_dir / "provenance").glob("*.json"))]
    p0 = provs[-1] if provs else {}
    where = (f"Run {run_dir.name}: {p0.get('dataset')} / {p0.get('split')} (manifest {str(p0.get('manifest_hash'))[:12]}), "
             f"commit {str(p0.get('git_commit'))[:10]}{' (dirty)' if p0.get('git_dirty') else ''}, "
             f"{p0.get('hardware', {}).get('cpu')} ({p0.get('hardware', {}).get('device')}). ")
    where += paper_note(p0.get("paper") or {})
    seeds = int(df["seed"].nunique())
    uncounted = p0.get("fvcore_unsupported_ops") or {}
    if uncounted:  # surfaced, never silently dropped
        where += ("Ops fvcore does not count (elementwise and pooling, negligible next to the convolutions): "
                  + ", ".join(sorted(k.removeprefix("aten::") for k in uncounted)) + ". ")
    upper = UPPER_NOTE if any(n.removesuffix(UNLEARNED).endswith(UPPER) for n in order) else ""
    if any(n.endswith(UNLEARNED) for n in order):
        upper += UNLEARNED_NOTE
    where += same_videos_note(df.query("kind != 'timing'"))

    tokens = p0.get("token_models") or {}
    if tokens:
        where += ("Token samplers (" + ", ".join(sorted(tokens)) + ") are read by a token ViT trained on their own "
                  "selections, not by the frame classifier: compare each with its dense reference ('<method>: every "
                  "token', every token of the N uniform frames read by the same ViT; validation top-1 "
                  + ", ".join(f"{k} {v.get('val', float('nan')):.2f}" for k, v in sorted(tokens.items())) + "). ")

    # Tables 1 and 1b: methods x budgets (headline metric; event hit rate), with the bootstrap
    # interval over videos and the significance of the difference from uniform where computed.
    intervals, tests = iv.load(run_dir, "classification", "intervals"), iv.load(run_dir, "classification", "tests")
    name_of = dict(zip(df["label"], df["name"], strict=False))
    for metric, stem, title in ((headline, "table_top1", head_name), ("event_hit_rate", "table_hit_rate",
                                                                      "Event hit rate (%)")):
        h = summ[summ["metric"] == metric]
        if h.empty:
            continue
        cis = _intervals_of(intervals, tests, metric, name_of)
        t1 = pd.DataFrame(index=order)
        for b in sorted(h["budget"].unique()):
            col = h[h["budget"] == b].set_index("name")
            t1[f"N={b}"] = [_cell_text(col.loc[n], cis.get((n, b)), interval) if n in col.index else "–"
                            for n in order]
        t1.index.name = "Method"
        spread = (iv.caption(intervals[intervals["metric"] == metric], tests, interval)
                  if cis else f"Mean ± std over {seeds} seed(s).")
        _write(t1, out, stem, f"{title} by frame budget N of T={p0.get('candidates', '?')} candidates "
               f"({p0.get('suite')} suite; {seeds} seed(s), mean over seeds). {spread}{upper} {where}{UNITS}")
    if intervals is not None:
        _pareto(df, intervals, headline, head_name, name_of, out, interval, order, p0.get("reference") or {})

    # Table 2: per method and budget, every metric as a column.
    stats = {(r.name, r.budget, r.metric): (r.mean, r.std, r.seeds) for r in summ.itertuples(index=False)}
    rows = []
    for n in order:
        for b in sorted(summ.loc[summ["name"] == n, "budget"].unique()):
            r = {"Method": n, "N": int(b)}
            cell = df[(df["name"] == n) & (df["budget"] == b)]
            r["Videos"], r["Failed"] = int(cell["n_videos"].max()), int(cell["n_failed"].max())
            for metric, label, fmt in DETAIL_COLUMNS:
                if (n, b, metric) in stats:
                    r[label] = _fmt(*stats[(n, b, metric)], fmt)
            rows.append(r)
    t2 = pd.DataFrame(rows).set_index(["Method", "N"]).fillna("–")  # metrics a method does not have
    _write(t2, out, "table_detail", f"Per method and budget (accuracy in %, mean ± std over {seeds} seed(s); "
           f"videos/s on the first seed; model-only videos/s of the shared classifier measured once per "
           f"frame count and given to every method at that count).{upper} {where}{UNITS}")

    training = _training_table(p0)
    if not training.empty:
        _write(training, out, "table_training", "Training cost of the learned pieces of the run, one row per piece "
               "and seed (a seed is a whole replicate: every learned piece trains once per seed), one-off, not in "
               "the per-video GFLOPs (wall time of the run that trained them, on the device named in 'Trained on'; "
               f"this run's CPU: {p0.get('hardware', {}).get('cpu')}; 'cached': this run loaded the checkpoint). {where}")
    _plots(df, headline, head_name, order, out)
    rm = p0.get("retrieval_model") or {}
    model_note = (f"Retrieval model (CLIP4Clip mean pooling on the frozen frame encoder, trained in the run): "
                  f"validation mean R@1 {100 * rm['val']:.1f}% with every candidate. " if "val" in rm else "")
    render_retrieval(run_dir, out, _write, f"Run {run_dir.name}. {model_note}", interval, p0.get("reference") or {})
    render_reference(p0.get("reference") or {}, run_dir, out, _write, where)
    render_page(run_dir, out, provs)
    return out


def _intervals_of(intervals: pd.DataFrame | None, tests: pd.DataFrame | None, metric: str,
                  name_of: dict) -> dict[tuple[str, int], tuple[float, float, bool]]:
    """{(name, budget): (low, high, significant vs uniform)} of one metric, in the table's percent."""
    if intervals is None:
        return {}
    sig = set()
    if tests is not None and len(tests):
        t = tests[(tests["metric"] == metric) & tests["significant"].astype(bool)]
        sig = {(name_of.get(r.label, r.label), int(r.budget)) for r in t.itertuples()}
    scale = 100 if metric in PCT else 1
    d = intervals[intervals["metric"] == metric]
    return {(name_of.get(r.label, r.label), int(r.budget)): (r.lo * scale, r.hi * scale,
                                                             (name_of.get(r.label, r.label), int(r.budget)) in sig)
            for r in d.itertuples()}


def _cell_text(row: pd.Series, ci: tuple[float, float, bool] | None, style: str) -> str:
    """A table cell: the mean over seeds with its bootstrap interval and the significance mark;
    mean ± std over seeds where the run has no intervals."""
    if ci is None:
        return _fmt(row["mean"], row["std"], row["seeds"], "{:.1f}")
    lo, hi, significant = ci
    return iv.with_interval(row["mean"], lo, hi, style) + (f" {iv.SIGNIFICANT}" if significant else "")


def _pareto(df: pd.DataFrame, intervals: pd.DataFrame, headline: str, head_name: str, name_of: dict, out: Path,
            style: str, order: list[str], reference: dict) -> None:
    """``pareto_<metric>.{png,pdf}`` (quality against GFLOPs with intervals, the front drawn) and
    ``table_pareto`` (the front's cells, by increasing cost)."""
    costs = (df[df["metric"] == "gflops_total"].groupby(["label", "budget"], sort=False)["value"].mean()
             .rename("gflops").reset_index())
    refs = reference_points(reference, "classification", headline, costs)
    ivs, costs, refs = (d.assign(label=d["label"].map(lambda s: name_of.get(s, s))) for d in (intervals, costs, refs))
    p = iv.pareto(ivs, costs, headline)
    if p.empty:
        return
    iv.pareto_plot(p, head_name, out, f"pareto_{headline}", palette=_palette(order), order=order, reference=refs)
    front = p[p["on_front"]]
    table = pd.DataFrame({"Method": front["label"], "N": front["budget"].astype(int),
                          "GFLOPs": front["gflops"].map("{:.4f}".format),
                          head_name: [iv.with_interval(r.value, r.lo, r.hi, style, scale=100) for r in front.itertuples()]})
    _write(table.set_index("Method"), out, "table_pareto",
           f"The cost-quality Pareto front: the (method, budget) cells no other cell beats in both {head_name} and "
           "GFLOPs per video (methods that see labels, and ⊘ methods whose reader did not learn, excluded). Every cell is in pareto_"
           f"{headline}.png with its interval" + (f"; the papers' published points ({reference.get('source')}) as "
                                                  "hollow stars, at the paper's own GFLOPs per video"
                                                  if len(refs) else "") + _no_cost_note(reference) + ". "
           + iv.caption(intervals[intervals["metric"] == headline], None, style))


def _no_cost_note(reference: dict) -> str:
    """Names the reference rows left off the cost plot (the paper gives no GFLOPs for them)."""
    missing = without_cost(reference or {}, "classification")
    return (f"; left off (the paper gives no GFLOPs per video): {', '.join(dict.fromkeys(missing))}"
            if missing else "")


def paper_note(paper: dict) -> str:
    """A paper suite's configuration and each of its deviations from the paper, for captions."""
    if not paper:
        return ""
    preset = paper.get("preset")
    text = (f"Paper configuration: {paper.get('method')}'s modules are those the cost preset {preset} counts "
            "(checked by samplerbench's tests). " if preset else f"Paper configuration of {paper.get('method')}. ")
    devs = paper.get("deviations") or []
    if devs:
        text += "Deviations from the paper: " + " ".join(f"({i}) {d}" for i, d in enumerate(devs, 1)) + " "
    return text


def _training_table(prov: dict) -> pd.DataFrame:
    """One row per learned piece and replicate (seed) recorded in the provenance."""
    replicates = prov.get("replicates") or {"": {"classifiers": {"reader": prov.get("classifier")},
                                                 "token_models": prov.get("token_models"),
                                                 "retrieval_models": {"retrieval": prov.get("retrieval_model")},
                                                 "trained": prov.get("trained")}}
    pieces = []
    for seed, rep in sorted(replicates.items(), key=lambda kv: int(kv[0]) if kv[0].lstrip("-").isdigit() else 0):
        pieces.append(("frame classifier", seed, (rep.get("classifiers") or {}).get("reader")))
        pieces += [(f"token ViT ({k})", seed, v) for k, v in sorted((rep.get("token_models") or {}).items())]
        pieces.append(("retrieval model", seed, (rep.get("retrieval_models") or {}).get("retrieval")))
        for k, v in sorted((rep.get("trained") or {}).items()):
            pieces.append((k, seed, v))
            if isinstance(v.get("base"), dict):
                pieces.append((f"{k}: base sampler", seed, v["base"]))
    rows = []
    for name, seed, rec in pieces:
        if not rec:
            continue
        hist = [h for h in rec.get("history", []) if h.get("epoch", 0) > 0]
        val = rec.get("val", rec.get("val_top1"))  # the classifier's record names its score val_top1
        rows.append({"Piece": name, "Seed": seed if seed != "" else "–", "Epochs": rec.get("epochs_run", len(hist)),
                     "Best epoch": rec.get("best_epoch", "–"),
                     "Val. score": f"{val:.3f}" if isinstance(val, int | float) else "–",
                     "Train time (s)": f"{rec.get('wall_s', rec.get('fit_wall_s', float('nan'))):.0f}",
                     # records from before the device was recorded: every piece then trained on the CPU
                     "Trained on": rec.get("device", "cpu"),
                     "Cached": "yes" if rec.get("cached") else "no"})
    return pd.DataFrame(rows).set_index(["Piece", "Seed"]) if rows else pd.DataFrame()


def _palette(order: list[str]) -> dict:
    """One colour per method, the same in every plot: tab10, or tab20 beyond 10 methods (tab10
    repeats; tab20's paired shades stay distinct)."""
    return dict(zip(order, sns.color_palette("tab10" if len(order) <= 10 else "tab20", len(order)), strict=False))


def _plots(df: pd.DataFrame, headline: str, head_name: str, order: list[str], out: Path) -> None:
    sns.set_theme(style="whitegrid", context="paper")
    wide = df[df["metric"].isin([headline, "frames", "gflops_total"])].pivot_table(
        index=["name", "budget", "seed"], columns="metric", values="value").reset_index()
    palette = _palette(order)
    for x, xlabel, stem in (("frames", "Frames encoded per video", "acc_vs_frames"),
                            ("gflops_total", "GFLOPs per video (fvcore: 1 multiply-add = 1 FLOP)", "acc_vs_gflops")):
        fig, ax = plt.subplots(figsize=(7.6, 4.2))
        sns.lineplot(data=wide, x=x, y=headline, hue="name", hue_order=order, palette=palette, style="name",
                     style_order=order, markers=True, dashes=False, errorbar="sd", err_style="bars", ax=ax)
        ax.set_xscale("log", base=2 if x == "frames" else 10)
        if x != "frames":  # GFLOPs often span under a decade: label 1-2-5 steps
            ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))  # 4, not 2^2
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels overlap
        ax.set_xlabel(xlabel)
        ax.set_ylabel(head_name)
        marks = "† sees labels" + (f", {UNLEARNED} reader did not learn" if any(n.endswith(UNLEARNED) for n in order) else "")
        ax.legend(title=f"Method ({marks})", fontsize=8, title_fontsize=8, loc="upper left",
                  bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        fig.tight_layout()
        for ext in ("png", "pdf"):
            fig.savefig(out / f"{stem}.{ext}", dpi=150)
        plt.close(fig)
