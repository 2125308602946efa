"""EVFR's experiment as a task: which frames of the training videos are worth annotating and
training on. For each method and ratio S_k (1/k of each training video's frames; S1 = all), the
method selects frames from every training video, a fresh segmentation model
(:mod:`.segmentation`) trains on those frames and their instance masks only, and mask AP and box
AP are measured (pycocotools) on every frame of the test videos.

Its cells go through the one cell loop (:mod:`.core`): ``cells/reduction/<cell>.{json,npz}``
per (method, S_k, seed), ``reduction_rows.csv``. Stored predictions per cell: the detections
(image, category, score, RLE mask) and the ground truth (COCO JSON), so mask and box AP are
recomputed from the cell alone.

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
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from samplerbench.data.annotations import AnnotationError, VideoSplit
from samplerbench.data.instances import FrameInstances, convert_video_instances, write_instances
from samplerbench.data.media import read_record
from samplerbench.data.video import VideoDecodeError
from samplerbench.metrics.coco import coco_gt, mask_and_box_ap
from samplerbench.models.segmentation import SegConfig, predict_instances, train_segmenter
from samplerbench.registry import DATASETS
from samplerbench.sampling import Budget, Sampler, Selection, VideoView
from samplerbench.seeding import generator
from samplerbench.suite import MethodSpec, Suite
from samplerbench.tasks.core import Cell, CellOutput, Run, Task

log = logging.getLogger(__name__)



def thumbnail(frames: torch.Tensor, side: int = 16) -> tuple[np.ndarray, float]:
    """Embeddings of uint8 frames (n, 3, H, W): each frame area-averaged to side x side x 3, in
    [0, 1] (768-d at 16). Returns the embeddings and their FLOPs (one add per input value)."""
    x = F.adaptive_avg_pool2d(frames.float() / 255.0, side)
    return x.flatten(1).numpy(), float(frames[0].numel() * len(frames))


#: name -> function of a video's uint8 frames (n, 3, H, W) -> ((n, D) embeddings, FLOPs); any
#: other ``[reduction] embedding`` names a pretrained encoder (:func:`encoder_embedding`)
EMBEDDINGS: dict[str, Callable[[torch.Tensor], tuple[np.ndarray, float]]] = {"thumbnail": thumbnail}


def encoder_embedding(name: str, weights: str | None = None) -> tuple[Callable[[torch.Tensor], tuple[np.ndarray, float]], str]:
    """A pretrained encoder's features of each frame at its own input size and normalisation,
    from local weights (EVFR's FSD reads ImageNet ResNet-50 features: ``torchvision:resnet50``),
    and the weights' sha256; FLOPs counted by fvcore per frame."""
    from samplerbench.cost.flops import count_flops
    from samplerbench.models.pretrained import build_pretrained

    enc = build_pretrained(name, weights).eval()
    size = tuple(enc.preprocess.size)
    per_frame: dict[tuple, float] = {}

    def embed(frames: torch.Tensor) -> tuple[np.ndarray, float]:
        with torch.inference_mode():
            x = F.interpolate(enc.normalise(frames), size=size, mode="bilinear", antialias=True, align_corners=False)
            feats = torch.cat([enc(c) for c in x.split(32)]).float()
            if x.shape[1:] not in per_frame:
                per_frame[x.shape[1:]] = count_flops(enc, x[:1]).flops
        return feats.numpy(), per_frame[x.shape[1:]] * len(frames)

    return embed, enc.weights_sha


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
        if cfg.embedding not in EMBEDDINGS and ":" not in cfg.embedding:
            raise ValueError(f"{suite.source}: reduction.embedding must be one of {sorted(EMBEDDINGS)} or a "
                             f"pretrained encoder <family>:<model> (e.g. torchvision:resnet50), not {cfg.embedding!r}")
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


def load_instances(split: VideoSplit, count: int, size: tuple[int, int] | None = None,
                   cache_dir: Path | None = None) -> FrameInstances:
    """The COCO instances of the first ``count`` videos of ``split`` (written once, then read):
    generated for synth-events; converted to the frames' geometry for a real dataset's
    annotations (YouTube-VIS, COCO with video ids), into the cache."""
    data = split.meta.get("instances_data")
    if data is None:
        return FrameInstances.load(write_instances(split, count))
    ids = [r.video_id for r in split.records[:count]]
    name = f"{split.name}-{split.split}-{split.manifest_hash[:16]}-{count}-{size[0]}x{size[1]}.json"
    out = Path(cache_dir or ".") / "instances" / name
    if not out.is_file():
        keep = set(ids)
        convert_video_instances([d for d in data if d[0] in keep], split.meta["categories"], size, out,
                                {"description": f"{split.name} {split.split}", "videos": ids,
                                 "manifest_hash": split.manifest_hash})
    return FrameInstances.load(out)


def load_videos(split: VideoSplit, inst: FrameInstances, count: int, size: tuple[int, int], failures: dict,
                embedding: Callable[[torch.Tensor], tuple[np.ndarray, float]] | None = None,
                progress: bool = True) -> list[VideoData]:
    """Decode every frame of the first ``count`` videos and take their masks from ``inst``
    (:func:`load_instances`); a video that cannot be decoded is recorded in ``failures`` and
    left out."""
    out = []
    for rec in tqdm(split.records[:count], desc=f"decoding {split.split} (every frame)", disable=not progress,
                    mininterval=1.0):
        try:
            frames = read_record(rec, np.arange(rec.num_frames), size=size)
        except (VideoDecodeError, AnnotationError) as e:
            failures[rec.video_id] = str(e).splitlines()[0]
            log.warning("%s", failures[rec.video_id])
            continue
        maps = torch.from_numpy(inst.semantic_maps(rec.video_id, rec.num_frames, tuple(frames.shape[-2:])))
        v = VideoData(rec.video_id, frames, maps, path=str(rec.path))
        if embedding is not None:
            v.feats, v.feat_flops = embedding(frames)
        out.append(v)
    return out


def cell_key(spec: MethodSpec | None, k: int, seed: int) -> str:
    name = spec.key if spec is not None else ("untrained" if k == 0 else "full")
    return f"{name}__S{k}__s{seed}"


def select_frames(sampler: Sampler, spec_key: str, videos: list[VideoData], k: int, seed: int,
                  fails: list) -> list[tuple[VideoData, np.ndarray, float]]:
    """Each video's selection at ratio 1/k (sorted frame indices) and the sampler's FLOPs on it
    (observations + its own work); a video the method fails on is a recorded failure."""
    budget = Budget("ratio", 1.0 / k)
    chosen = []
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
        chosen.append((v, sel.indices, view.charged_flops + sel.own_flops))
    return chosen


def detections_to_arrays(preds: list[dict]) -> dict[str, np.ndarray]:
    """COCO result records -> arrays that round-trip exactly (no pickle)."""
    return {"image_id": np.array([p["image_id"] for p in preds], np.int64),
            "category_id": np.array([p["category_id"] for p in preds], np.int64),
            "score": np.array([p["score"] for p in preds], np.float64),
            "size": np.array([p["segmentation"]["size"] for p in preds], np.int64).reshape(-1, 2),
            "counts": np.array([p["segmentation"]["counts"] for p in preds], dtype=str)}


def arrays_to_detections(a: dict[str, np.ndarray]) -> list[dict]:
    return [{"image_id": int(i), "category_id": int(c), "score": float(s),
             "segmentation": {"size": [int(x) for x in sz], "counts": str(cnt)}}
            for i, c, s, sz, cnt in zip(a["image_id"], a["category_id"], a["score"], a["size"], a["counts"],
                                        strict=True)]


class Reduction(Task):
    name = "reduction"
    version = 2  # 2: the one cell loop (fingerprints, stored detections)
    rows_file = "reduction_rows.csv"
    quality = ("mask_AP", "mask_AP50", "mask_AP75", "box_AP", "box_AP50", "box_AP75")

    def setup(self, run: Run) -> None:
        suite = run.suite
        cfg = ReductionConfig.of(suite)
        ds = suite.dataset
        build = DATASETS.get(ds["name"])
        params = dict(ds.get("params", {}))
        opts = {"progress": run.progress, "data_root_dir": run.data_root, "limit": run.limit}
        train_split = build(run.cache_dir, ds.get("train_split", "train"), **opts, **params)
        test_split = build(run.cache_dir, ds.get("split", "test"), **opts, **params)
        size = tuple(ds.get("frame_size", [64, 64]))
        failures: dict[str, str] = {}  # a training video that cannot be read: a failure of every cell
        embed, embed_sha = ((EMBEDDINGS[cfg.embedding], "") if cfg.embedding in EMBEDDINGS
                            else encoder_embedding(cfg.embedding))
        train = load_videos(train_split, load_instances(train_split, cfg.train_videos, size, run.cache_dir),
                            cfg.train_videos, size, failures, embed, run.progress)
        inst = load_instances(test_split, cfg.test_videos, size, run.cache_dir)
        test = load_videos(test_split, inst, cfg.test_videos, size, failures, None, run.progress)
        gt_dict = inst.subset([v.video_id for v in test])
        image_ids = [inst.image_ids[(v.video_id, t)] for v in test for t in range(len(v.frames))]
        run.state["reduction"] = {
            "cfg": cfg, "train": train, "test": (torch.cat([v.frames for v in test]), image_ids),
            "gt_json": json.dumps(gt_dict, sort_keys=True), "num_classes": len(inst.categories),
            "failures": failures}
        run.prov.update(task="reduction", dataset=ds["name"], split=test_split.split,
                        manifest_hash=test_split.manifest_hash, train_manifest_hash=train_split.manifest_hash,
                        reduction=asdict(cfg), categories=inst.categories,
                        train_frames=int(sum(len(v.frames) for v in train)), test_frames=len(image_ids),
                        test_instances=len(gt_dict["annotations"]), video_failures=failures)
        run.data_identity.update(test=test_split.manifest_hash, train=train_split.manifest_hash,
                                 frame_size=list(size))
        if embed_sha:  # what the samplers observe: the encoder's weights (thumbnails: nothing to add)
            run.data_identity["embedding_weights"] = embed_sha
            run.prov["embedding_weights_sha256"] = embed_sha

    def config(self, run: Run) -> dict:
        return asdict(run.state["reduction"]["cfg"])

    def cells(self, run: Run) -> Iterator[Cell]:
        """(method, k, seed): per seed an untrained reference (k = 0), the full set (k = 1, no
        method), then every method at every other ratio."""
        cfg = run.state["reduction"]["cfg"]
        for s in run.suite.seeds:
            for k in (0, 1):
                label = "untrained (chance)" if k == 0 else "full set (S1)"
                yield Cell(cell_key(None, k, s), None, f"S{k}", s, spec=k, label=label, columns=(("k", k),))
            for spec in run.suite.methods:
                for k in cfg.ratios:
                    if k > 1:
                        yield Cell(cell_key(spec, k, s), spec, f"S{k}", s, spec=k, label=spec.display,
                                   columns=(("k", k),))

    def evaluate(self, run: Run, cell: Cell, sampler: Sampler | None) -> CellOutput:
        """Select, train on the selection, evaluate on every test frame. Videos that could not be
        decoded are recorded in every cell (they are missing from every cell)."""
        st = run.state["reduction"]
        cfg, train, k = st["cfg"], st["train"], cell.spec
        fails: list = [{"video": v, "error": e} for v, e in st["failures"].items()]
        if sampler is None:  # the full set (k = 1) or the untrained reference (k = 0)
            chosen = [(v, np.arange(len(v.frames)), 0.0) for v in train]
        else:
            chosen = select_frames(sampler, cell.method.key, train, k, cell.seed, fails)
        if not chosen:
            raise RuntimeError(f"{cell.key}: no training video could be selected from ({len(fails)} failures)")
        frames = torch.cat([v.frames[torch.from_numpy(idx)] for v, idx, _ in chosen])
        maps = torch.cat([v.maps[torch.from_numpy(idx)] for v, idx, _ in chosen])
        seg = cfg.seg if k > 0 else SegConfig(**{**asdict(cfg.seg), "iterations": 0})
        model, record = train_segmenter(frames, maps, st["num_classes"], seg, init_seed=cell.seed, order_seed=cell.key,
                                        device=run.device)
        preds = predict_instances(model, *st["test"], min_area=seg.min_area)
        videos = [{"video": v.video_id, "indices": idx.tolist(), "hash": Selection(idx).digest(),
                   "flops_sampler": flops} for v, idx, flops in chosen]
        arrays = {**detections_to_arrays(preds), "gt_json": np.array(st["gt_json"]),
                  "train_s": np.array(record["train_s"]), "sampler": np.array(sampler is not None)}
        return CellOutput(videos, arrays, fails, info={"train": record})

    @staticmethod
    def score(videos: list[dict], predictions: dict[str, np.ndarray]) -> dict[str, float]:
        gt = coco_gt(json.loads(str(predictions["gt_json"])))
        preds = arrays_to_detections(predictions)
        values = mask_and_box_ap(gt, preds)
        counts = [len(v["indices"]) for v in videos]
        gflops = float(np.mean([v["flops_sampler"] for v in videos])) / 1e9 if bool(predictions["sampler"]) else 0.0
        values.update(frames=float(sum(counts)), frames_per_video=float(np.mean(counts)),
                      gflops_sampler=gflops, train_s=float(predictions["train_s"]),
                      predicted_instances=float(len(preds)))
        return values

    def row_extras(self, cell: Cell, record: dict) -> dict:
        return {"method_name": record["method_name"]}
