"""Classification: every (method, budget, seed) cell of a suite, read by the frozen frame
classifier (frame samplers), a token ViT trained on the sampler's selections (token samplers) or
the method's own head (SLLM); top-1/top-5, mean class accuracy, mAP, event hit rate, frames and
GFLOPs per video; end-to-end and model-only videos/s per (method, budget) at the first seed.

Stored predictions per cell: ``probs`` (videos, classes), the reader's class probabilities
(softmax of its logits; sigmoid for multi-label data), on which every metric is computed;
``labels`` (videos, classes), multi-hot ground truth; ``multilabel``. A video whose scores are
not finite is that cell's recorded failure. The per-video records keep
the selection (candidate frames and hash), the labelled events and the cost.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from samplerbench.cost.flops import FlopCount, model_videos_per_s, peak_memory_mib, sync
from samplerbench.data.candidates import candidates_of
from samplerbench.data.media import read_record
from samplerbench.data.video import fit_frames
from samplerbench.metrics import classification as metrics
from samplerbench.metrics.stats import resampled_mean, resampled_mean_class_accuracy
from samplerbench.models.encoders import FrameClassifier
from samplerbench.registry import METHODS
from samplerbench.sampling import Budget, Sampler
from samplerbench.seeding import generator
from samplerbench.store.files import write_json
from samplerbench.suite import MethodSpec
from samplerbench.tasks.core import Cell, CellOutput, Run, Task
from samplerbench.tasks.frames import FrameContext, VideoCache, throughput_config

#: Metrics whose values must be identical between two runs with the same seed.
QUALITY = ("top1", "top5", "mean_class_acc", "mAP", "event_hit_rate")
COST = ("frames", "tokens", "frames_touched", "gflops_total", "gflops_sampler", "gflops_encoder", "gflops_head")
TIMING = ("videos_per_s_e2e", "videos_per_s_model", "peak_mem_mib")


class Classification(Task):
    name = "classification"
    version = 3  # 2: the one cell loop; 3: probabilities, the encoder charged once, non-finite = failure
    rows_file = "rows.csv"
    quality = QUALITY
    shardable = True
    resampled_metrics = QUALITY  # mAP on multi-label data only, where it is the headline (the others: single-label)

    def setup(self, run: Run) -> None:
        FrameContext.every(run)

    def extract(self, run: Run) -> None:
        for ctx in FrameContext.every(run):
            ctx.extract()

    def config(self, run: Run) -> dict:
        out = {"token_model": run.suite.token_model}
        if FrameContext.of(run).split.multilabel:  # frame probabilities by sigmoid, as the reader's
            out["frame_probs"] = "sigmoid"
        return out

    def cells(self, run: Run) -> Iterator[Cell]:
        """Every (method, budget, seed); after a token sampler's cells (other than the uniform
        baseline's), its dense reference: every token of the N uniform frames, read by the same
        token ViT (:func:`dense_reference`), against which its paired tests are made."""
        ctx = FrameContext.of(run)
        for spec in run.suite.methods:
            dense = dense_reference(spec)
            tested = (("tested_against", dense.display),) if dense is not None else ()
            for b in method_budgets(spec.name, run.suite.budgets, ctx.num_candidates):
                for s in run.suite.seeds:
                    yield Cell(f"{spec.key}__n{b}__s{s}", spec, b, s, label=spec.display,
                               columns=(("ignores_budget", METHODS.get(spec.name).ignores_budget), *tested))
            if dense is not None:
                for b in run.suite.budgets:
                    for s in run.suite.seeds:
                        yield Cell(f"{spec.key}-dense__n{b}__s{s}", dense, b, s, spec=spec, label=dense.display,
                                   columns=(("ignores_budget", False), ("reference_of", spec.display)))

    @staticmethod
    def token_reader(cell: Cell) -> MethodSpec:
        """The method whose token ViT reads a cell: its own, or for a dense reference the
        token sampler it is the reference of (``cell.spec``)."""
        return cell.spec if isinstance(cell.spec, MethodSpec) else cell.method

    def reader_keys(self, run: Run, cell: Cell, sampler: Sampler | None) -> list[str]:
        """The cell's replicate's reader, and the token ViT that reads a token sampler's tokens."""
        ctx = FrameContext.of(run, cell.seed)
        own = [ctx.classifier_record["key"]]
        if sampler is not None and sampler.reader == "tokens":
            key, _ = self._vit(run, cell)
            return own + [ctx.token_models[key][1]["key"]]
        return own

    def _vit(self, run: Run, cell: Cell):
        """(key, model) of the token ViT that reads a token cell, trained (or loaded) if needed."""
        spec = self.token_reader(cell)
        ctx = FrameContext.of(run, cell.seed)
        return spec.key, ctx.token_model(spec.key, run.sampler(spec, cell.seed))

    def readers(self, run: Run, cell: Cell, sampler: Sampler | None) -> list[dict]:
        """The method's own pieces, and what reads its selections: its token ViT, the frame
        classifier (a method with its own head reads the classifier's frozen features only)."""
        ctx = FrameContext.of(run, cell.seed)
        own = super().readers(run, cell, sampler)
        if sampler is not None and sampler.reader == "tokens":
            return own + [ctx.token_models[self._vit(run, cell)[0]][1]]
        if sampler is not None and sampler.reader == "head":
            return own
        return own + [ctx.classifier_record]

    def evaluate(self, run: Run, cell: Cell, sampler: Sampler) -> CellOutput:
        """Select, predict and record every video of the split for one cell. A token ViT reads
        its videos in batches of ``[eval] token_batch`` (default 32) selections of one length:
        one call a video was most of a token method's cells (4 blocks at batch 1)."""
        ctx = FrameContext.of(run, cell.seed)
        key, budget = cell.method.key, Budget("count", cell.budget)
        probs, labels, per_video, fails = [], [], [], []
        to_probs = metrics.sigmoid if ctx.split.multilabel else metrics.softmax
        pending = []  # token reader: (video's record parts, its patch features (K, D), its token ids (K,))
        token_batch = max(1, int(run.suite.eval.get("token_batch", 32)))

        def record(rec, vc, view, sel, out, n, enc, head, extra):
            logits = out.float().cpu().numpy()
            if not np.isfinite(logits).all():  # that video's failure, not a score that ranks anywhere
                fails.append({"video": rec.video_id, "error": f"{rec.path}: {key}: non-finite class scores "
                                                              f"({int((~np.isfinite(logits)).sum())} of {logits.size})"})
                return
            probs.append(to_probs(logits))
            labels.append(rec.labels)
            per_video.append({"video": rec.video_id, "frames": vc.candidates[sel.indices].tolist(),
                              "hash": sel.digest(), "n": n, "events": [[e.start, e.end] for e in rec.events],
                              "gflops_sampler": (view.charged_flops + sel.own_flops) / 1e9, "gflops_encoder": enc.gflops,
                              "gflops_head": head.gflops, **ctx.facts(rec), **extra})

        vit_key = self._vit(run, cell)[0] if sampler.reader == "tokens" else key

        def flush():
            if pending:
                model = ctx.token_models[vit_key][0]
                with torch.inference_mode():
                    out = model.vit(torch.stack([x for _, x, _ in pending]).to(ctx.device),
                                    torch.stack([t for _, _, t in pending]).to(ctx.device))
                for (parts, _, _), row in zip(pending, out, strict=True):
                    record(*parts[:4], row, *parts[4:])
                pending.clear()

        for rec, vc, view, sel in ctx.selections(key, sampler, budget, cell.seed, fails):
            n = int(sel.indices.size)
            with torch.inference_mode():
                if sampler.reader == "tokens":
                    model = ctx.token_models[vit_key][0]
                    tok = torch.from_numpy(sel.tokens)
                    x = ctx.patch_memo(vit_key, model, rec.video_id, lambda vc=vc: vc.pixels, tok)[0]
                    if pending and (len(pending) == token_batch or len(tok) != len(pending[0][2])):
                        flush()
                    pending.append(((rec, vc, view, sel, len(tok) / model.grid.per_frame,  # frame-equivalents
                                     ctx.token_flops(vit_key, model, len(tok), n), FlopCount(0.0),
                                     {"tokens": len(tok), "frames_touched": n}), x, tok))
                    continue
                if sampler.reader == "head":  # the method's own head on the encoded frames' features
                    enc = ctx.encoder_flops(view, n)
                    head = FlopCount(sampler.head_flops(n))
                    out = sampler.head_logits(vc.feats[torch.from_numpy(sel.indices)][None].float().to(ctx.device))
                else:
                    enc, head = ctx.encoder_flops(view, n), ctx.cost.encoder_head(n)[1]
                    out = ctx.model.head(vc.feats[torch.from_numpy(sel.indices)][None].float().to(ctx.device))
            record(rec, vc, view, sel, out[0], n, enc, head, {})
        flush()
        c = ctx.split.num_classes
        preds = {"probs": np.stack(probs) if probs else np.zeros((0, c)),
                 "labels": metrics.one_hot(labels, c), "multilabel": np.array(ctx.split.multilabel)}
        return CellOutput(per_video, preds, fails)

    @staticmethod
    def score(videos: list[dict], predictions: dict[str, np.ndarray]) -> dict[str, float]:
        values = {}
        if not videos:
            return values
        multi_hot = predictions["labels"]
        s = Classification._probs(predictions)
        if not bool(predictions["multilabel"]):
            single = multi_hot.argmax(1)
            values["top1"], values["top5"] = metrics.top_k_accuracy(s, single, (1, 5))
            values["mean_class_acc"] = metrics.mean_class_accuracy(s, single)
        values["mAP"] = metrics.mean_average_precision(s, multi_hot)
        values["event_hit_rate"] = metrics.event_hit_rate([np.asarray(v["frames"]) for v in videos],
                                                          [[tuple(e) for e in v["events"]] for v in videos])
        pv = pd.DataFrame(videos)
        values["frames"] = float(pv["n"].mean())
        for extra_col in ("tokens", "frames_touched"):
            if extra_col in pv:
                values[extra_col] = float(pv[extra_col].mean())
        values["gflops_sampler"] = float(pv["gflops_sampler"].mean())
        values["gflops_encoder"] = float(pv["gflops_encoder"].mean())
        values["gflops_head"] = float(pv["gflops_head"].mean())
        values["gflops_total"] = values["gflops_sampler"] + values["gflops_encoder"] + values["gflops_head"]
        return values

    @staticmethod
    def _probs(predictions: dict[str, np.ndarray]) -> np.ndarray:
        """The class probabilities; a cell stored by version 2 kept the reader's logits, from which
        the same probabilities follow."""
        if "probs" in predictions:
            return predictions["probs"]
        to_probs = metrics.sigmoid if bool(predictions["multilabel"]) else metrics.softmax
        return to_probs(predictions["scores"])

    def resampled(self, videos, predictions, idx):
        """Top-1/top-5 and the event hit rate as means of per-video outcomes (vectorised over the
        resamples); mean class accuracy and, on multi-label data, mAP recomputed per resample."""
        out = {}
        if not videos:
            return out
        s, multi_hot = self._probs(predictions), predictions["labels"]
        hits, has = metrics.event_hits([np.asarray(v["frames"]) for v in videos],
                                       [[tuple(e) for e in v["events"]] for v in videos])
        out["event_hit_rate"] = resampled_mean(hits, idx, has)
        if bool(predictions["multilabel"]):
            out["mAP"] = np.array([metrics.mean_average_precision(s[r], multi_hot[r]) for r in idx])
            return out
        single = multi_hot.argmax(1)
        out["top1"] = resampled_mean(metrics.top_k_hits(s, single, 1), idx)
        out["top5"] = resampled_mean(metrics.top_k_hits(s, single, 5), idx)
        pred = np.argmax(s, axis=1)
        out["mean_class_acc"] = resampled_mean_class_accuracy(pred, single, idx, int(max(pred.max(), single.max())) + 1)
        return out

    def correct(self, videos, predictions):
        if not videos or bool(predictions["multilabel"]):
            return None
        return metrics.top_k_hits(self._probs(predictions), predictions["labels"].argmax(1), 1)

    @staticmethod
    def subset(videos, predictions, keep):
        idx = [i for i, v in enumerate(videos) if v["video"] in keep]
        return [videos[i] for i in idx], {**{k: v[idx] for k, v in predictions.items() if k in ("probs", "scores")},
                                          "labels": predictions["labels"][idx], "multilabel": predictions["multilabel"]}

    def finish(self, run: Run, cells: list[tuple[Cell, dict]]) -> None:
        """Timing: once per (method, budget), at the first seed, with a fresh sampler (no memo
        hides the work; weights load from the cache); skipped when stored for this fingerprint, or
        for a quality-only run. Then the selection strips of the report."""
        ctx = FrameContext.of(run, run.suite.seeds[0])
        n_videos = int(run.suite.eval.get("timing_videos", 16))
        shared: dict = {}  # the shared reader's model-only timings of this run, per frame count
        for cell, rec in cells if run.timing else ():
            if cell.seed != run.suite.seeds[0] or dict(cell.columns).get("reference_of"):
                continue  # timed at the first seed; a dense reference is a reading, not a method to time
            path = run.run_dir / "timing" / f"{cell.key}.json"
            if _stored_fingerprint(path) == rec["fingerprint"]:
                continue
            sampler = METHODS.get(cell.method.name)(**cell.method.params)
            if sampler.learns:
                with torch.inference_mode(False), torch.enable_grad():
                    sampler.prepare(ctx.env)
            t = time_cell(ctx, cell.method.key, sampler, int(cell.budget), cell.seed, n_videos, shared, cell.key)
            write_json(path, {**t, "cell": cell.key, "provenance_id": run.prov["provenance_id"],
                              "fingerprint": rec["fingerprint"]})
        write_strips(ctx, run.run_dir / "strips.npz", int(run.suite.eval.get("strip_videos", 4)))

    def row_extras(self, cell: Cell, record: dict) -> dict:
        return {"method_name": record["method_name"]}

    def timing_rows(self, run_dir: Path, cell: Cell, record: dict) -> list[dict]:
        path = Path(run_dir) / "timing" / f"{cell.key}.json"
        if _stored_fingerprint(path) != record["fingerprint"]:
            return []
        t = json.loads(path.read_text())
        return [{"metric": m, "value": t[m], "provenance_id": t["provenance_id"]} for m in TIMING]


def write_strips(ctx: FrameContext, path: Path, videos: int, size: int = 40) -> None:
    """Thumbnails of the candidates of the first ``videos`` test videos that decoded (uint8,
    ``size`` px, from the stores), with their frame numbers: what the report's selection strips
    draw. Rewritten when the videos or their candidates change."""
    picked = []
    for p, rec in enumerate(ctx.split.records):
        if len(picked) == videos:
            break
        vc = ctx.video(p)
        if vc is not None:
            picked.append((rec.video_id, vc))
    if not picked or len({len(vc.candidates) for _, vc in picked}) != 1:
        return
    ids = np.array([v for v, _ in picked])
    cands = np.stack([vc.candidates for _, vc in picked]).astype(np.int64)
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            if np.array_equal(z["videos"], ids) and np.array_equal(z["candidates"], cands):
                return
    thumbs = np.stack([fit_frames(vc.pixels, (size, size)).numpy() for _, vc in picked])
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
    np.savez_compressed(tmp, thumbs=thumbs, candidates=cands, videos=ids)
    tmp.replace(path)


def _stored_fingerprint(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("fingerprint")
    except (OSError, json.JSONDecodeError):
        return None


def dense_reference(spec: MethodSpec) -> MethodSpec | None:
    """A token sampler's dense reference: ``tokens-uniform`` at its patch size (every token of
    the N uniform frames), labelled after it; None for frame samplers and the uniform tokens."""
    cls = METHODS.get(spec.name)
    if cls.reader != "tokens" or spec.name == "tokens-uniform":
        return None
    # the patch is always named: the key differs from a plain tokens-uniform's (its own ViT)
    return MethodSpec("tokens-uniform", {"patch": spec.params.get("patch", cls.patch)}, f"{spec.display}: every token")


def method_budgets(name: str, budgets: list[int], candidates: int) -> list[int]:
    """The suite's budgets; a method that ignores the budget (dense) runs once, at T."""
    return [candidates] if METHODS.get(name).ignores_budget else list(budgets)


@torch.inference_mode()
def time_cell(ctx: FrameContext, key: str, sampler: Sampler, budget_n: int, seed: int, n_videos: int,
              shared: dict | None = None, cell_key: str = "") -> dict:
    """End-to-end videos/s (decode what the method needs, select, encode, head) on the first
    ``n_videos`` good videos after one warm-up video; model-only videos/s at the mean count.

    Model-only timing of the shared reader (the suite's classifier) depends only on the frame
    count, so it is measured once per count and run in ``shared`` and given to every method
    that reads that many frames (``model_timed_in`` names the cell that measured it): the same
    workload, one number, rather than one noisy measurement per method. A token ViT or a
    method's own head is the method's own model and is always timed."""
    budget = Budget("count", budget_n)
    recs = [r for r in ctx.split.records if r.video_id not in ctx.failures and not r.error][: n_videos + 1]
    needs_pixels = bool(sampler.observes & {"pixels", "features", "frame_probs"})
    tokens = sampler.reader == "tokens"
    token_model = ctx.token_model(key, sampler) if tokens else None
    counts, elapsed = [], 0.0
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)
    for i, rec in enumerate(recs):
        sync(ctx.device)
        t0 = time.perf_counter()
        cands = candidates_of(rec, ctx.num_candidates)
        pixels = feats = logits = None
        if needs_pixels:
            pixels = read_record(rec, cands, size=ctx.frame_size, resize=ctx.resize)
            if sampler.observes & {"features", "frame_probs"}:
                f = ctx.model.features(pixels.to(ctx.device))
                feats = f.float().cpu()
                logits = ctx.model.head.frame_logits(f).float().cpu().numpy()
        vc = VideoCache(pixels, feats, logits, cands)
        view = ctx.view(rec, vc, sampler)
        sel = sampler.select(view, budget, generator(seed, rec.video_id, key))
        if feats is not None and not tokens:  # the selected frames were encoded with every candidate: the head reads them
            x = feats[torch.from_numpy(sel.indices)][None].to(ctx.device)
            if sampler.reader == "head":
                sampler.head_logits(x)
            else:
                ctx.model.head(x)
        else:
            clip = (pixels[sel.indices] if pixels is not None else
                    read_record(rec, cands[sel.indices], size=ctx.frame_size, resize=ctx.resize))
            if tokens:  # the touched frames, then the selected tokens among their tokens
                per_frame = token_model.grid.per_frame
                local = np.searchsorted(sel.indices, sel.tokens // per_frame) * per_frame + sel.tokens % per_frame
                token_model.read(clip.to(ctx.device), torch.from_numpy(local), torch.from_numpy(sel.tokens))
            elif sampler.reader == "head":
                sampler.head_logits(ctx.model.features(clip.to(ctx.device))[None])
            else:
                ctx.model(clip[None].to(ctx.device))
        sync(ctx.device)
        if i > 0:  # the first video warms up
            elapsed += time.perf_counter() - t0
            counts.append(len(sel.tokens) if tokens else len(sel.indices))
    mean_n = int(round(np.mean(counts))) if counts else budget_n
    tcfg = throughput_config(ctx.suite)
    if tokens:  # model-only: the ViT on K tokens
        model_only = model_videos_per_s(token_model, mean_n, (token_model.in_features,), ctx.device, tcfg)
    elif sampler.reader == "head":
        model_only = model_videos_per_s(EncoderThenHead(ctx.model, sampler), mean_n, (3, *ctx.frame_size),
                                        ctx.device, tcfg)
    else:
        shared = {} if shared is None else shared
        if mean_n not in shared:
            shared[mean_n] = {**model_videos_per_s(ctx.model, mean_n, (3, *ctx.frame_size), ctx.device, tcfg),
                              "model_timed_in": cell_key}
        model_only = dict(shared[mean_n])
    model_only["model_count"] = mean_n  # frames (tokens for a token reader) the model-only timing fed
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
