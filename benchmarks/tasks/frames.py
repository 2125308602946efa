"""What the tasks that read a test split's candidate frames share (classification, retrieval):
the splits, the frozen frame classifier and its cost model, each test video's candidates decoded
and encoded once, the views samplers see, and the token ViTs that read token samplers.

The test split's candidates are decoded and encoded once per video and shared by every cell: the
encoder works frame by frame, so a head applied to a selection's cached features gives exactly
the model's output on that selection.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from samplerbench.cost.flops import FlopCount, PipelineCost, ThroughputConfig, count_flops
from samplerbench.data.annotations import VideoRecord, VideoSplit
from samplerbench.data.candidates import candidates_of, decode_pools
from samplerbench.data.media import read_record
from samplerbench.features.extract import Extraction, SplitStores, default_workers
from samplerbench.features.train_env import TrainEnv, chance_of
from samplerbench.metrics import classification as metrics
from samplerbench.models.classifier import TrainConfig, train_classifier
from samplerbench.models.encoders import FrameClassifier, ModelConfig
from samplerbench.models.protocols import probe_classifier, zero_shot_classifier
from samplerbench.models.tokens import (
    FrameTokens,
    PatchFeatureMemo,
    PatchTables,
    TokenClassifier,
    TokenModelConfig,
    train_token_classifier,
)
from samplerbench.registry import DATASETS, METHODS
from samplerbench.sampling import Budget, Sampler, Selection, VideoView
from samplerbench.seeding import generator, replicate_seed
from samplerbench.suite import Suite
from samplerbench.tasks.core import record_trained

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    return Path(os.environ.get("SAMPLERBENCH_CACHE", Path.home() / ".cache" / "samplerbench"))


@dataclass
class VideoCache:
    """Per test video as the cells read it: candidates, features and single-frame logits (from
    the feature store), and its decoded pixels, read only when a method looks at them."""

    source: torch.Tensor | Callable[[], torch.Tensor]
    feats: torch.Tensor | None
    logits: np.ndarray | None
    candidates: np.ndarray

    @cached_property
    def pixels(self) -> torch.Tensor:
        return self.source() if callable(self.source) else self.source


def observes_pixels(suite: Suite) -> bool:
    """Whether a method of the suite looks at decoded candidates (its sampler observes pixels,
    or a token ViT reads its patches): the run then keeps a pixel store beside the features,
    unless ``[eval] pixel_store = false`` (a real dataset at 224x224 is about 4.8 MB a video on
    disk): pixels are then decoded again whenever a cell asks for them, and never kept."""
    if not suite.eval.get("pixel_store", True):
        return False
    specs = [*suite.methods, *(r.method for r in suite.retrieval_methods)]
    for spec in specs:
        sampler = METHODS.get(spec.name)(**spec.params)
        if "pixels" in sampler.observes or sampler.reader == "tokens":
            return True
    return False


def throughput_config(suite: Suite) -> ThroughputConfig:
    """``[eval] timing = {batch, precision, channels_last, compile}`` (``timing_batch``: older name)."""
    opts = dict(suite.eval.get("timing", {}))
    if "timing_batch" in suite.eval:
        opts.setdefault("batch", int(suite.eval["timing_batch"]))
    return ThroughputConfig(**opts)


def reader(suite: Suite, train: VideoSplit, val: VideoSplit, frame_size, candidates: int, cache_dir: Path,
           progress: bool, device: torch.device | str = "cpu", decoded: dict | None = None, replicate: int = 0):
    """The classifier every selection is read by, by the suite's ``[model] protocol``: trained
    by the harness, a pretrained encoder with a probe head, or CLIP zero-shot; on ``device``
    (where it trains, if it does). What trains, trains once per ``replicate`` (its seed from
    ``[train] seed`` and the replicate: :func:`samplerbench.seeding.replicate_seed`).
    ``decoded``: the training frames the harness's classifier decodes, per split (given filled,
    they are not decoded again: :func:`train_classifier`)."""
    cfg = ModelConfig(**suite.model)
    tcfg = TrainConfig(**suite.train)
    tcfg = replace(tcfg, seed=replicate_seed(tcfg.seed, replicate))
    if cfg.protocol == "frozen-probe":
        return probe_classifier(train, val, cfg, tcfg.batch_videos, tcfg.seed, frame_size, candidates, cache_dir,
                                progress, device)
    if cfg.protocol in ("zero-shot", "retrieval-clip"):  # retrieval-clip: classification is CLIP zero-shot
        model, record = zero_shot_classifier(train.classes, cfg)
        return model.to(device), record
    return train_classifier(train, val, cfg, tcfg, frame_size, cache_dir, progress, device, decoded)


def trains_on_splits(suite: Suite) -> bool:
    """Whether a method of the suite trains on the training splits' candidates (a learned
    sampler, or a token sampler, whose ViT the runner trains) and so reads their stores."""
    specs = [*suite.methods, *(r.method for r in suite.retrieval_methods)]
    return any(METHODS.get(spec.name).learns or METHODS.get(spec.name).reader == "tokens" for spec in specs)


def frame_size_of(suite: Suite) -> tuple[int, int]:
    """The suite's ``frame_size``, else a pretrained encoder's own input size (timm's
    ``resolve_data_config`` idea), else 64x64."""
    if "frame_size" in suite.dataset:
        return tuple(suite.dataset["frame_size"])
    cfg = ModelConfig(**suite.model)
    if cfg.pretrained:
        from samplerbench.models.pretrained import build_pretrained

        return tuple(build_pretrained(cfg.encoder, load=False).preprocess.size)
    return (64, 64)


def load_splits(suite: Suite, cache_dir: Path, progress: bool, which=("split", "train_split", "val_split"),
                data_root: Path | None = None, limit: int = 0) -> list[VideoSplit]:
    """The suite's dataset splits (test, train, val by default), built or loaded from the cache.
    Training splits keep only the videos that can be read (the test split keeps them all: each
    is a recorded failure); ``limit``: the first videos of each split (a smoke run)."""
    ds = suite.dataset
    build = DATASETS.get(ds["name"])
    params = dict(ds.get("params", {}))
    default = {"split": "test", "train_split": "train", "val_split": "val"}
    out = []
    for k in which:
        split = build(cache_dir, ds.get(k, default[k]), progress=progress, data_root_dir=data_root, limit=limit,
                      **params)
        out.append(split if k == "split" else split.readable_only())
    return out


@dataclass
class FrameContext:
    """The test split, the frozen classifier and its cost model, and the shared caches."""

    suite: Suite
    split: VideoSplit
    train: VideoSplit
    val: VideoSplit
    model: FrameClassifier
    classifier_record: dict
    cost: PipelineCost
    device: torch.device
    frame_size: tuple[int, int]
    num_candidates: int
    cache_dir: Path
    env: TrainEnv
    prov: dict
    progress: bool = True
    #: the feature store (and pixel store) of every split this run reads
    stores: SplitStores | None = None
    #: this rank's part of the test split (all of it in one process)
    part: range | None = None
    #: the replicate (a suite's ``[eval] seeds`` entry) whose reader and learned pieces these are
    seed: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    token_models: dict[str, tuple[TokenClassifier, dict]] = field(default_factory=dict)
    token_costs: dict[tuple, FlopCount] = field(default_factory=dict)
    #: token methods' cells: each test video's patch features, computed once per method
    #: (``eval.patch_cache_mib``, default 1024: what the current method may keep)
    patch_memo: PatchFeatureMemo = field(default_factory=PatchFeatureMemo)
    #: the training splits' patch tables, for the run's next token ViT (same cap; let go after the last)
    patch_tables: PatchTables = field(default_factory=PatchTables)
    #: every cell's test videos: features, the fc's frame logits and candidates read once per run
    #: (``eval.video_cache_mib``, default 256; past it a video is read from the store at each cell)
    video_memo: VideoMemo = field(default_factory=lambda: VideoMemo())

    @property
    def resize(self) -> int | None:
        return self.model.resize_for(self.frame_size)

    @classmethod
    def of(cls, run, seed: int | None = None) -> FrameContext:
        """The context of one replicate (a suite's ``[eval] seeds`` entry; default: the first),
        built once per run (``run.state[("frames", seed)]``). The first replicate's context
        loads the splits and trains (or loads) the reader; each other one trains its own reader
        where the reader trains (:meth:`replicate`) and shares everything else."""
        first = run.suite.seeds[0]
        seed = first if seed is None else seed
        key = ("frames", seed)
        if key not in run.state:
            run.state[key] = cls._first(run, seed) if seed == first else cls.of(run, first).replicate(run, seed)
            if seed == first:
                run.state["frames"] = run.state[key]
                run.env_of = lambda s: cls.of(run, s).env
        return run.state[key]

    @classmethod
    def _first(cls, run, seed: int) -> FrameContext:
        """The splits, the first replicate's reader and its training environment; records the
        data identity and provenance."""
        suite = run.suite
        split, train, val = load_splits(suite, run.cache_dir, run.progress, data_root=run.data_root, limit=run.limit)
        frame_size = frame_size_of(suite)
        candidates = int(suite.eval.get("candidates", 32))
        decoded: dict[str, list[torch.Tensor]] = {}  # every frame of train and val, when the reader trains here
        model, record = reader(suite, train, val, frame_size, candidates, run.cache_dir, run.progress, run.device,
                               decoded, replicate=seed)
        if "val" in record:  # trained here (not zero-shot): whether it learned is read against chance
            record = {**record, **chance_of(val)}
        unreadable = {**train.meta.get("unreadable", {}), **val.meta.get("unreadable", {})}
        if unreadable:  # left out of training, named in the provenance
            run.prov["training_videos_unreadable"] = unreadable
        run.prov.update(candidates=candidates, timing=asdict(throughput_config(suite)), dataset=suite.dataset["name"],
                        split=split.split, manifest_hash=split.manifest_hash, train_manifest_hash=train.manifest_hash)
        record_trained(run.prov, "classifiers", "reader", seed, record, suite.seeds)
        run.prov["classifier"] = record
        # the reader's key is each cell's (its replicate's: Classification.reader_keys), not the run's
        run.data_identity.update(test=split.manifest_hash, train=train.manifest_hash, val=val.manifest_hash,
                                 candidates=candidates, frame_size=list(frame_size))
        dtypes = {"fp32": torch.float32, "fp16": torch.float16}
        feature_dtype = suite.eval.get("feature_dtype", "fp32")
        if feature_dtype not in dtypes:
            raise ValueError(f"{suite.source}: eval.feature_dtype must be fp32 or fp16, not {feature_dtype!r}")
        if feature_dtype != "fp32":  # (fp32 adds nothing: earlier fingerprints stay)
            run.data_identity["feature_dtype"] = feature_dtype
        # learned pieces key on the classifier's content key: a cache version bump keeps their weights
        env = TrainEnv(train, val, model, record["content_key"], candidates, frame_size, tuple(suite.budgets), run.cache_dir,
                       run.device, run.progress, retrieval_cfg=dict(suite.retrieval.get("model", {})),
                       captions_per_video=int(suite.retrieval.get("captions_per_video", 5)),
                       resize=model.resize_for(frame_size), replicate=seed)
        ex = Extraction(candidates, frame_size, model.resize_for(frame_size), model.features, dtypes[feature_dtype],
                        run.device, int(suite.eval.get("decode_workers", default_workers(run.device))),
                        int(suite.eval.get("encode_batch_frames", 0)))
        stores = SplitStores(run.cache_dir, ex, model.encoder_identity(record["content_key"], run.device),
                             observes_pixels(suite), run.ranks.rank, run.ranks.world, run.progress, run.ranks.barrier,
                             int(suite.eval.get("store_shard_videos", 64)))
        env.stores = stores
        if decoded and ex.resize is None and trains_on_splits(suite):
            # the training splits' stores filled now, from the frames the reader just decoded at
            # this size (the same pixels as decoding the candidates, tested): the learned
            # methods read them later, and decoding train and val again took 25 s of a cold run
            for s in (train, val):
                stores.ensure(s, frames=decoded[s.manifest_hash])
        run.state["decoded"] = decoded  # the other replicates' readers train on the same frames
        patch_cap = int(suite.eval.get("patch_cache_mib", PatchFeatureMemo.cap_bytes >> 20)) << 20
        ctx = cls(suite, split, train, val, model, record, PipelineCost(model, (3, *frame_size)), run.device,
                  frame_size, candidates, run.cache_dir, env, run.prov, run.progress, stores,
                  run.ranks.part(len(split.records)), seed=seed,
                  patch_memo=PatchFeatureMemo(patch_cap), patch_tables=PatchTables(patch_cap),
                  video_memo=VideoMemo(int(suite.eval.get("video_cache_mib", VideoMemo.cap_bytes >> 20)) << 20))
        return ctx

    @classmethod
    def every(cls, run, seeds: list[int] | None = None) -> list[FrameContext]:
        """Every replicate's context (``seeds``, default the suite's), built now (a task's setup:
        what trains, trains before any cell); the frames decoded for the readers are let go after."""
        out = [cls.of(run, s) for s in (run.suite.seeds if seeds is None else seeds)]
        run.state.pop("decoded", None)
        return out

    def replicate(self, run, seed: int) -> FrameContext:
        """Replicate ``seed``'s context: its own reader where the reader trains (and so its own
        feature store and training environment), the same splits, pixels and cost model."""
        model, record = reader(self.suite, self.train, self.val, self.frame_size, self.num_candidates,
                               self.cache_dir, self.progress, self.device, run.state.get("decoded"), replicate=seed)
        if "val" in record:
            record = {**record, **chance_of(self.val)}
        record_trained(run.prov, "classifiers", "reader", seed, record, self.suite.seeds)
        same = record["content_key"] == self.classifier_record["content_key"]
        stores = self.stores
        if not same:
            ex = replace(self.stores.ex, encode=model.features)
            stores = replace(self.stores, ex=ex, encoder=model.encoder_identity(record["content_key"], self.device))
        env = self.env.for_replicate(seed, model, record["content_key"], stores)
        decoded = run.state.get("decoded")
        if not same and decoded and stores.ex.resize is None and trains_on_splits(self.suite):
            for s in (self.train, self.val):  # as the first replicate's: encoded from the frames in memory
                stores.ensure(s, frames=decoded[s.manifest_hash])
        return replace(self, model=model, classifier_record=record, env=env, stores=stores, seed=seed,
                       token_models={}, token_costs={}, failures=dict(self.failures),
                       patch_memo=PatchFeatureMemo(self.patch_memo.cap_bytes),
                       patch_tables=PatchTables(self.patch_tables.cap_bytes),
                       video_memo=self.video_memo if same else VideoMemo(self.video_memo.cap_bytes))

    def extract(self) -> None:
        """Fill the test split's stores (each rank its shards, then all wait) and read which of its
        videos cannot be decoded: every cell after reads the stores and decodes nothing. When a
        method trains on the training splits, their stores are checked and completed here too, so
        a damaged shard is recomputed in this run and outside any training."""
        t0 = time.perf_counter()
        if trains_on_splits(self.suite):
            for s in (self.train, self.val):
                self.stores.ensure(s, sharded=True)
        n = self.stores.ensure(self.split, sharded=True)
        self.failures = self.stores.stores(self.split)[0].failures()
        if n:
            for err in self.failures.values():
                log.warning("%s", err)
            phase = self.prov.setdefault("extraction", {})
            phase[self.split.split] = {"videos": n, "seconds": round(time.perf_counter() - t0, 2),
                                       "workers": self.stores.ex.workers}

    def candidate_pools(self, split: VideoSplit, candidates: int, size) -> torch.Tensor:
        """A split's candidate pools, decoded once for every learned piece of this run."""
        if candidates == self.env.num_candidates and tuple(size) == tuple(self.env.frame_size):
            return self.env.pools(split)
        return decode_pools(split, candidates, size, self.model.resize_for(size))

    def token_model(self, spec_key: str, sampler: Sampler) -> TokenClassifier:
        """The token ViT trained on this method's selections (trained once, cached on disk)."""
        if spec_key not in self.token_models:
            cfg = TokenModelConfig(**{**self.suite.token_model, "patch": sampler.patch})
            cfg = replace(cfg, seed=self.env.seed_for(cfg.seed))  # this replicate's ViT
            with torch.inference_mode(False), torch.enable_grad():  # may be first asked inside a timed cell
                model, record = train_token_classifier(sampler, self.train, self.val, cfg, self.num_candidates,
                                                       self.suite.budgets, self.frame_size, self.cache_dir,
                                                       self.model.encoder, self.classifier_record["content_key"],
                                                       self.progress, decode=self.candidate_pools, device=self.device,
                                                       tables=self.patch_tables)
            record = {**record, **chance_of(self.val)}
            self.token_models[spec_key] = (model, record)
            record_trained(self.prov, "token_models", spec_key, self.seed, record, self.suite.seeds)
            untrained = {m.key for m in self.suite.methods if METHODS.get(m.name)(**m.params).reader == "tokens"}
            if not untrained - set(self.token_models):  # the last token ViT of the run: its tables are done with
                self.patch_tables.table.clear()
        return self.token_models[spec_key][0]

    def token_flops(self, spec_key: str, model: TokenClassifier, k: int, touched: int) -> FlopCount:
        """fvcore FLOPs of the token ViT on k tokens and of their embedding: per patch, or (the
        encoder's map) the frozen encoder on each of the ``touched`` frames (counted once per k,
        and once per frame)."""
        if model.per_frame_embedding:
            if (spec_key, k) not in self.token_costs:
                self.token_costs[(spec_key, k)] = count_flops(model.vit, torch.zeros(1, k, model.encoder.dim),
                                                              torch.zeros(1, k, dtype=torch.long))
            if (spec_key, "frame") not in self.token_costs:
                frame = torch.zeros(1, 3, *self.frame_size, dtype=torch.uint8)
                self.token_costs[(spec_key, "frame")] = count_flops(FrameTokens(model), frame, expect_uncalled=True)
            vit, frame = self.token_costs[(spec_key, k)], self.token_costs[(spec_key, "frame")]
            return FlopCount(vit.flops + touched * frame.flops, {**frame.unsupported, **vit.unsupported})
        if (spec_key, k) not in self.token_costs:
            dim = model.in_features
            self.token_costs[(spec_key, k)] = count_flops(model, torch.zeros(1, k, dim, dtype=torch.uint8),
                                                          torch.zeros(1, k, dtype=torch.long))
        return self.token_costs[(spec_key, k)]

    def video(self, position: int) -> VideoCache | None:
        """The test video at ``position`` from the stores (None: it could not be decoded): its
        features, the classifier's fc on them, and its pixels on demand."""
        rec = self.split.records[position]
        if rec.video_id in self.failures:
            return None
        feats_store, pixel_store = self.stores.stores(self.split)
        known = self.video_memo.get(position)
        if known is None:
            feats = torch.from_numpy(feats_store.get(position, ("features",))["features"])
            with torch.inference_mode():
                logits = self.model.head.frame_logits(feats.float().to(self.device)).float().cpu().numpy()
            known = self.video_memo.put(position, (feats, logits, candidates_of(rec, self.num_candidates)))
        feats, logits, cands = known
        if pixel_store is not None:
            source = lambda: torch.from_numpy(pixel_store.get(position, ("pixels",))["pixels"])  # noqa: E731
        else:  # no method of the suite observes pixels; decoded here if one asks all the same
            source = lambda: read_record(rec, cands, size=self.frame_size, resize=self.resize)  # noqa: E731
        return VideoCache(source, feats, logits, cands)

    def view(self, rec: VideoRecord, vc: VideoCache, sampler: Sampler) -> VideoView:
        """What ``sampler`` may observe of a test video, each observation charged at its cost:
        ``features``, the encoder on every candidate; ``frame_probs``, the encoder and the
        classifier's fc on every candidate."""
        t = len(vc.candidates)
        providers = {
            "pixels": lambda: vc.pixels,
            "features": lambda: vc.feats.float().numpy(),
            "frame_probs": lambda: frame_probabilities(vc.logits, self.split.multilabel),
        }
        if sampler.upper_bound:  # the labels exist in the view of an upper bound only
            providers["label"] = lambda: metrics.one_hot([rec.labels], self.split.num_classes)[0]
        flops = {"frame_probs": t * self.cost.per_frame_classifier_flops(),
                 "features": t * self.cost.encoder_head(1)[0].flops}
        return VideoView(rec.video_id, rec.num_frames, vc.candidates, allowed=sampler.observes,
                         providers=providers, provider_flops=flops, frame_size=self.frame_size,
                         reader=self.classifier_record["key"])

    def facts(self, rec: VideoRecord) -> dict:
        """What the file said of a video, kept in its per-video record: frames, frame rate, and
        whether it is shorter than the pool (its candidates then repeat frames)."""
        return {"num_frames": rec.num_frames, "fps": round(rec.fps, 4),
                "repeats_frames": rec.num_frames < self.num_candidates}

    def encoder_flops(self, view: VideoView, n: int) -> FlopCount:
        """The frame encoder on the n selected frames, unless the sampler already had it run on
        every candidate (it observed ``features`` or ``frame_probs``, and paid for that): a real
        pipeline keeps those features and encodes no frame twice."""
        if view.observed & {"features", "frame_probs"}:
            return FlopCount(0.0)
        return self.cost.encoder_head(n)[0]

    def selections(self, key: str, sampler: Sampler, budget: Budget, seed: int, fails: list):
        """Yield (record, cache, view, selection) for each video of the split; a video that
        cannot be decoded, or on which the method fails, is appended to ``fails`` (one line)."""
        part = self.part if self.part is not None else range(len(self.split.records))
        bar = tqdm(part, desc=key, unit="video", leave=False, disable=not self.progress, mininterval=1.0)
        for position in bar:
            rec = self.split.records[position]
            vc = self.video(position)
            if vc is None:
                fails.append({"video": rec.video_id, "error": self.failures[rec.video_id]})
                continue
            view = self.view(rec, vc, sampler)
            try:
                sel = sampler.select(view, budget, generator(seed, rec.video_id, key))
                _check(sel, view, budget, sampler)
            except Exception as e:  # a method failing on one video is that video's failure
                fails.append({"video": rec.video_id, "error": f"{rec.path}: {key}: {type(e).__name__}: {e}"})
                continue
            yield rec, vc, view, sel


@dataclass
class VideoMemo:
    """What :meth:`FrameContext.video` read of each test video, kept while it fits ``cap_bytes``
    (the first videos of the split, never evicted: the cells sweep the split in order, where
    an LRU smaller than the split would never hit). Each cell read every video's features from
    the store and applied the fc again: 270 cells x 300 videos in the default suite."""

    cap_bytes: int = 256 << 20  # [eval] video_cache_mib
    table: dict = field(default_factory=dict)
    used: int = 0

    def get(self, position: int) -> tuple | None:
        return self.table.get(position)

    def put(self, position: int, entry: tuple) -> tuple:
        size = sum(x.nbytes for x in entry)
        if self.used + size <= self.cap_bytes:
            self.table[position], self.used = entry, self.used + size
        return entry


def frame_probabilities(logits: np.ndarray, multilabel: bool) -> np.ndarray:
    """The classifier's per-frame class probabilities as the reader computes them: softmax on
    single-label data, a sigmoid per class on multi-label data (what ``frame_probs`` observes)."""
    if multilabel:
        return (1.0 / (1.0 + np.exp(-logits))).astype(logits.dtype, copy=False)
    return _softmax(logits)


def _softmax(x: np.ndarray) -> np.ndarray:
    """In the logits' own precision (float32): what samplers observe as ``frame_probs``. Not
    ``metrics.softmax`` (float64, for scoring): a different precision could reorder near-ties in
    the oracle's selections and change stored results."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _check(sel: Selection, view: VideoView, budget: Budget, sampler: Sampler) -> None:
    if sel.indices.size == 0:
        raise ValueError("empty selection")
    if sel.indices[0] < 0 or sel.indices[-1] >= view.num_candidates:
        raise ValueError(f"selection outside the candidate pool 0..{view.num_candidates - 1}")
    if sampler.reader == "tokens":
        if sel.tokens is None or sel.tokens.size == 0:
            raise ValueError("a token sampler returned no tokens")
        return
    if not sampler.ignores_budget and budget.kind != "adaptive" and sel.indices.size > budget.frames(view.num_candidates):
        raise ValueError(f"selected {sel.indices.size} frames for a budget of {budget.frames(view.num_candidates)}")
