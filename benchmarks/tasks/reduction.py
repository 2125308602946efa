"""EVFR's experiment as a task: which frames of the training videos are worth annotating and
training on. For each method and ratio S_k (1/k of each training video's frames; S1 = all), the
method selects frames from every training video, a fresh segmentation model
(:mod:`.segmentation`) trains on those frames and their instance masks only, and mask AP and box
AP are measured (pycocotools) on every frame of the test videos.

A run lives in ``results/<run-id>/`` as the classification task's does:
  reduction/<cell>.json   one file per finished (method, S_k, seed): metrics, training record,
                          per-video selections (indices and hash), failures; written atomically,
                          so a killed run resumes without losing or recounting anything
  reduction_rows.csv      tidy rows (method, ratio k, seed, metric, value, provenance)
  provenance/<id>.json

Fairness: at one seed every selection trains the same initial weights for the same number of
steps; the batches are drawn from the selected frames by a generator of (seed, cell). S1 is
one cell per seed (every method selects every frame), the start of every curve. An ``untrained``
cell per seed (the initial weights, no step) gives the chance level. Samplers see what they
declare: the pixels of every frame of a training video at the dataset's frame size, and the
embeddings named by ``embedding`` (:data:`EMBEDDINGS`); the cost of computing them is recorded
per video as the sampler's GFLOPs, apart from training.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F
from tqdm import tqdm

from samplerbench.data.annotations import AnnotationError, VideoSplit
from samplerbench.data.instances import FrameInstances, write_instances
from samplerbench.data.video import VideoDecodeError, read_frames
from samplerbench.metrics.coco import coco_gt, mask_and_box_ap
from samplerbench.models.segmentation import SegConfig, predict_instances, train_segmenter
from samplerbench.registry import DATASETS, METHODS
from samplerbench.sampling import Budget, Sampler, Selection, VideoView
from samplerbench.seeding import generator
from samplerbench.store import provenance as provenance
from samplerbench.store.files import write_csv, write_json
from samplerbench.suite import MethodSpec, Suite

log = logging.getLogger(__name__)



def thumbnail(frames: torch.Tensor, side: int = 16) -> tuple[np.ndarray, float]:
    """Embeddings of uint8 frames (n, 3, H, W): each frame area-averaged to side x side x 3, in
    [0, 1] (768-d at 16). Returns the embeddings and their FLOPs (one add per input value)."""
    x = F.adaptive_avg_pool2d(frames.float() / 255.0, side)
    return x.flatten(1).numpy(), float(frames[0].numel() * len(frames))


#: name -> function of a video's uint8 frames (n, 3, H, W) -> ((n, D) embeddings, FLOPs)
EMBEDDINGS: dict[str, Callable[[torch.Tensor], tuple[np.ndarray, float]]] = {"thumbnail": thumbnail}


@dataclass(frozen=True)
class ReductionConfig:
    """``[reduction]`` of a suite: how many videos, which ratios, the embedding, the model."""

    train_videos: int = 32  # the first videos of the train split (every frame annotated)
    test_videos: int = 12  # the first videos of the test split (every frame evaluated)
    ratios: tuple[int, ...] = (1, 2, 3, 4, 5, 7, 10)  # S_k: 1/k of each video's frames
    embedding: str = "thumbnail"
    seg: SegConfig = field(default_factory=SegConfig)

    @classmethod
    def of(cls, suite: Suite) -> ReductionConfig:
        raw = dict(suite.reduction)
        seg = SegConfig(**raw.pop("model", {}))
        if "ratios" in raw:
            raw["ratios"] = tuple(int(k) for k in raw["ratios"])
        cfg = cls(**raw, seg=seg)
        if cfg.embedding not in EMBEDDINGS:
            raise ValueError(f"{suite.source}: reduction.embedding must be one of {sorted(EMBEDDINGS)}")
        if 1 not in cfg.ratios or any(k < 1 for k in cfg.ratios):
            raise ValueError(f"{suite.source}: reduction.ratios must be integers >= 1 and include 1 (the full set)")
        return cfg


@dataclass
class VideoData:
    """One video's every frame, category maps and (training videos) embeddings."""

    video_id: str
    frames: torch.Tensor  # uint8 (n, 3, H, W)
    maps: torch.Tensor  # uint8 (n, H, W)
    feats: np.ndarray | None = None
    feat_flops: float = 0.0
    path: str = ""  # the video file, for error messages


def load_instances(split: VideoSplit, count: int) -> FrameInstances:
    """The COCO instances of the first ``count`` videos of ``split`` (written once, then read)."""
    return FrameInstances.load(write_instances(split, count))


def load_videos(split: VideoSplit, inst: FrameInstances, count: int, size: tuple[int, int], failures: dict,
                embedding: str | None = None, progress: bool = True) -> list[VideoData]:
    """Decode every frame of the first ``count`` videos and take their masks from ``inst``
    (:func:`load_instances`); a video that cannot be decoded is recorded in ``failures`` and
    left out."""
    out = []
    for rec in tqdm(split.records[:count], desc=f"decoding {split.split} (every frame)", disable=not progress,
                    mininterval=1.0):
        try:
            frames = read_frames(rec.path, np.arange(rec.num_frames), size=size)
        except (VideoDecodeError, AnnotationError) as e:
            failures[rec.video_id] = str(e).splitlines()[0]
            log.warning("%s", failures[rec.video_id])
            continue
        maps = torch.from_numpy(inst.semantic_maps(rec.video_id, rec.num_frames, tuple(frames.shape[-2:])))
        v = VideoData(rec.video_id, frames, maps, path=str(rec.path))
        if embedding:
            v.feats, v.feat_flops = EMBEDDINGS[embedding](frames)
        out.append(v)
    return out


def reduction_cells(suite: Suite, cfg: ReductionConfig) -> list[tuple[MethodSpec | None, int, int]]:
    """(method, k, seed): per seed an untrained reference (k = 0), the full set (k = 1, no
    method), then every method at every other ratio."""
    cells = []
    for s in suite.seeds:
        cells += [(None, 0, s), (None, 1, s)]
        cells += [(spec, k, s) for spec in suite.methods for k in cfg.ratios if k > 1]
    return cells


def cell_key(spec: MethodSpec | None, k: int, seed: int) -> str:
    name = spec.key if spec is not None else ("untrained" if k == 0 else "full")
    return f"{name}__S{k}__s{seed}"


def select_frames(sampler: Sampler, spec_key: str, videos: list[VideoData], k: int, seed: int,
                  fails: list) -> tuple[list[tuple[VideoData, np.ndarray]], float]:
    """Each video's selection at ratio 1/k (sorted frame indices) and the sampler's mean GFLOPs
    per video (observations + its own work); a video the method fails on is a recorded failure."""
    budget = Budget("ratio", 1.0 / k)
    chosen, flops = [], []
    for v in videos:
        n = len(v.frames)
        view = VideoView(v.video_id, n, np.arange(n), allowed=sampler.observes,
                         providers={"pixels": lambda v=v: v.frames, "features": lambda v=v: v.feats},
                         provider_flops={"features": v.feat_flops}, frame_size=tuple(v.frames.shape[-2:]))
        try:
            sel = sampler.select(view, budget, generator(seed, v.video_id, f"{spec_key}__S{k}"))
            if sel.indices.size == 0 or sel.indices[-1] >= n or sel.indices.size > budget.frames(n):
                raise ValueError(f"selected {sel.indices.size} frames (max index {sel.indices.max(initial=-1)}) "
                                 f"for a budget of {budget.frames(n)} of {n}")
        except Exception as e:  # one video's failure, not the run's
            fails.append({"video": v.video_id, "error": f"{v.path or v.video_id}: {spec_key}: {type(e).__name__}: {e}"})
            continue
        chosen.append((v, sel.indices))
        flops.append(view.charged_flops + sel.own_flops)
    return chosen, float(np.mean(flops)) / 1e9 if flops else float("nan")


def evaluate_cell(spec: MethodSpec | None, sampler: Sampler | None, k: int, seed: int, train: list[VideoData],
                  test: tuple[torch.Tensor, list[int]], gt, num_classes: int, cfg: ReductionConfig,
                  failures: dict[str, str] | None = None) -> dict:
    """Select, train on the selection, evaluate on every test frame: one cell's record.
    ``failures``: videos that could not be decoded (recorded in every cell, as they are missing
    from every cell)."""
    key = cell_key(spec, k, seed)
    fails: list = [{"video": v, "error": e} for v, e in (failures or {}).items()]
    if sampler is None:  # the full set (k = 1) or the untrained reference (k = 0)
        chosen, gflops = [(v, np.arange(len(v.frames))) for v in train], 0.0
    else:
        chosen, gflops = select_frames(sampler, spec.key, train, k, seed, fails)
    if not chosen:
        raise RuntimeError(f"{key}: no training video could be selected from ({len(fails)} failures)")
    frames = torch.cat([v.frames[torch.from_numpy(idx)] for v, idx in chosen])
    maps = torch.cat([v.maps[torch.from_numpy(idx)] for v, idx in chosen])
    seg = cfg.seg if k > 0 else SegConfig(**{**asdict(cfg.seg), "iterations": 0})
    model, record = train_segmenter(frames, maps, num_classes, seg, init_seed=seed, order_seed=key)
    preds = predict_instances(model, *test, min_area=seg.min_area)
    values = mask_and_box_ap(gt, preds)
    counts = [len(idx) for _, idx in chosen]
    values.update(frames=float(sum(counts)), frames_per_video=float(np.mean(counts)),
                  gflops_sampler=gflops, train_s=record["train_s"], predicted_instances=float(len(preds)))
    videos = [{"video": v.video_id, "indices": idx.tolist(), "hash": Selection(idx).digest()} for v, idx in chosen]
    return {"cell": key, "method": spec.key if spec else ("untrained" if k == 0 else "full"),
            "method_name": spec.name if spec else None, "label": spec.display if spec else None,
            "k": k, "seed": seed, "values": values, "train": record, "videos": videos, "failures": fails,
            "config": sampler.config() if sampler is not None else {}}


def run_reduction(suite: Suite, results_dir: Path, cache_dir: Path, run_id: str | None = None,
                  progress: bool = True) -> Path:
    """Run a ``task = "reduction"`` suite into ``results_dir/<run-id>``; finished cells are kept."""
    cfg = ReductionConfig.of(suite)
    run_id = run_id or f"{suite.name}-{suite.digest()[:8]}"
    run_dir = Path(results_dir) / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.use_deterministic_algorithms(True, warn_only=True)
    ds = suite.dataset
    build = DATASETS.get(ds["name"])
    params = dict(ds.get("params", {}))
    train_split = build(cache_dir, ds.get("train_split", "train"), progress=progress, **params)
    test_split = build(cache_dir, ds.get("split", "test"), progress=progress, **params)
    size = tuple(ds.get("frame_size", [64, 64]))
    failures: dict[str, str] = {}
    train = load_videos(train_split, load_instances(train_split, cfg.train_videos), cfg.train_videos, size,
                        failures, cfg.embedding, progress)
    inst = load_instances(test_split, cfg.test_videos)
    test = load_videos(test_split, inst, cfg.test_videos, size, failures, None, progress)
    test_ids = [v.video_id for v in test]
    gt_dict = inst.subset(test_ids)
    gt = coco_gt(gt_dict)
    image_ids = [inst.image_ids[(v.video_id, t)] for v in test for t in range(len(v.frames))]
    test_input = (torch.cat([v.frames for v in test]), image_ids)
    num_classes = len(inst.categories)

    prov = provenance.collect(suite=suite.name, suite_hash=suite.digest(), suite_file=suite.source, run_id=run_id,
                              task="reduction", seeds=suite.seeds, dataset=ds["name"], split=test_split.split,
                              manifest_hash=test_split.manifest_hash, train_manifest_hash=train_split.manifest_hash,
                              reduction=asdict(cfg), categories=inst.categories,
                              train_frames=int(sum(len(v.frames) for v in train)),
                              test_frames=len(image_ids), test_instances=len(gt_dict["annotations"]),
                              video_failures=failures)
    write_json(run_dir / "provenance" / f"{prov['provenance_id']}.json", prov)
    cells = reduction_cells(suite, cfg)
    todo = [c for c in cells if not (run_dir / "reduction" / f"{cell_key(*c)}.json").is_file()]
    log.info("%s: %d cells, %d to do", run_id, len(cells), len(todo))
    samplers: dict[str, Sampler] = {}  # one per method: per-video memos (variance indices) are shared
    for spec, k, seed in tqdm(todo, desc=f"evaluating {run_id}", unit="cell", disable=not progress):
        sampler = None
        if spec is not None:
            if spec.key not in samplers:
                samplers[spec.key] = METHODS.get(spec.name)(**spec.params)
                if hasattr(samplers[spec.key], "prepare"):
                    raise ValueError(f"{suite.source}: {spec.display} is trained for classification; the reduction "
                                     "task takes training-free samplers")
            sampler = samplers[spec.key]
        cell = evaluate_cell(spec, sampler, k, seed, train, test_input, gt, num_classes, cfg, failures)
        cell["provenance_id"] = prov["provenance_id"]
        write_json(run_dir / "reduction" / f"{cell['cell']}.json", cell)
    consolidate_reduction(run_dir, {cell_key(*c) for c in cells}, [s.key for s in suite.methods])
    return run_dir


def consolidate_reduction(run_dir: Path, keys: set[str] | None = None, order: list[str] | None = None) -> pd.DataFrame:
    """Rebuild ``reduction_rows.csv`` (tidy, one row per cell and metric) from the cell files."""
    provs = {p.stem: json.loads(p.read_text()) for p in (run_dir / "provenance").glob("*.json")}
    cells = [json.loads(p.read_text()) for p in sorted((run_dir / "reduction").glob("*.json"))
             if keys is None or p.stem in keys]
    rank = {m: i for i, m in enumerate(["untrained", "full", *(order or [])])}
    rows = []
    for c in sorted(cells, key=lambda c: (rank.get(c["method"], len(rank)), c["k"], c["seed"])):
        p = provs.get(c["provenance_id"], {})
        label = c["label"] or {"untrained": "untrained (chance)", "full": "full set (S1)"}[c["method"]]
        base = {"run_id": p.get("run_id", run_dir.name), "suite": p.get("suite"), "dataset": p.get("dataset"),
                "manifest_hash": p.get("manifest_hash"), "method": c["method"], "method_name": c["method_name"],
                "label": label, "k": c["k"], "seed": c["seed"], "n_failed": len(c["failures"]),
                "git_commit": p.get("git_commit"), "git_dirty": p.get("git_dirty"),
                "provenance_id": c["provenance_id"]}
        rows += [{**base, "metric": m, "value": v} for m, v in c["values"].items()]
    df = pd.DataFrame(rows)
    write_csv(df, run_dir / "reduction_rows.csv")
    return df
