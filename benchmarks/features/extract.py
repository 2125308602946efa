"""Filling a split's stores: candidates decoded in DataLoader worker processes; each shard is
written as soon as its videos are in (so a killed extraction resumes at the next shard).

Where the encoding happens depends on the device. On CUDA the workers decode and the main
process encodes the candidates of several videos in one call (the GPU wants big batches, the
workers keep it fed). On CPU each worker decodes *and* encodes its video (one thread each), one
worker per core: the CPU is the encoder, and the two stages share every core instead of one
waiting for the other (16 videos, 2 cores: 51 ms a video with one decode worker beside the
encoding main process, where decoding took 25 ms and encoding 35; see ``nox -s throughput``).

The encoder's output per frame depends neither on which frames share its batch nor on its
thread count, for the harness's CNN and a timm ViT on CPU (tested bitwise), so batching videos
or encoding in a worker changes no stored number.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from samplerbench.data.annotations import AnnotationError, VideoRecord, VideoSplit
from samplerbench.data.candidates import candidates_of
from samplerbench.data.media import read_record
from samplerbench.data.parallel import decode_workers, in_order
from samplerbench.data.video import VideoDecodeError
from samplerbench.features.store import ShardedStore
from samplerbench.kernels.threads import encode_threads, threads

log = logging.getLogger(__name__)

#: uint8 frames (M, 3, H, W) -> features (M, D), on the encoder's device
Encode = Callable[[torch.Tensor], torch.Tensor]


def default_workers(device: torch.device | str = "cpu") -> int:
    """Extraction workers, at most 8: on CPU one per core (each decodes and encodes its video); on
    CUDA every core but the one that feeds the GPU (at least one)."""
    if torch.device(device).type == "cpu":
        return decode_workers()
    return max(1, min(8, (os.cpu_count() or 2) - 1))


@dataclass(frozen=True)
class Extraction:
    """How a split's candidates are read: T per video, at ``size`` after ``resize``; encoded by
    ``encode`` in batches of about ``batch_frames`` frames (0: one video per call on CPU, where
    a larger batch of the harness's CNN ran slower (47 vs 59 ms a video at 256 frames: its
    activations leave the cache); 1024 frames on CUDA), kept as ``dtype``."""

    candidates: int
    size: tuple[int, int]
    resize: int | None
    encode: Encode | None = None
    dtype: torch.dtype = torch.float32
    device: torch.device = torch.device("cpu")
    workers: int = 0
    batch_frames: int = 0


class CandidateFrames(Dataset):
    """Item k: (position, uint8 (T, 3, H, W) or None, features (T, D) or None, error line) of the
    k-th listed video; the features when the item is made in a worker on CPU (``encode``).
    ``frames``: every frame of each record (by position) already decoded at the extraction's
    size: the candidates are taken from them instead of decoded."""

    def __init__(self, records: list[VideoRecord], positions: list[int], ex: Extraction, encode: bool = False,
                 keep_pixels: bool = True, frames: list[torch.Tensor] | None = None):
        self.records, self.positions, self.ex, self.encode, self.frames = records, positions, ex, encode, frames
        self.keep_pixels = keep_pixels or not encode  # encoded here, the pixels travel only when stored

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, k: int):
        p = self.positions[k]
        rec = self.records[p]
        try:
            if self.frames is not None:
                px = self.frames[p][torch.from_numpy(candidates_of(rec, self.ex.candidates))]
            else:  # in a worker process, one FFmpeg thread: the parallelism is across videos (thread policy)
                px = read_record(rec, candidates_of(rec, self.ex.candidates), size=self.ex.size,
                                 resize=self.ex.resize, threads=1 if self.ex.workers > 0 else 0)
        except (VideoDecodeError, AnnotationError) as e:
            return p, None, None, str(e).splitlines()[0]
        if not self.encode:
            return p, px, None, ""
        feats = encode_videos(self.ex.encode, [px], self.ex.device, len(px))[0]
        return p, px if self.keep_pixels else None, feats, ""


def in_workers(ex: Extraction, videos: int) -> bool:
    """Whether the workers encode too (CPU; see the module's docstring)."""
    return ex.workers > 0 and videos >= 2 and ex.encode is not None and ex.device.type == "cpu"


def decoded(records: list[VideoRecord], positions: list[int], ex: Extraction, encode: bool = False,
            keep_pixels: bool = True):
    """(position, pixels or None, features or None, error) in ``positions`` order, made
    ``ex.workers`` at a time; the features only with ``encode`` (:func:`in_workers`), the
    pixels then only with ``keep_pixels``."""
    data = CandidateFrames(records, positions, ex, encode, keep_pixels)
    yield from in_order(data, ex.workers, pin_memory=ex.device.type == "cuda")


@torch.inference_mode()
def encode_videos(encode: Encode, pixels: list[torch.Tensor], device: torch.device, batch_frames: int) -> list[torch.Tensor]:
    """Features of each video's frames, several videos per encoder call (about ``batch_frames``)."""
    out: list[torch.Tensor] = []
    group: list[torch.Tensor] = []

    def flush():
        if group:
            feats = encode(torch.cat(group).to(device, non_blocking=True)).float().cpu()
            out.extend(feats.split([len(g) for g in group]))
            group.clear()

    for px in pixels:
        if group and sum(len(g) for g in group) + len(px) > batch_frames:
            flush()
        group.append(px)
    flush()
    return out


def fill(split: VideoSplit, ex: Extraction, features: ShardedStore | None = None, pixels: ShardedStore | None = None,
         rank: int = 0, world: int = 1, progress: bool = True, frames: list[torch.Tensor] | None = None) -> int:
    """Compute this rank's missing shards of a split's feature store and/or pixel store, a video
    at a time (a shard's pixels stream to disk; only its features wait for the shard's end).
    A shard whose pixels are stored and whose features are missing (another encoder, a retrained
    reader) is encoded from the stored pixels: nothing is decoded for it. Returns the number of
    videos decoded (0 when every shard was already on disk or encoded from stored pixels).
    ``frames``: every frame of every video of the split, decoded at ``ex.size`` (the candidates
    are taken from them: nothing is decoded, and 0 is returned)."""
    stores = [s for s in (features, pixels) if s is not None]
    for s in stores:  # a damaged shard is set aside here and recomputed below, in this run
        s.heal(rank, world)
    shards = sorted({i for s in stores for i in s.missing(rank, world)})
    if features is not None and pixels is not None:
        stored = [i for i in shards if pixels.done(i) is not None]  # checked by heal: workers read them
        data = StoredCandidates(split, [p for i in stored for p in pixels.shard_of(i)], pixels, ex)
        _fill_shards(split, ex, data, features, None, f"encode {split.name}/{split.split} (stored pixels)", progress)
        shards = [i for i in shards if i not in stored]
    if not shards:
        return 0
    positions = [p for i in shards for p in stores[0].shard_of(i)]
    if features is not None and all(features.done(i) is not None for i in shards):
        features = None  # only pixels to store: the workers encode nothing
    source = "" if frames is None else " (decoded frames)"
    _fill_shards(split, ex, CandidateFrames(split.records, positions, ex, frames=frames), features, pixels,
                 f"extract {split.name}/{split.split}{source}", progress)
    return len(positions) if frames is None else 0


class StoredCandidates(Dataset):
    """Item k: as :class:`CandidateFrames`'s, the k-th listed video's candidates read from the
    pixel store instead of decoded (a video that failed to decode stays a failure, with its line)."""

    def __init__(self, split: VideoSplit, positions: list[int], pixels: ShardedStore, ex: Extraction,
                 encode: bool = False):
        self.split, self.positions, self.pixels, self.ex, self.encode = split, positions, pixels, ex, encode
        self.keep_pixels = not encode

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, k: int):
        p = self.positions[k]
        got = self.pixels.get(p, ("pixels",))
        if got is None:
            failures = self.pixels.done(p // self.pixels.shard_size)["failures"]
            return p, None, None, failures[self.split.records[p].video_id]
        px = torch.from_numpy(got["pixels"])
        if not self.encode:
            return p, px, None, ""
        return p, None, encode_videos(self.ex.encode, [px], self.ex.device, len(px))[0], ""


def _fill_shards(split: VideoSplit, ex: Extraction, data: CandidateFrames | StoredCandidates,
                 features: ShardedStore | None, pixels: ShardedStore | None, desc: str, progress: bool) -> None:
    """Write the shards of ``data``'s videos (whole shards, in order), made ``ex.workers`` at a
    time; on CPU the workers encode too when features are wanted (:func:`in_workers`)."""
    if not len(data):
        return
    ref = features if features is not None else pixels
    bar = tqdm(total=len(data), desc=desc, unit="video", disable=not progress, smoothing=0.1)
    shard: _Shard | None = None
    workers = min(ex.workers, len(data)) if len(data) >= 2 else 0
    # the workers encode when a feature shard is missing (not for a pixel store filled alone)
    data.encode = features is not None and in_workers(ex, len(data))
    data.keep_pixels = pixels is not None or not data.encode  # encoded there, the pixels travel only when stored
    with threads(encode_threads(torch.get_num_threads(), workers)):  # the workers hold their cores
        for p, px, feats, err in in_order(data, workers, pin_memory=ex.device.type == "cuda"):
            if shard is None:
                shard = _Shard(split, ex, p // ref.shard_size, features, pixels)
            shard.add(p, px, err, feats)
            if shard.full:
                shard.commit()
                shard = None
            bar.update()
    bar.close()


class _Shard:
    """One shard being filled: pixels streamed to their file, features encoded a few videos at
    a time and written when the shard's last video is in."""

    def __init__(self, split: VideoSplit, ex: Extraction, i: int, features: ShardedStore | None,
                 pixels: ShardedStore | None):
        self.split, self.ex, self.i = split, ex, i
        ref = features or pixels
        self.positions = list(ref.shard_of(i))
        self.seen = 0
        self.failures: dict[str, str] = {}
        self.features = features if features is not None and features.done(i) is None else None
        self.pixels = None
        if pixels is not None and pixels.done(i) is None:
            self.pixels = pixels.begin(i)
            self.pixel_rows = self.pixels.stream("pixels", (ex.candidates, 3, *ex.size), np.uint8)
        self.batch = ex.batch_frames or (1024 if ex.device.type == "cuda" else ex.candidates)
        self.group: list[tuple[int, torch.Tensor]] = []
        self.feats: dict[int, torch.Tensor] = {}

    @property
    def full(self) -> bool:
        return self.seen == len(self.positions)

    def add(self, p: int, px: torch.Tensor | None, err: str, feats: torch.Tensor | None = None) -> None:
        """Video ``p``'s pixels (None when a worker encoded it and no pixel store wants them), its
        features when a worker encoded it; ``err``: why it failed (nothing else comes then)."""
        if p != self.positions[self.seen]:
            raise RuntimeError(f"extraction out of order: video {p}, expected {self.positions[self.seen]}")
        self.seen += 1
        if err:
            self.failures[self.split.records[p].video_id] = err
        if self.pixels is not None:
            self.pixel_rows.append(None if px is None else px.numpy())
        if self.features is not None and feats is not None:
            self.feats[p] = feats
        elif self.features is not None and px is not None:
            if self.group and sum(len(g) for _, g in self.group) + len(px) > self.batch:
                self._encode()
            self.group.append((p, px))

    def _encode(self) -> None:
        out = encode_videos(self.ex.encode, [g for _, g in self.group], self.ex.device, self.batch)
        self.feats.update({p: f for (p, _), f in zip(self.group, out, strict=True)})
        self.group.clear()

    def commit(self) -> None:
        if self.pixels is not None:
            self.pixels.commit(self.failures)
        if self.features is not None:
            if self.group:
                self._encode()
            dim = next(iter(self.feats.values())).shape[-1] if self.feats else 0
            np_dtype = torch.empty(0, dtype=self.ex.dtype).numpy().dtype
            w = self.features.begin(self.i)
            rows = w.stream("features", (self.ex.candidates, dim), np_dtype)
            for p in self.positions:
                rows.append(self.feats[p].to(self.ex.dtype).numpy() if p in self.feats else None)
            w.commit(self.failures)


@dataclass
class SplitStores:
    """A run's stores, one pair per split: features under the encoder's identity and, when a
    method of the suite observes pixels, the decoded candidates (so nothing is decoded twice and
    no split's pixels are held in memory). ``sync`` waits for every rank (a no-op alone)."""

    cache_dir: os.PathLike
    ex: Extraction
    encoder: dict
    want_pixels: bool
    rank: int = 0
    world: int = 1
    progress: bool = True
    sync: Callable[[], None] = lambda: None
    shard_size: int = 64

    def __post_init__(self) -> None:
        self._open: dict[str, tuple[ShardedStore, ShardedStore | None]] = {}

    def stores(self, split: VideoSplit) -> tuple[ShardedStore, ShardedStore | None]:
        if split.manifest_hash not in self._open:
            ids = [r.video_id for r in split.records]
            geometry = {"manifest": split.manifest_hash, "candidates": self.ex.candidates, "size": list(self.ex.size),
                        "resize": self.ex.resize}
            feats = ShardedStore.open(self.cache_dir, "features", {**geometry, "encoder": self.encoder,
                                                                   "dtype": str(self.ex.dtype),
                                                                   "device": self.ex.device.type}, ids, self.shard_size)
            px = ShardedStore.open(self.cache_dir, "pixels", geometry, ids, self.shard_size) if self.want_pixels else None
            self._open[split.manifest_hash] = (feats, px)
        return self._open[split.manifest_hash]

    def ensure(self, split: VideoSplit, sharded: bool = False, frames: list[torch.Tensor] | None = None) -> int:
        """Fill the split's missing shards: this rank's share, then wait for the others
        (``sharded``), or all of them here (a split only one rank reads first). Returns videos
        decoded. ``frames``: every frame of the split's videos, already decoded (:func:`fill`)."""
        feats, px = self.stores(split)
        # filling a store may happen inside a training (a shard healed on first read): whatever
        # it draws, the training's RNG continues as if the store had been there
        with torch.random.fork_rng(devices=[]):
            n = fill(split, self.ex, feats, px, *((self.rank, self.world) if sharded else (0, 1)),
                     progress=self.progress, frames=frames)
        if sharded:
            self.sync()
        return n

    def features(self, split: VideoSplit) -> np.ndarray:
        """float (videos, T, D) of the whole split (filled first if needed)."""
        self.ensure(split)
        return self.stores(split)[0].array("features")

    def pixels(self, split: VideoSplit) -> np.ndarray:
        """uint8 (videos, T, 3, H, W) of the whole split (filled first if needed)."""
        if not self.want_pixels:
            raise RuntimeError("this run keeps no pixel store (no method of the suite observes pixels)")
        self.ensure(split)
        return self.stores(split)[1].array("pixels")
