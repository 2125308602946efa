"""Text-video retrieval (a suite's ``[retrieval]``, mmSampler's task): every method's selection
on each test video goes through the retrieval model (CLIP4Clip mean pooling over the kept
frames), every caption of the test split is ranked against every video, and R@1/5/10, MdR and
MnR are stored for both directions, with the frames used (mean and per-video distribution) and
GFLOPs per video. Video-to-text follows CLIP4Clip by default (each other video's best caption;
``[retrieval] v2t = "all-captions"``: every caption of the other videos; see
:mod:`samplerbench.metrics.ranking`).

Adaptive methods (mmSampler) run first; a ``match`` baseline then runs once per adaptive
method, at the mean count it kept. Stored predictions per cell: ``sim`` (captions, videos), the
cosine similarities, ``caption_video``, each caption's video (a column of ``sim``), and ``v2t``,
the video-to-text definition the cell is scored with.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch

from samplerbench.metrics.ranking import V2T, retrieval_metrics, t2v_ranks, v2t_ranks
from samplerbench.metrics.stats import resampled_mean
from samplerbench.models.clip4clip import CaptionSet, caption_embeddings, similarity
from samplerbench.sampling import Budget, Sampler
from samplerbench.suite import RetrievalSpec
from samplerbench.tasks.core import Cell, CellOutput, Run, Task, record_trained
from samplerbench.tasks.frames import FrameContext


class Retrieval(Task):
    name = "retrieval"
    version = 4  # 2: the one cell loop; 3: the encoder charged once, non-finite = failure; 4: CLIP4Clip's v2t
    rows_file = "retrieval_rows.csv"
    quality = ("t2v_R@1", "t2v_R@5", "t2v_R@10", "t2v_MdR", "t2v_MnR", "v2t_R@1", "v2t_R@5", "v2t_R@10",
               "v2t_MdR", "v2t_MnR")
    shardable = True
    #: resampled over the query videos (a caption is drawn with its video; the gallery stays whole)
    resampled_metrics = ("t2v_R@1", "t2v_R@5", "t2v_R@10", "t2v_MnR", "v2t_R@1", "v2t_R@5", "v2t_R@10", "v2t_MnR")
    lower_is_better = ("t2v_MdR", "t2v_MnR", "v2t_MdR", "v2t_MnR")

    def extract(self, run: Run) -> None:
        for ctx in FrameContext.every(run, seeds_of(run.suite)):
            ctx.extract()

    def setup(self, run: Run) -> None:
        """Each replicate's retrieval model (trained once per seed, or CLIP4Clip's towers) and
        the test captions it embeds once: the model is frozen, every cell of the seed ranks them."""
        models = {}
        for ctx in FrameContext.every(run, seeds_of(run.suite)):
            model, record = ctx.env.retrieval_model()
            record_trained(run.prov, "retrieval_models", "retrieval", ctx.seed, record, run.suite.seeds)
            if ctx.seed == run.suite.seeds[0]:
                run.prov["retrieval_model"] = record
            captions = ctx.env.captions(ctx.split)
            models[ctx.seed] = (model, record, captions, caption_embeddings(model, captions, ctx.device))
        run.state["retrieval"] = models

    def config(self, run: Run) -> dict:
        return {"captions_per_video": int(run.suite.retrieval.get("captions_per_video", 5)), "v2t": v2t_of(run.suite)}

    def reader_keys(self, run: Run, cell: Cell, sampler: Sampler | None) -> list[str]:
        """The cell's replicate's retrieval model and the reader whose features it pools."""
        return [run.state["retrieval"][cell.seed][1]["key"], FrameContext.of(run, cell.seed).classifier_record["key"]]

    def readers(self, run: Run, cell: Cell, sampler: Sampler | None) -> list[dict]:
        return super().readers(run, cell, sampler) + [run.state["retrieval"][cell.seed][1]]

    def cells(self, run: Run) -> Iterator[Cell]:
        suite = run.suite
        seeds = seeds_of(suite)
        candidates = FrameContext.of(run).num_candidates
        adaptive_means, fixed = {}, []
        for spec in suite.retrieval_methods:
            sampler = run.sampler(spec.method, seeds[0])  # what it is (adaptive?), not yet its training
            if spec.budget == "match" and not sampler.adaptive and not sampler.ignores_budget:
                fixed.append(spec)
                continue
            tag, budget = _budget_of(spec, sampler, candidates)
            cells = [_cell(spec, tag, budget, seed) for seed in seeds]
            yield from cells
            if tag == "adaptive":  # the loop has stored these cells' records by now
                counts = [run.results[(self.name, c.key)]["values"].get("frames", 0) for c in cells]
                adaptive_means[spec.method.display] = float(np.mean(counts))
        for spec in fixed:  # baselines at the mean count each adaptive method kept
            for target, mean in adaptive_means.items():
                if spec.match_only and target not in spec.match_only:
                    continue
                n = max(1, int(round(mean)))
                for seed in seeds:
                    yield _cell(spec, f"match-{target}", Budget("count", n), seed, matched=target)

    def evaluate(self, run: Run, cell: Cell, sampler: Sampler) -> CellOutput:
        """Select on every test video, embed the kept frames, rank captions against videos."""
        ctx = FrameContext.of(run, cell.seed)
        model = run.state["retrieval"][cell.seed][0]
        embs, per_video, fails, kept = [], [], [], []
        index = {r.video_id: i for i, r in enumerate(ctx.split.records)}
        for rec, vc, view, sel in ctx.selections(cell.method.key, sampler, cell.spec, cell.seed, fails):
            mask = torch.zeros(1, len(vc.candidates))
            mask[0, torch.from_numpy(sel.indices)] = 1.0
            with torch.no_grad():
                emb = model.video_embed(vc.feats[None].float().to(ctx.device), mask.to(ctx.device))[0]
            if not torch.isfinite(emb).all():  # that video's failure: a NaN similarity would rank it first
                fails.append({"video": rec.video_id, "error": f"{rec.path}: {cell.method.key}: non-finite video embedding"})
                continue
            embs.append(emb)
            n = int(sel.indices.size)
            enc = ctx.encoder_flops(view, n)  # nothing when the sampler already encoded every candidate
            proj = model.frame_proj_flops(n)  # multiply-adds
            kept.append(index[rec.video_id])
            per_video.append({"video": rec.video_id, "frames": vc.candidates[sel.indices].tolist(),
                              "positions": sel.indices.tolist(), "n": n, "hash": sel.digest(),
                              "gflops_sampler": (view.charged_flops + sel.own_flops) / 1e9,
                              "gflops_encoder": (enc.flops + proj) / 1e9, **ctx.facts(rec)})
        emb = torch.stack(embs).cpu() if embs else torch.zeros(0)
        return CellOutput(per_video, {"emb": emb, "kept": np.array(kept, np.int64)}, fails)

    def merge(self, run: Run, cell: Cell, parts: list[CellOutput]) -> CellOutput:
        """The ranks' video embeddings joined, then every caption ranked against every video by
        the cell's replicate's model."""
        ctx = FrameContext.of(run, cell.seed)
        model, _, captions, text = run.state["retrieval"][cell.seed]
        per_video = [v for p in parts for v in p.videos]
        embs = [p.predictions["emb"] for p in parts if len(p.predictions["emb"])]
        kept = np.concatenate([p.predictions["kept"] for p in parts])
        preds = {"sim": np.zeros((0, 0), np.float32), "caption_video": np.zeros(0, np.int64),
                 "candidates": np.array(ctx.num_candidates), "v2t": np.array(v2t_of(run.suite))}
        if per_video:
            position = {v: j for j, v in enumerate(kept)}  # the failed videos' captions leave with them
            mine = np.isin(captions.video, kept)
            caps = CaptionSet(captions.ids[torch.from_numpy(mine)],
                              np.array([position[v] for v in captions.video[mine]]), [])
            preds.update(sim=similarity(model, torch.cat(embs).to(ctx.device), caps, text[torch.from_numpy(mine)]),
                         caption_video=caps.video)
        return CellOutput(per_video, preds, [f for p in parts for f in p.failures], {"v2t": v2t_of(run.suite)})

    def row_extras(self, cell: Cell, record: dict) -> dict:
        return {"v2t": record.get("v2t", "all-captions")}

    @classmethod
    def subset(cls, videos, predictions, keep):
        """The kept videos' columns and their captions' rows (caption_video renumbered)."""
        return cls.aligned(videos, predictions, [v["video"] for v in videos if v["video"] in keep])

    @staticmethod
    def aligned(videos, predictions, order):
        """The videos' columns of ``sim`` in ``order`` and their captions' rows (``caption_video``
        renumbered to the new columns); the other videos and their captions dropped."""
        pos = {v["video"]: i for i, v in enumerate(videos)}
        cols = np.asarray([pos[v] for v in order], dtype=np.int64)
        new = np.full(len(videos), -1, dtype=np.int64)
        new[cols] = np.arange(len(cols))
        rows = np.flatnonzero(new[predictions["caption_video"]] >= 0)
        return [videos[j] for j in cols], {**predictions, "sim": predictions["sim"][np.ix_(rows, cols)],
                                            "caption_video": new[predictions["caption_video"][rows]]}

    def resampled(self, videos, predictions, idx):
        """R@k and mean rank of both directions over resampled query videos: a video drawn brings
        its captions (text-to-video: each caption's rank, weighted by the video's caption count;
        video-to-text: the video's rank); every video stays in the gallery, as in :meth:`score`."""
        if not videos:
            return {}
        sim, cv = predictions["sim"], predictions["caption_video"]
        n = len(videos)
        t2v = t2v_ranks(sim, cv).astype(np.float64)
        v2t = v2t_ranks(sim, cv, v2t=_v2t(predictions)).astype(np.float64)
        n_caps = np.bincount(cv, minlength=n).astype(np.float64)
        out = {}
        for direction, per_video, weights in (
                ("t2v", lambda f: np.bincount(cv, f(t2v), minlength=n) / np.maximum(n_caps, 1), n_caps),
                ("v2t", lambda f: f(v2t), (v2t > 0).astype(np.float64))):
            for k in (1, 5, 10):
                out[f"{direction}_R@{k}"] = 100.0 * resampled_mean(per_video(lambda r, k=k: (r <= k).astype(np.float64)),
                                                                   idx, weights)
            out[f"{direction}_MnR"] = resampled_mean(per_video(lambda r: r), idx, weights)
        return out

    @staticmethod
    def score(videos: list[dict], predictions: dict[str, np.ndarray]) -> dict[str, float]:
        if not videos:
            return {}
        values = retrieval_metrics(predictions["sim"], predictions["caption_video"], v2t=_v2t(predictions))
        pv = pd.DataFrame(videos)
        n = pv["n"].to_numpy()
        values.update(frames=float(n.mean()), frames_std=float(n.std()), frames_min=float(n.min()),
                      frames_max=float(n.max()), gflops_sampler=float(pv["gflops_sampler"].mean()),
                      gflops_encoder=float(pv["gflops_encoder"].mean()))
        values["gflops_total"] = values["gflops_sampler"] + values["gflops_encoder"]
        values["frames_hist"] = np.bincount(n, minlength=int(predictions["candidates"]) + 1).tolist()
        return values


def v2t_of(suite) -> str:
    """The suite's video-to-text definition (``[retrieval] v2t``, default CLIP4Clip's)."""
    return str(suite.retrieval.get("v2t", V2T[0]))


def _v2t(predictions: dict[str, np.ndarray]) -> str:
    """The definition a cell is scored with: stored with its predictions (a cell stored before
    there was a choice used every caption of the other videos)."""
    return str(predictions["v2t"]) if "v2t" in predictions else "all-captions"


def _budget_of(spec: RetrievalSpec, sampler: Sampler, candidates: int) -> tuple[str, Budget]:
    if spec.budget == "adaptive" or sampler.adaptive:
        return "adaptive", Budget("adaptive")
    if spec.budget == "all" or sampler.ignores_budget:
        return "all", Budget("count", candidates)
    return str(spec.budget), Budget("count", int(spec.budget))


def seeds_of(suite) -> list[int]:
    """The retrieval cells' seeds (``[retrieval] seeds``, default the suite's): each a replicate."""
    return list(suite.retrieval.get("seeds", suite.seeds))


def _cell(spec: RetrievalSpec, tag: str, budget: Budget, seed: int, matched: str = "") -> Cell:
    key = re.sub(r"[^A-Za-z0-9._=+-]+", "_", f"{spec.method.display}__{tag}__s{seed}")
    label = spec.method.display if not matched else f"{spec.method.display} (= {matched})"
    return Cell(key, spec.method, tag, seed, spec=budget, label=label, columns=(("matched", matched),))
