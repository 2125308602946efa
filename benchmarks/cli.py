"""Command line: ``samplerbench list | run SUITE | features SUITE | report RUN | compare RUN_A RUN_B | cost [PRESET ...] | gate RUN_JSON | data check SUITE``."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import sys
from pathlib import Path


def _list(args) -> int:
    from samplerbench import suite as suite
    from samplerbench.registry import DATASETS, METHODS

    for name in METHODS.names():
        cls = METHODS.get(name)
        flag = " [upper bound: sees labels]" if cls.upper_bound else ""
        print(f"method   {name:14s} {cls.describe() or '(no description)'}{flag}")
    for name in DATASETS.names():
        layout = DATASETS.meta(name).get("layout", "generated into the cache")
        print(f"dataset  {name:20s} {layout}")
    for name in suite.available():
        print(f"suite    {name}")
    return 0


def _run(args) -> int:
    from samplerbench import suite as suite_mod
    from samplerbench.kernels.allocator import tune_malloc
    from samplerbench.kernels.threads import cores, set_threads
    from samplerbench.tasks.run import run_suite

    tune_malloc()
    set_threads(args.threads or cores())
    s = suite_mod.load(args.suite)
    run_id = args.run_id
    narrowed = bool(args.methods or args.budgets or args.seeds)
    if narrowed:  # a steered sweep shares the full suite's run folder and cells
        run_id = run_id or f"{s.name}-{s.digest()[:8]}" + (f"-limit{args.limit}" if args.limit else "")
        s = s.narrowed(_csv(args.methods, str), _csv(args.budgets, int), _csv(args.seeds, int))
    run_dir = run_suite(s, Path(args.results), Path(args.cache) if args.cache else None, run_id,
                        args.device, progress=not args.quiet, data_root=_data_root(args), limit=args.limit,
                        timing=not args.no_timing, narrowed=narrowed)
    if _finish_ranks():  # under torchrun, rank 0 reports
        return 0
    summary = json.loads((run_dir / "summary.json").read_text())
    print("cells: " + ", ".join(f"{k} {v}" for k, v in summary.items() if k not in ("provenance_id", "phases_s")))
    for task, phases in summary.get("phases_s", {}).items():
        print(f"time {task}: " + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items()))
    print(f"results: {run_dir}")
    if args.report:
        from samplerbench.reports.render import render

        print(f"report: {render(run_dir, Path(args.out))}")
    return 0


def _finish_ranks() -> bool:
    """Leave torchrun's process group; True on a rank other than 0 (which prints nothing)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return False
    rank = dist.get_rank()
    dist.destroy_process_group()
    return rank != 0


def _features(args) -> int:
    from samplerbench import suite as suite_mod
    from samplerbench.kernels.allocator import tune_malloc
    from samplerbench.kernels.threads import cores, set_threads
    from samplerbench.tasks.run import extract_suite

    tune_malloc()
    set_threads(args.threads or cores())
    out = extract_suite(suite_mod.load(args.suite), Path(args.cache) if args.cache else None, args.device,
                        progress=not args.quiet, data_root=_data_root(args), limit=args.limit)
    if _finish_ranks():
        return 0
    for split, info in out.items():
        print(f"{split}: {info['videos']} videos ({info['decoded']} decoded now, {info['failed']} failed); "
              f"features {', '.join(info['features'])}" + (f"; pixels {info['pixels']}" if info["pixels"] else ""))
    return 0


def _csv(text: str | None, kind) -> list | None:
    return [kind(x) for x in text.split(",") if x.strip()] if text else None


def _data_args(p) -> None:
    p.add_argument("--data-root", default=None,
                   help="where the suite's relative dataset roots live (default: $SAMPLERBENCH_DATA, else .)")


def _data_root(args) -> Path | None:
    return Path(args.data_root) if args.data_root else None


def _data_check(args) -> int:
    from samplerbench import suite as suite_mod
    from samplerbench.data.check import check_dataset, format_report
    from samplerbench.tasks.frames import default_cache_dir

    s = suite_mod.load(args.suite)
    out = Path(args.out) if args.out else Path("results") / "data-check" / s.name
    reports, verdict = check_dataset(s.dataset, Path(args.cache) if args.cache else default_cache_dir(), out,
                                     _data_root(args), decode=not args.no_decode, limit=args.limit)
    print(format_report(reports))
    print(verdict)
    return 1 if verdict.startswith("FAIL") else 0


def _compare(args) -> int:
    from samplerbench.metrics.stats import BootstrapConfig
    from samplerbench.reports.compare import render_compare
    from samplerbench.tasks.compare import compare_runs
    from samplerbench.tasks.run import TASKS

    a, b = Path(args.run_a), Path(args.run_b)
    for r in (a, b):
        if not (r / "cells").is_dir():
            print(f"{r}: not a run folder (no cells/)", file=sys.stderr)
            return 2
    cfg = BootstrapConfig(args.resamples, args.seed, args.alpha)
    diffs, alone = compare_runs(a, b, TASKS, cfg)
    out = render_compare(diffs, alone, a, b, Path(args.out) / f"compare-{a.name}-vs-{b.name}", cfg.alpha)
    changed = int(diffs["changed"].sum()) if len(diffs) else 0  # two NaNs are the same value
    print(f"{changed} value(s) differ ({int(diffs['significant'].sum()) if len(diffs) else 0} significant), "
          f"{len(alone)} cell(s) in one run only: {out / 'compare.md'}")
    return 0


def _report(args) -> int:
    from samplerbench.reports.render import render
    from samplerbench.tasks.run import rescore_run

    if not args.no_rescore:  # metrics recomputed from the stored predictions with today's code
        counts = rescore_run(Path(args.run))
        print("rescored from stored predictions: " + (", ".join(f"{k} {v} cells" for k, v in counts.items()) or "none"))
    out = render(Path(args.run), Path(args.out), args.interval)
    print(f"report: {out}")
    if not args.quiet:
        for stem in ("table_top1", "table_reduction_mask_ap"):
            if (out / f"{stem}.md").is_file():
                print((out / f"{stem}.md").read_text())
    return 0


def _cost(args) -> int:
    from dataclasses import replace

    from samplerbench.cost import papers as paper_cost

    if args.encoder:
        cfg = paper_cost.CostConfig("custom", args.encoder, args.candidates, args.frames,
                                    resolution=args.resolution or paper_cost.ENCODERS.get(args.encoder, (None, 224))[1],
                                    sampler=args.sampler, sampler_resolution=args.sampler_resolution,
                                    restorer=args.restorer, sllm_head=args.restorer, note="custom configuration")
        configs = [cfg]
    else:
        names = args.presets or list(paper_cost.PRESETS)
        unknown = [n for n in names if n not in paper_cost.PRESETS]
        if unknown:
            raise ValueError(f"unknown cost preset(s) {unknown}; have {sorted(paper_cost.PRESETS)}")
        configs = [paper_cost.PRESETS[n] for n in names]
    print("GFLOPs per video, fvcore convention (one multiply-add = one FLOP); ptflops (aten backend) cross-checks "
          f"each module, tolerance {100 * paper_cost.TOLERANCE:.0f}%.\n")
    for cfg in configs:
        if args.keep_ratio:
            cfg = replace(cfg, frames=max(1, round(args.keep_ratio * cfg.candidates)))
        comps = paper_cost.components(cfg, cross_check=not args.no_cross_check)
        print(paper_cost.table(cfg, comps) + "\n")
    return 0


def _gate(args) -> int:
    from samplerbench.cost.gate import run_gate

    return run_gate([Path(p) for p in args.run_json], Path(args.baseline), args.tolerance, args.update_baseline,
                    args.add_new, tuple(args.accept))


def _quality(args) -> int:
    from samplerbench.tasks.quality import run_gate
    from samplerbench.tasks.run import TASKS

    tol = args.tolerance if args.tolerance in (None, "interval") else float(args.tolerance)
    if args.drop_other_platforms and not args.update_baseline:
        print("--drop-other-platforms goes with --update-baseline")
        return 2
    return run_gate(Path(args.run), TASKS, Path(args.baseline), tol, args.update_baseline, args.drop_other_platforms)


def _baseline_tolerance() -> str:
    """The committed throughput baseline's tolerance, for the help text (never a stale number)."""
    from samplerbench.cost.gate import DEFAULT_BASELINE

    try:
        return str(json.loads(DEFAULT_BASELINE.read_text())["tolerance"])
    except (OSError, ValueError, KeyError):
        return "whatever it holds"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="samplerbench", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="registered methods, datasets and built-in suites").set_defaults(fn=_list)
    r = sub.add_parser("run", help="evaluate a suite (a built-in name or a TOML path)")
    r.add_argument("suite")
    r.add_argument("--results", default="results", help="results folder (default: results)")
    r.add_argument("--run-id", default=None, help="default: <suite>-<suite hash>; an existing run resumes")
    r.add_argument("--cache", default=None, help="dataset/model cache (default: $SAMPLERBENCH_CACHE or ~/.cache/samplerbench)")
    r.add_argument("--device", default="cpu", help="cpu (bit-reproducible) or cuda")
    r.add_argument("--threads", type=int, default=0, help="intra-op threads of torch and of the BLAS/OpenMP pools (default: the cores; "
                   "samplerbench.kernels.threads states the policy)")
    r.add_argument("--report", action="store_true", help="render the report when done")
    r.add_argument("--out", default="reports/out", help="report folder (default: reports/out)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    _data_args(r)
    r.add_argument("--limit", type=int, default=0, help="only the first N videos of each split (a smoke run)")
    r.add_argument("--no-timing", action="store_true",
                   help="skip the timing runs (videos/s, peak memory): quality metrics only, as the quality gate runs")
    r.add_argument("--methods", default=None, help="comma-separated names or labels: only these methods (the "
                   "cells go to the full suite's run folder, so a later full run reuses them)")
    r.add_argument("--budgets", default=None, help="comma-separated frame budgets, instead of the suite's")
    r.add_argument("--seeds", default=None, help="comma-separated seeds, instead of the suite's")
    r.set_defaults(fn=_run)
    f = sub.add_parser("features", help="fill a suite's feature store ahead of a sweep (torchrun: sharded)")
    f.add_argument("suite")
    f.add_argument("--cache", default=None)
    f.add_argument("--device", default="cpu")
    f.add_argument("--threads", type=int, default=0)
    f.add_argument("--limit", type=int, default=0)
    f.add_argument("-q", "--quiet", action="store_true")
    _data_args(f)
    f.set_defaults(fn=_features)
    rp = sub.add_parser("report", help="render tables and plots from a run's stored rows")
    rp.add_argument("run", help="a run folder, results/<run-id>")
    rp.add_argument("--out", default="reports/out")
    rp.add_argument("-q", "--quiet", action="store_true")
    rp.add_argument("--no-rescore", action="store_true", help="render the stored rows as they are")
    rp.add_argument("--interval", choices=["pm", "range"], default="pm",
                    help="show intervals as value ± half-width (pm) or value [low, high] (range)")
    rp.set_defaults(fn=_report)
    cp = sub.add_parser("compare", help="two runs cell by cell: differences with paired bootstrap intervals")
    cp.add_argument("run_a")
    cp.add_argument("run_b")
    cp.add_argument("--out", default="reports/out")
    cp.add_argument("--resamples", type=int, default=1000)
    cp.add_argument("--seed", type=int, default=0)
    cp.add_argument("--alpha", type=float, default=0.05)
    cp.set_defaults(fn=_compare)
    c = sub.add_parser("cost", help="per-video GFLOPs of the papers' configurations, counted from the modules")
    c.add_argument("presets", nargs="*", help="preset names (default: all); see --encoder for a custom one")
    c.add_argument("--encoder", help="custom: clip-vit-b32, clip-vit-b16, resnet50, mobilenet_v2, vit-b16-tokens, "
                                     "or a runtime encoder <family>:<model> (open_clip:ViT-B-32, torchvision:resnet50)")
    c.add_argument("-T", "--candidates", type=int, default=32)
    c.add_argument("-N", "--frames", type=int, default=8, help="frames encoded (or frame-equivalents of tokens)")
    c.add_argument("--keep-ratio", type=float, default=None, help="N = round(ratio * T), overrides presets' N")
    c.add_argument("--resolution", type=int, default=None)
    c.add_argument("--sampler", default="none", help="none, sosampler, mmsampler, kcenter")
    c.add_argument("--sampler-resolution", type=int, default=224)
    c.add_argument("--restorer", action="store_true", help="SLLM: restorer and temporal head")
    c.add_argument("--no-cross-check", action="store_true", help="skip ptflops")
    c.set_defaults(fn=_cost)
    g = sub.add_parser("gate", help="compare a pytest-benchmark JSON with the throughput baseline")
    g.add_argument("run_json", nargs="+", help="pytest-benchmark JSON(s); several: best attempt per benchmark")
    g.add_argument("--baseline", default="results/baselines/throughput.json")
    g.add_argument("--tolerance", type=float, default=None,
                   help="allowed slowdown as a fraction (default: the tolerance stored in the baseline file, "
                        f"{_baseline_tolerance()} in the committed one)")
    g.add_argument("--update-baseline", action="store_true",
                   help="write the runs' medians as this machine's baseline section (other machines' are kept)")
    g.add_argument("--add-new", action="store_true",
                   help="record only the benchmarks the baseline lacks (e.g. a new sampler's), keep the others")
    g.add_argument("--accept", action="append", default=[], metavar="PATTERN",
                   help="record the benchmarks matching this fnmatch pattern (an intended change; repeatable), "
                        "keep the others")
    g.set_defaults(fn=_gate)
    q = sub.add_parser("quality", help="compare a run's quality metrics with the committed quality baseline")
    q.add_argument("run", help="a run folder (results/<run-id>), e.g. of the quick suite")
    q.add_argument("--baseline", default="results/baselines/quality.json")
    q.add_argument("--tolerance", default=None,
                   help="'interval' (a value is worse when outside the baseline's bootstrap interval) or an "
                        "allowed fall in the metric's units (default: what the baseline file says)")
    q.add_argument("--update-baseline", action="store_true",
                   help="record this run as its CPU platform's baseline section (other platforms' are kept)")
    q.add_argument("--drop-other-platforms", action="store_true",
                   help="with --update-baseline, after a change that moves every platform's numbers: keep only "
                        "this platform's section and the cross-platform spread measured before")
    q.set_defaults(fn=_quality)
    d = sub.add_parser("data", help="dataset tools")
    dsub = d.add_subparsers(dest="data_cmd", required=True)
    dc = dsub.add_parser("check", help="videos, classes, missing and unreadable videos, durations of a suite's data")
    dc.add_argument("suite")
    dc.add_argument("--cache", default=None)
    dc.add_argument("--out", default=None, help="where problems.csv goes (default: results/data-check/<suite>)")
    dc.add_argument("--no-decode", action="store_true", help="probe only; do not decode a frame of each video")
    dc.add_argument("--limit", type=int, default=0)
    _data_args(dc)
    dc.set_defaults(fn=_data_check)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.fn(args)
    except OSError as e:  # the environment: read-only or full folder, permissions, a missing volume
        print(f"samplerbench: error: {os_error_line(e)}", file=sys.stderr)
        return 2 if isinstance(e, FileNotFoundError) else 1
    except (ValueError, KeyError) as e:
        for line in str(e).splitlines() or [type(e).__name__]:  # a suite's problems: one line each
            print(f"samplerbench: error: {line}", file=sys.stderr)
        return 2


def os_error_line(e: OSError) -> str:
    """One line for an environment fault: the path and the fault (``[Errno 30] Read-only file
    system``); an error raised with its own message keeps it."""
    if e.strerror is None:  # raised with a message of our own (it names its file)
        return (str(e).splitlines() or [type(e).__name__])[0]
    where = e.filename if e.filename is not None else "?"
    if e.filename2 is not None:
        where = f"{where} -> {e.filename2}"
    return f"{where}: {e.strerror} [Errno {e.errno}, {errno.errorcode.get(e.errno, '?')}]"


if __name__ == "__main__":
    sys.exit(main())
