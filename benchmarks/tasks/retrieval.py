"""The retrieval task of a suite (``[retrieval]``): every method's selection on each test video
goes through the retrieval model (CLIP4Clip mean pooling over the kept frames), every caption
of the test split is ranked against every video, and R@1/5/10, MdR and MnR are stored for both
directions, with the frames used (mean and per-video distribution) and GFLOPs per video.

Cells live in ``retrieval/<cell>.json`` (written atomically, skipped when done, so a killed run
resumes) and are consolidated into ``retrieval_rows.csv``. Adaptive methods (mmSampler) run
first; a ``match`` baseline then runs once per adaptive method, at the mean count it kept.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from samplerbench.metrics.ranking import retrieval_metrics
from samplerbench.models.clip4clip import CaptionSet, similarity
from samplerbench.sampling import Budget
from samplerbench.store.files import write_csv, write_json
from samplerbench.suite import RetrievalSpec


def _budget_of(spec: RetrievalSpec, sampler, candidates: int) -> list[tuple[str, Budget]]:
    if spec.budget == "adaptive" or getattr(sampler, "adaptive", False):
        return [("adaptive", Budget("adaptive"))]
    if spec.budget == "all" or sampler.ignores_budget:
        return [("all", Budget("count", candidates))]
    return [(str(spec.budget), Budget("count", int(spec.budget)))]


def evaluate_retrieval_cell(ctx, spec: RetrievalSpec, sampler, budget: Budget, seed: int, model,
                            captions: CaptionSet) -> dict:
    """Select on every test video, embed the kept frames, rank captions against videos."""
    from samplerbench.tasks.classification import selections  # the runner imports this module

    embs, per_video, fails, kept = [], [], [], []
    index = {r.video_id: i for i, r in enumerate(ctx.split.records)}
    for rec, vc, view, sel in selections(ctx, spec.method.key, sampler, budget, seed, fails):
        i = index[rec.video_id]
        mask = torch.zeros(1, len(vc.candidates))
        mask[0, torch.from_numpy(sel.indices)] = 1.0
        with torch.no_grad():
            embs.append(model.video_embed(vc.feats[None].to(ctx.device), mask.to(ctx.device))[0])
        n = int(sel.indices.size)
        enc = ctx.cost.encoder_head(n)[0]
        proj = n * model.frame_proj.in_features * model.frame_proj.out_features  # multiply-adds
        kept.append(i)
        per_video.append({"video": rec.video_id, "frames": vc.candidates[sel.indices].tolist(),
                          "positions": sel.indices.tolist(), "n": n,
                          "hash": sel.digest(), "gflops_sampler": (view.charged_flops + sel.own_flops) / 1e9,
                          "gflops_encoder": (enc.flops + proj) / 1e9})
    values = {}
    if per_video:
        position = {v: j for j, v in enumerate(kept)}  # the failed videos' captions leave with them
        mine = np.isin(captions.video, kept)
        caps = CaptionSet(captions.ids[torch.from_numpy(mine)],
                          np.array([position[v] for v in captions.video[mine]]), [])
        sim = similarity(model, torch.stack(embs), caps)
        values = retrieval_metrics(sim, caps.video)
        pv = pd.DataFrame(per_video)
        n = pv["n"].to_numpy()
        values.update(frames=float(n.mean()), frames_std=float(n.std()), frames_min=float(n.min()),
                      frames_max=float(n.max()), gflops_sampler=float(pv["gflops_sampler"].mean()),
                      gflops_encoder=float(pv["gflops_encoder"].mean()))
        values["gflops_total"] = values["gflops_sampler"] + values["gflops_encoder"]
        values["frames_hist"] = np.bincount(n, minlength=ctx.num_candidates + 1).tolist()  # per-video counts
    return {"values": values, "videos": per_video, "failures": fails, "n_videos": len(per_video)}


def run_retrieval(ctx, run_dir: Path, done) -> None:
    """Evaluate the suite's retrieval cells into ``run_dir/retrieval``; then consolidate."""
    suite = ctx.suite
    if not suite.retrieval_methods:
        return
    env = ctx.env
    model, record = env.retrieval_model()
    ctx.prov["retrieval_model"] = record
    captions = env.captions(ctx.split)
    seeds = list(suite.retrieval.get("seeds", suite.seeds))
    clf_key = ctx.prov.get("classifier", {}).get("key", "")
    out = run_dir / "retrieval"
    samplers = {}
    names: dict[str, list[str]] = {}  # per method label: its cells, for rows in the suite's order

    def sampler_of(spec: RetrievalSpec):
        if spec.method.key not in samplers:
            samplers[spec.method.key] = ctx.sampler(spec.method)
        return samplers[spec.method.key]

    def run(spec: RetrievalSpec, tag: str, budget: Budget, matched: str = "") -> list[dict]:
        cells = []
        for seed in seeds:
            name = re.sub(r"[^A-Za-z0-9._=+-]+", "_", f"{spec.method.display}__{tag}__s{seed}")
            names.setdefault(spec.method.display, []).append(name)
            path = out / f"{name}.json"
            if done(path, clf_key):
                cells.append(json.loads(path.read_text()))
                continue
            cell = evaluate_retrieval_cell(ctx, spec, sampler_of(spec), budget, seed, model, captions)
            label = spec.method.display if not matched else f"{spec.method.display} (= {matched})"
            cell.update(cell=name, method=spec.method.key, label=label, budget=tag, matched=matched, seed=seed,
                        provenance_id=ctx.prov["provenance_id"], classifier_key=clf_key,
                        config=sampler_of(spec).config())
            write_json(path, cell)
            cells.append(cell)
        return cells

    adaptive_means = {}
    fixed = []
    for spec in suite.retrieval_methods:
        sampler = sampler_of(spec)
        if spec.budget == "match" and not getattr(sampler, "adaptive", False) and not sampler.ignores_budget:
            fixed.append(spec)
            continue
        for tag, budget in _budget_of(spec, sampler, ctx.num_candidates):
            cells = run(spec, tag, budget)
            if tag == "adaptive":
                adaptive_means[spec.method.display] = float(np.mean([c["values"].get("frames", 0) for c in cells]))
    for spec in fixed:  # baselines at the mean count each adaptive method kept
        for target, mean in adaptive_means.items():
            if spec.match_only and target not in spec.match_only:
                continue
            n = max(1, int(round(mean)))
            run(spec, f"match-{target}", Budget("count", n), matched=target)
    consolidate_retrieval(run_dir, [n for spec in suite.retrieval_methods for n in names.get(spec.method.display, [])])


def consolidate_retrieval(run_dir: Path, order: list[str] | None = None) -> pd.DataFrame:
    """``retrieval_rows.csv``: one row per cell and metric (tidy), from ``retrieval/*.json``;
    with ``order`` (cell names), those cells only, in that order (the suite's), else all, by name."""
    rows = []
    folder = Path(run_dir) / "retrieval"
    paths = [folder / f"{n}.json" for n in order] if order is not None else sorted(folder.glob("*.json"))
    for path in paths:
        cell = json.loads(path.read_text())
        base = {k: cell.get(k) for k in ("cell", "method", "label", "budget", "matched", "seed", "n_videos",
                                         "provenance_id")}
        for metric, value in cell["values"].items():
            if isinstance(value, list):
                continue
            rows.append({**base, "metric": metric, "value": value})
    df = pd.DataFrame(rows)
    write_csv(df, Path(run_dir) / "retrieval_rows.csv")
    return df
