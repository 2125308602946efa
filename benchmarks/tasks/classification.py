"""The runner: evaluate every (method, budget, seed) cell of a suite and store tidy rows.

A run lives in ``results/<run-id>/``:
  cells/<cell>.json      one file per finished cell: metric rows, per-video selections, failures
  timing/<cell>.json     end-to-end and model-only videos/s, peak memory (seed of the first cell)
  provenance/<id>.json   one record per invocation; rows point to the one that computed them
  rows.csv               all rows, tidy (one per cell and metric), rebuilt at the end of a run
  selections.jsonl       every video's selection (frame indices and hash), per cell
  failures.csv           videos that could not be evaluated, with the one-line reason

Cells are written atomically as they finish, so a killed run resumes where it stopped and a
re-run of a finished suite only rebuilds the tables. The test split's candidates are decoded
and encoded once per video and shared by every cell: the encoder works frame by frame, so the
head applied to a selection's cached features gives exactly the model's output on that selection.
End-to-end timing runs the real per-cell pipeline (decode only what the method needs).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from samplerbench.cost.flops import (
    FlopCount,
    PipelineCost,
    ThroughputConfig,
    count_flops,
    model_videos_per_s,
    peak_memory_mib,
    sync,
)
from samplerbench.data.annotations import AnnotationError, VideoRecord, VideoSplit
from samplerbench.data.candidates import decode_pools
from samplerbench.data.video import VideoDecodeError, read_frames
from samplerbench.features.train_env import TrainEnv
from samplerbench.metrics import classification as metrics
from samplerbench.models.classifier import TrainConfig, train_classifier
from samplerbench.models.encoders import FrameClassifier, ModelConfig
from samplerbench.models.tokens import TokenClassifier, TokenModelConfig, patchify, train_token_classifier
from samplerbench.registry import DATASETS, METHODS
from samplerbench.sampling import Budget, Sampler, Selection, VideoView, candidate_pool
from samplerbench.seeding import generator
from samplerbench.store import provenance as provenance
from samplerbench.store.files import write_csv, write_json
from samplerbench.suite import MethodSpec, Suite
from samplerbench.tasks.retrieval import run_retrieval

log = logging.getLogger(__name__)

#: Metrics whose values must be identical between two runs with the same seed.
QUALITY = ("top1", "top5", "mean_class_acc", "mAP", "event_hit_rate")
COST = ("frames", "tokens", "frames_touched", "gflops_total", "gflops_sampler", "gflops_encoder", "gflops_head")
TIMING = ("videos_per_s_e2e", "videos_per_s_model", "peak_mem_mib")


def default_cache_dir() -> Path:
    return Path(os.environ.get("SAMPLERBENCH_CACHE", Path.home() / ".cache" / "samplerbench"))


@dataclass
class VideoCache:
    """Per test video: candidates, their decoded pixels, features and single-frame logits."""

    pixels: torch.Tensor
    feats: torch.Tensor | None
    logits: np.ndarray | None
    candidates: np.ndarray


@dataclass
class Context:
    """What a cell needs: the split, the frozen model, its cost model, and shared caches."""

    suite: Suite
    split: VideoSplit
    model: FrameClassifier
    cost: PipelineCost
    device: torch.device
    frame_size: tuple[int, int]
    num_candidates: int
    prov: dict
    run_id: str
    videos: dict[str, VideoCache] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    progress: bool = True
    train: VideoSplit | None = None  # for consumers trained on a sampler's selections (token ViTs)
    val: VideoSplit | None = None
    cache_dir: Path | None = None
    token_models: dict[str, tuple[TokenClassifier, dict]] = field(default_factory=dict)
    token_costs: dict[tuple[str, int], FlopCount] = field(default_factory=dict)
    env: TrainEnv | None = None  # what learned methods train on (train/val pools, decoded once)

    def candidate_pools(self, split: VideoSplit, candidates: int, size) -> torch.Tensor:
        """A split's candidate pools, decoded once for every learned piece of this run."""
        if self.env is not None and candidates == self.env.num_candidates and tuple(size) == tuple(self.env.frame_size):
            return self.env.pools(split)
        return decode_pools(split, candidates, size)

    def sampler(self, spec: MethodSpec) -> Sampler:
        """A new instance of a method; a learned one is trained (or loaded from the cache) first,
        and its training record goes into the provenance under ``trained``."""
        sampler = METHODS.get(spec.name)(**spec.params)
        if hasattr(sampler, "prepare"):
            if self.env is None:
                raise RuntimeError(f"{spec.key}: a learned method needs the train and val splits")
            with torch.inference_mode(False), torch.enable_grad():
                record = sampler.prepare(self.env)
            if record is not None:  # the first instance's: it says whether this run trained it
                self.prov.setdefault("trained", {}).setdefault(spec.display, record)
        return sampler

    def token_model(self, spec: MethodSpec, sampler: Sampler) -> TokenClassifier:
        """The token ViT trained on this method's selections (trained once, cached on disk)."""
        if spec.key not in self.token_models:
            if self.train is None or self.val is None:
                raise RuntimeError(f"{spec.key}: a token consumer needs the train and val splits")
            cfg = TokenModelConfig(**{**self.suite.token_model, "patch": sampler.patch})
            with torch.inference_mode(False), torch.enable_grad():  # may be first asked inside a timed cell
                model, record = train_token_classifier(sampler, self.train, self.val, cfg, self.num_candidates,
                                                       self.suite.budgets, self.frame_size,
                                                       self.cache_dir or default_cache_dir(), self.model.encoder,
                                                       self.prov.get("classifier", {}).get("key", ""),
                                                       self.progress, decode=self.candidate_pools)
            self.token_models[spec.key] = (model.to(self.device), record)
            self.prov.setdefault("token_models", {})[spec.key] = record
        return self.token_models[spec.key][0]

    def token_flops(self, spec: MethodSpec, model: TokenClassifier, k: int) -> FlopCount:
        """fvcore FLOPs of the token ViT on k tokens (counted once per k)."""
        if (spec.key, k) not in self.token_costs:
            dim = model.in_features
            self.token_costs[(spec.key, k)] = count_flops(model, torch.zeros(1, k, dim, dtype=torch.uint8),
                                                          torch.zeros(1, k, dtype=torch.long))
        return self.token_costs[(spec.key, k)]

    def video(self, rec: VideoRecord) -> VideoCache | None:
        """Decode and classify a video's candidates once; a bad video is recorded and skipped."""
        if rec.video_id in self.failures:
            return None
        if rec.video_id not in self.videos:
            try:
                cands = candidate_pool(rec.num_frames, self.num_candidates)
                pixels = read_frames(rec.path, cands, size=self.frame_size)
                with torch.inference_mode():
                    feats = self.model.features(pixels.to(self.device))
                    logits = self.model.head.frame_logits(feats).float().cpu().numpy()
                    feats = feats.float().cpu()
            except (VideoDecodeError, AnnotationError) as e:
                self.failures[rec.video_id] = str(e).splitlines()[0]
                log.warning("%s", self.failures[rec.video_id])
                return None
            self.videos[rec.video_id] = VideoCache(pixels, feats, logits, cands)
        return self.videos[rec.video_id]


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def make_view(ctx: Context, rec: VideoRecord, vc: VideoCache, sampler: Sampler) -> VideoView:
    t = len(vc.candidates)
    providers = {
        "pixels": lambda: vc.pixels,
        "features": lambda: vc.feats.numpy(),
        "frame_probs": lambda: _softmax(vc.logits),
        "label": lambda: metrics.one_hot([rec.labels], ctx.split.num_classes)[0],
    }
    flops = {"frame_probs": t * ctx.cost.per_frame_classifier_flops(),
             "features": t * ctx.cost.encoder_head(1)[0].flops}
    return VideoView(rec.video_id, rec.num_frames, vc.candidates, allowed=sampler.observes,
                     providers=providers, provider_flops=flops, frame_size=ctx.frame_size)


def _check(sel: Selection, view: VideoView, budget: Budget, sampler: Sampler) -> None:
    if sel.indices.size == 0:
        raise ValueError("empty selection")
    if sel.indices[0] < 0 or sel.indices[-1] >= view.num_candidates:
        raise ValueError(f"selection outside the candidate pool 0..{view.num_candidates - 1}")
    if sampler.consumer == "tokens":
        if sel.tokens is None or sel.tokens.size == 0:
            raise ValueError("a token sampler returned no tokens")
        return
    if not sampler.ignores_budget and budget.kind != "adaptive" and sel.indices.size > budget.frames(view.num_candidates):
        raise ValueError(f"selected {sel.indices.size} frames for a budget of {budget.frames(view.num_candidates)}")


def _done(path: Path, classifier_key: str) -> bool:
    """A cell is finished if its file exists and was computed with the same classifier: a run
    resumed after the classifier changed (new code, new data) recomputes it instead of mixing."""
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("classifier_key") == classifier_key
    except json.JSONDecodeError:
        return False


def method_budgets(spec: MethodSpec, suite: Suite, candidates: int) -> list[int]:
    """The suite's budgets; a method that ignores the budget (dense) runs once, at T."""
    return [candidates] if METHODS.get(spec.name).ignores_budget else list(suite.budgets)


def cell_key(spec: MethodSpec, budget: int, seed: int) -> str:
    return f"{spec.key}__n{budget}__s{seed}"


def selections(ctx: Context, key: str, sampler: Sampler, budget: Budget, seed: int, fails: list):
    """Yield (record, cache, view, selection) for each video of the split; a video that cannot
    be decoded, or on which the method fails, is appended to ``fails`` instead (one line)."""
    for rec in ctx.split.records:
        vc = ctx.video(rec)
        if vc is None:
            fails.append({"video": rec.video_id, "error": ctx.failures[rec.video_id]})
            continue
        view = make_view(ctx, rec, vc, sampler)
        try:
            sel = sampler.select(view, budget, generator(seed, rec.video_id, key))
            _check(sel, view, budget, sampler)
        except Exception as e:  # a method failing on one video is that video's failure
            fails.append({"video": rec.video_id, "error": f"{rec.path}: {key}: {type(e).__name__}: {e}"})
            continue
        yield rec, vc, view, sel


def evaluate_cell(ctx: Context, spec: MethodSpec, sampler: Sampler, budget_n: int, seed: int) -> dict:
    """Select, predict and score every video of the split for one cell."""
    budget = Budget("count", budget_n)
    scores, labels, frames_sel, events, per_video, fails = [], [], [], [], [], []
    for rec, vc, view, sel in selections(ctx, spec.key, sampler, budget, seed, fails):
        n = int(sel.indices.size)
        sampler_flops = view.charged_flops + sel.own_flops
        extra = {}
        with torch.inference_mode():
            if sampler.consumer == "tokens":
                model = ctx.token_model(spec, sampler)
                tok = torch.from_numpy(sel.tokens)
                out = model(patchify(vc.pixels, model.cfg.patch)[tok][None].to(ctx.device), tok[None].to(ctx.device))
                enc, head = ctx.token_flops(spec, model, len(tok)), FlopCount(0.0)
                extra = {"tokens": len(tok), "frames_touched": n}
                n = len(tok) / model.grid.per_frame  # frame-equivalents
            elif sampler.consumer == "head":  # the method's own head on the encoded frames' features
                enc = ctx.cost.encoder_head(n)[0]
                head = FlopCount(sampler.head_flops(n))
                out = sampler.head_logits(vc.feats[torch.from_numpy(sel.indices)][None].to(ctx.device))
            else:
                enc, head = ctx.cost.encoder_head(n)
                out = ctx.model.head(vc.feats[torch.from_numpy(sel.indices)][None].to(ctx.device))
        scores.append(out[0].float().cpu().numpy())
        labels.append(rec.labels)
        chosen = vc.candidates[sel.indices]
        frames_sel.append(chosen)
        events.append([(e.start, e.end) for e in rec.events])
        per_video.append({"video": rec.video_id, "frames": chosen.tolist(), "hash": sel.digest(), "n": n,
                          "gflops_sampler": sampler_flops / 1e9, "gflops_encoder": enc.gflops,
                          "gflops_head": head.gflops, **extra})
    values = {}
    if per_video:
        s = np.stack(scores)
        multi_hot = metrics.one_hot(labels, ctx.split.num_classes)
        if not ctx.split.multilabel:
            single = np.array([lab[0] for lab in labels])
            values["top1"], values["top5"] = metrics.top_k_accuracy(s, single, (1, 5))
            values["mean_class_acc"] = metrics.mean_class_accuracy(s, single)
        values["mAP"] = metrics.mean_average_precision(s, multi_hot)
        values["event_hit_rate"] = metrics.event_hit_rate(frames_sel, events)
        pv = pd.DataFrame(per_video)
        values["frames"] = float(pv["n"].mean())
        for extra_col in ("tokens", "frames_touched"):
            if extra_col in pv:
                values[extra_col] = float(pv[extra_col].mean())
        values["gflops_sampler"] = float(pv["gflops_sampler"].mean())
        values["gflops_encoder"] = float(pv["gflops_encoder"].mean())
        values["gflops_head"] = float(pv["gflops_head"].mean())
        values["gflops_total"] = values["gflops_sampler"] + values["gflops_encoder"] + values["gflops_head"]
    return {"values": values, "videos": per_video, "failures": fails, "n_videos": len(per_video)}


@torch.inference_mode()
def time_cell(ctx: Context, spec: MethodSpec, sampler: Sampler, budget_n: int, seed: int, n_videos: int) -> dict:
    """End-to-end videos/s (decode what the method needs, select, encode, head) on the first
    ``n_videos`` good videos after one warm-up video; model-only videos/s at the mean count."""
    budget = Budget("count", budget_n)
    recs = [r for r in ctx.split.records if r.video_id not in ctx.failures][: n_videos + 1]
    needs_pixels = bool(sampler.observes & {"pixels", "features", "frame_probs"})
    tokens = sampler.consumer == "tokens"
    token_model = ctx.token_model(spec, sampler) if tokens else None
    counts, elapsed = [], 0.0
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)
    for i, rec in enumerate(recs):
        sync(ctx.device)
        t0 = time.perf_counter()
        cands = candidate_pool(rec.num_frames, ctx.num_candidates)
        pixels = feats = logits = None
        if needs_pixels:
            pixels = read_frames(rec.path, cands, size=ctx.frame_size)
            if sampler.observes & {"features", "frame_probs"}:
                f = ctx.model.features(pixels.to(ctx.device))
                feats = f.float().cpu()
                logits = ctx.model.head.frame_logits(f).float().cpu().numpy()
        vc = VideoCache(pixels, feats, logits, cands)
        view = make_view(ctx, rec, vc, sampler)
        sel = sampler.select(view, budget, generator(seed, rec.video_id, spec.key))
        clip = pixels[sel.indices] if pixels is not None else read_frames(rec.path, cands[sel.indices], size=ctx.frame_size)
        if tokens:  # the touched frames' patches, then the selected tokens among them
            p = token_model.cfg.patch
            per_frame = token_model.grid.per_frame
            local = np.searchsorted(sel.indices, sel.tokens // per_frame) * per_frame + sel.tokens % per_frame
            patches = patchify(clip, p)[torch.from_numpy(local)]
            token_model(patches[None].to(ctx.device), torch.from_numpy(sel.tokens)[None].to(ctx.device))
        elif sampler.consumer == "head":
            sampler.head_logits(ctx.model.features(clip.to(ctx.device))[None])
        else:
            ctx.model(clip[None].to(ctx.device))
        sync(ctx.device)
        if i > 0:  # the first video warms up
            elapsed += time.perf_counter() - t0
            counts.append(len(sel.tokens) if tokens else len(sel.indices))
    mean_n = int(round(np.mean(counts))) if counts else budget_n
    if tokens:  # model-only: the ViT on K tokens
        model_only = model_videos_per_s(token_model, mean_n, (token_model.in_features,), ctx.device,
                                        throughput_config(ctx.suite))
    elif sampler.consumer == "head":
        model_only = model_videos_per_s(EncoderThenHead(ctx.model, sampler), mean_n, (3, *ctx.frame_size), ctx.device,
                                        throughput_config(ctx.suite))
    else:
        model_only = model_videos_per_s(ctx.model, mean_n, (3, *ctx.frame_size), ctx.device, throughput_config(ctx.suite))
    return {
        "videos_per_s_e2e": len(counts) / elapsed if elapsed > 0 else float("nan"),
        "videos_per_s_model": model_only.pop("videos_per_s"),
        "peak_mem_mib": peak_memory_mib(ctx.device),
        "timed_videos": len(counts), "device": str(ctx.device), **model_only,
    }


class EncoderThenHead(torch.nn.Module):
    """Model-only timing of a method with its own head: the frozen encoder on the encoded
    frames, then the method's head (SLLM: restorer and temporal transformer)."""

    def __init__(self, model: FrameClassifier, sampler: Sampler):
        super().__init__()
        self.model, self.sampler = model, sampler

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        b, n = frames.shape[:2]
        return self.sampler.head_logits(self.model.features(frames.flatten(0, 1)).view(b, n, -1))


def throughput_config(suite: Suite) -> ThroughputConfig:
    """``[eval] timing = {batch, precision, channels_last, compile}`` (``timing_batch``: older name)."""
    opts = dict(suite.eval.get("timing", {}))
    if "timing_batch" in suite.eval:
        opts.setdefault("batch", int(suite.eval["timing_batch"]))
    return ThroughputConfig(**opts)


def run_suite(suite: Suite, results_dir: Path, cache_dir: Path | None = None, run_id: str | None = None,
              device: str = "cpu", progress: bool = True) -> Path:
    """Evaluate a suite into ``results_dir/<run-id>``; finished cells are skipped. Returns the run folder."""
    cache_dir = Path(cache_dir or default_cache_dir())
    if suite.task == "reduction":
        from samplerbench.tasks.reduction import run_reduction

        return run_reduction(suite, results_dir, cache_dir, run_id, progress)
    run_id = run_id or f"{suite.name}-{suite.digest()[:8]}"
    run_dir = Path(results_dir) / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device)
    torch.use_deterministic_algorithms(dev.type == "cpu", warn_only=True)

    ds = suite.dataset
    build = DATASETS.get(ds["name"])
    params = dict(ds.get("params", {}))
    split = build(cache_dir, ds.get("split", "test"), progress=progress, **params)
    train = build(cache_dir, ds.get("train_split", "train"), progress=progress, **params)
    val = build(cache_dir, ds.get("val_split", "val"), progress=progress, **params)
    frame_size = tuple(ds.get("frame_size", [64, 64]))

    model_cfg, train_cfg = ModelConfig(**suite.model), TrainConfig(**suite.train)
    model, train_record = train_classifier(train, val, model_cfg, train_cfg, frame_size, cache_dir, progress)
    model = model.to(dev)

    prov = provenance.collect(device=str(dev), suite=suite.name, suite_hash=suite.digest(), suite_file=suite.source,
                              run_id=run_id, seeds=suite.seeds, candidates=int(suite.eval.get("candidates", 32)),
                              timing=asdict(throughput_config(suite)), dataset=ds["name"], split=split.split,
                              manifest_hash=split.manifest_hash, train_manifest_hash=train.manifest_hash,
                              classifier=train_record)
    write_json(run_dir / "provenance" / f"{prov['provenance_id']}.json", prov)
    candidates = int(suite.eval.get("candidates", 32))
    env = TrainEnv(train, val, model, train_record["key"], candidates, frame_size, tuple(suite.budgets), cache_dir,
                   dev, progress, retrieval_cfg=dict(suite.retrieval.get("model", {})),
                   captions_per_video=int(suite.retrieval.get("captions_per_video", 5)))
    ctx = Context(suite, split, model, PipelineCost(model, (3, *frame_size)), dev, frame_size, candidates, prov, run_id,
                  progress=progress, train=train, val=val, cache_dir=cache_dir, env=env)
    timing_videos = int(suite.eval.get("timing_videos", 16))

    cells = [(spec, b, s) for spec in suite.methods for b in method_budgets(spec, suite, candidates)
             for s in suite.seeds]
    clf_key = train_record["key"]
    todo = [c for c in cells if not _done(run_dir / "cells" / f"{cell_key(*c)}.json", clf_key)]
    log.info("%s: %d cells, %d to do", run_id, len(cells), len(todo))
    samplers = {}  # one instance per method for all its cells: per-video memos are shared
    for spec, b, s in tqdm(todo, desc=f"evaluating {run_id}", unit="cell", disable=not progress):
        if spec.key not in samplers:
            samplers[spec.key] = ctx.sampler(spec)
        sampler = samplers[spec.key]
        key = cell_key(spec, b, s)
        cell = evaluate_cell(ctx, spec, sampler, b, s)
        cell.update(cell=key, method=spec.key, method_name=spec.name, label=spec.display, budget=b, seed=s,
                    upper_bound=sampler.upper_bound, ignores_budget=sampler.ignores_budget,
                    provenance_id=prov["provenance_id"], classifier_key=clf_key, config=sampler.config())
        write_json(run_dir / "cells" / f"{key}.json", cell)
    for spec in suite.methods:  # timing: once per (method, budget), first seed
        for b in method_budgets(spec, suite, candidates):
            key = cell_key(spec, b, suite.seeds[0])
            path = run_dir / "timing" / f"{key}.json"
            if not _done(path, clf_key):
                sampler = ctx.sampler(spec)  # fresh: no memo hides the work (weights load from the cache)
                t = time_cell(ctx, spec, sampler, b, suite.seeds[0], timing_videos)
                write_json(path, {**t, "cell": key, "provenance_id": prov["provenance_id"], "classifier_key": clf_key})
    run_retrieval(ctx, run_dir, _done)  # the suite's [retrieval] task, if any
    if ctx.cost.unsupported():
        prov["fvcore_unsupported_ops"] = ctx.cost.unsupported()
    if ctx.cost.unsupported() or ctx.token_models or "trained" in prov or "retrieval_model" in prov:  # learned pieces: training records
        write_json(run_dir / "provenance" / f"{prov['provenance_id']}.json", prov)
    consolidate(run_dir, {cell_key(*c) for c in cells}, [spec.key for spec in suite.methods])
    return run_dir


def consolidate(run_dir: Path, keys: set[str] | None = None, order: list[str] | None = None) -> pd.DataFrame:
    """Rebuild rows.csv, selections.jsonl and failures.csv from the cell files (those of
    ``keys`` only, when given: cells of an earlier grid of the same run stay on disk, unused).
    Rows follow the suite's method ``order`` when given (tables list methods in that order)."""
    run_dir = Path(run_dir)
    provs = {p.stem: json.loads(p.read_text()) for p in (run_dir / "provenance").glob("*.json")}
    timing = {t["cell"]: t for t in (json.loads(p.read_text()) for p in (run_dir / "timing").glob("*.json"))}
    rows, failures = [], []
    with open(run_dir / "selections.jsonl.tmp", "w") as sel_out:
        cells = [json.loads(p.read_text()) for p in sorted((run_dir / "cells").glob("*.json"))
                 if keys is None or p.stem in keys]
        rank = {m: i for i, m in enumerate(order or [])}
        for cell in sorted(cells, key=lambda c: (rank.get(c["method"], len(rank)), c["budget"], c["seed"])):
            prov = provs.get(cell["provenance_id"], {})
            base = {"run_id": prov.get("run_id", run_dir.name), "suite": prov.get("suite"),
                    "suite_hash": prov.get("suite_hash"), "dataset": prov.get("dataset"), "split": prov.get("split"),
                    "manifest_hash": prov.get("manifest_hash"), "method": cell["method"],
                    "method_name": cell["method_name"], "label": cell["label"], "upper_bound": cell["upper_bound"],
                    "ignores_budget": cell["ignores_budget"], "budget": cell["budget"], "seed": cell["seed"],
                    "n_videos": cell["n_videos"], "n_failed": len(cell["failures"]),
                    "git_commit": prov.get("git_commit"), "git_dirty": prov.get("git_dirty"),
                    "device": prov.get("hardware", {}).get("device"), "provenance_id": cell["provenance_id"]}
            for metric, value in cell["values"].items():
                kind = "quality" if metric in QUALITY else "cost"
                rows.append({**base, "metric": metric, "value": value, "kind": kind})
            t = timing.get(cell["cell"])
            if t:
                for metric in TIMING:
                    rows.append({**base, "metric": metric, "value": t[metric], "kind": "timing",
                                 "provenance_id": t["provenance_id"]})
            for v in cell["videos"]:
                sel_out.write(json.dumps({"cell": cell["cell"], **v}) + "\n")
            failures += [{"cell": cell["cell"], **f} for f in cell["failures"]]
    os.replace(run_dir / "selections.jsonl.tmp", run_dir / "selections.jsonl")
    df = pd.DataFrame(rows)
    write_csv(df, run_dir / "rows.csv")
    write_csv(pd.DataFrame(failures, columns=["cell", "video", "error"]), run_dir / "failures.csv")
    return df
