"""Train the harness's frame classifier in two stages.

1. Frame pretraining (the stand-in for the ImageNet-pretrained backbone every paper starts
   from): the encoder and fc learn to name single frames inside labelled events. Trained from
   scratch with video labels alone, the classifier stayed at chance on synth-events (the event
   is 2-3 of 16 frames and one small object; a 10-epoch budget never found it).
   Skipped when the split has no event annotations.
2. TSN fine-tuning: N segments, a random frame in each, the model's consensus,
   cross-entropy (binary cross-entropy for multi-label data).

Frames are decoded once into memory; the data order and segment offsets come from generators
keyed by (seed, epoch), so a retrain gives the same weights on CPU. The best epoch on the
validation split (uniform sampling; epoch 0 is the pretrained model) is kept; training stops
early after ``patience`` epochs without improvement.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm import tqdm

from samplerbench.data.annotations import VideoSplit
from samplerbench.data.media import read_record
from samplerbench.data.parallel import decode_workers, in_order
from samplerbench.devices import device_of
from samplerbench.metrics.classification import one_hot
from samplerbench.models.encoders import FrameClassifier, ModelConfig
from samplerbench.sampling import segment_centres
from samplerbench.seeding import derive_seed, torch_generator
from samplerbench.training.fit import FitConfig, cached_fit, fit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 6
    batch_videos: int = 16
    segments: int = 16
    lr: float = 5e-4
    warmup: float = 0.05
    weight_decay: float = 1e-4
    patience: int = 6
    seed: int = 0
    pretrain_steps: int = 400  # frame pretraining steps (0: none)
    pretrain_batch: int = 64  # frames per pretraining step
    pretrain_lr: float = 1e-3


class _EveryFrame(Dataset):
    """Item k: every frame of the k-th video, uint8 (n, 3, H, W)."""

    def __init__(self, records: list, size: tuple[int, int], threads: int):
        self.records, self.size, self.threads = records, size, threads

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, k: int) -> torch.Tensor:
        r = self.records[k]
        return read_record(r, np.arange(r.num_frames), size=self.size, threads=self.threads)


def decode_all(split: VideoSplit, size: tuple[int, int], progress: bool = True,
               workers: int | None = None) -> list[torch.Tensor]:
    """Every frame of every video of a split, uint8 (n, 3, H, W) each, decoded by ``workers``
    processes (default: one per core; the same frames as one process, tested)."""
    workers = decode_workers() if workers is None else workers
    data = _EveryFrame(split.records, size, threads=1 if workers > 0 else 0)
    it = tqdm(in_order(data, workers), total=len(data), desc=f"decoding {split.split}", unit="video",
              disable=not progress, mininterval=1.0)
    return [frames.clone() for frames in it]  # out of the workers' shared memory (one descriptor each)


def tsn_indices(num_frames: int, segments: int, rng: np.random.Generator | None) -> np.ndarray:
    """One frame per equal segment: a random one when training, the centre otherwise."""
    if rng is None:
        return segment_centres(num_frames, segments)
    edges = np.linspace(0, num_frames, segments + 1)
    return np.minimum((edges[:-1] + rng.random(segments) * np.diff(edges)).astype(np.int64), num_frames - 1)


def _targets(split: VideoSplit, ids: np.ndarray) -> torch.Tensor:
    if split.multilabel:
        return torch.from_numpy(one_hot([split.records[i].labels for i in ids], split.num_classes)).float()
    return torch.tensor([split.records[i].labels[0] for i in ids])


def _loss(logits: torch.Tensor, target: torch.Tensor, multilabel: bool) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, target) if multilabel else F.cross_entropy(logits, target)


@torch.inference_mode()
def evaluate(model: FrameClassifier, frames: list[torch.Tensor], split: VideoSplit, segments: int) -> float:
    """Top-1 accuracy (single-label) or exact top-1-in-labels rate (multi-label), uniform sampling."""
    model.eval()
    hits, dev = [], device_of(model)
    for i, v in enumerate(frames):
        logits = model(v[tsn_indices(len(v), segments, None)][None].to(dev))
        hits.append(int(logits.argmax(1).item()) in split.records[i].labels)
    return float(np.mean(hits))


def train_classifier(train: VideoSplit, val: VideoSplit, model_cfg: ModelConfig, cfg: TrainConfig,
                     size: tuple[int, int], cache_dir: Path, progress: bool = True,
                     device: torch.device | str = "cpu", decoded: dict | None = None) -> tuple[FrameClassifier, dict]:
    """Train (or load from the cache) the classifier on ``device``; returns it there, frozen in
    eval mode, and its record. Both stages go through the one training loop
    (:func:`samplerbench.training.fit.fit`); the decoded frames stay on the CPU, each batch moves.
    ``decoded``: when it trains, every frame it decoded is left there, per split's manifest hash
    (the caller can fill the splits' stores from them instead of decoding again); frames already
    there are used, not decoded again (the reader of another replicate)."""
    parts = [model_cfg.identity(), asdict(cfg), train.manifest_hash, val.manifest_hash, list(size), train.num_classes,
             2]  # 2: frame pretraining, epoch 0

    def run(model: FrameClassifier) -> dict:
        t0 = time.perf_counter()
        known = decoded or {}  # another replicate's reader decoded them already: the same frames
        train_frames = known.get(train.manifest_hash) or decode_all(train, size, progress)
        val_frames = known.get(val.manifest_hash) or decode_all(val, size, progress)
        pretrain = _pretrain(model, train, train_frames, cfg, progress)
        if pretrain and progress:
            tqdm.write(f"frame pretraining: loss {pretrain['loss']:.3f}, frame top-1 {pretrain['frame_top1']:.3f}")

        def clip_loss(m, ids, epoch, step, rng):  # TSN offsets drawn from the epoch's order generator
            clips = torch.stack([train_frames[i][tsn_indices(len(train_frames[i]), cfg.segments, rng)] for i in ids])
            clips = _augment(clips, torch_generator("augment", cfg.seed, epoch, step)).to(device_of(m))
            return _loss(m(clips), _targets(train, ids).to(device_of(m)), train.multilabel)

        fcfg = FitConfig(epochs=cfg.epochs, batch=cfg.batch_videos, lr=cfg.lr, weight_decay=cfg.weight_decay,
                         warmup=cfg.warmup, patience=cfg.patience, seed=cfg.seed)
        record = fit(model, fcfg, len(train), clip_loss, lambda m: evaluate(m, val_frames, val, cfg.segments),
                     "training classifier", progress, initial_score=bool(pretrain),
                     order_rng=lambda epoch: np.random.Generator(np.random.PCG64(derive_seed("train-order", cfg.seed,
                                                                                              epoch))))
        if decoded is not None:
            decoded.update({train.manifest_hash: train_frames, val.manifest_hash: val_frames})
        return {**record, "model": model_cfg.identity(), "train": asdict(cfg), "train_manifest": train.manifest_hash,
                "val_manifest": val.manifest_hash, "val_top1": record["val"], "pretrain": pretrain,
                "train_wall_s": time.perf_counter() - t0}

    # the init keeps its seed of earlier versions (derive_seed("init", seed)): same weights, same numbers
    return cached_fit("classifier", parts, lambda: FrameClassifier(model_cfg, train.num_classes), run, cache_dir,
                      init_seed=derive_seed("init", cfg.seed), device=device)


def _pretrain(model, train: VideoSplit, frames: list[torch.Tensor], cfg: TrainConfig, progress: bool) -> dict:
    """Stage 1: classify single frames drawn from inside labelled events (fixed steps, items
    drawn with replacement). Returns a summary of the last 50 steps (empty when skipped)."""
    pool = [(i, ev.label, ev.start, ev.end) for i, r in enumerate(train.records) for ev in r.events
            if ev.end > ev.start]
    if cfg.pretrain_steps <= 0 or not pool:
        return {}
    hits, losses = [], []

    def frame_loss(m, picks, epoch, step, rng):
        batch = torch.stack([frames[pool[k][0]][int(rng.integers(pool[k][2], pool[k][3]))] for k in picks])
        batch = _augment(batch[:, None], torch_generator("pretrain-augment", cfg.seed, step))[:, 0].to(device_of(m))
        target = torch.tensor([pool[k][1] for k in picks], device=batch.device)
        logits = m.head.fc(m.features(batch))  # each frame alone, no consensus, no dropout
        hits.append((logits.argmax(1) == target).float().mean().item())
        loss = F.cross_entropy(logits, target)
        losses.append(loss.item())
        return loss

    fcfg = FitConfig(epochs=1, batch=cfg.pretrain_batch, lr=cfg.pretrain_lr, weight_decay=cfg.weight_decay,
                     warmup=0.1, seed=cfg.seed, draw="replacement", steps=cfg.pretrain_steps)
    fit(model, fcfg, len(pool), frame_loss, None, "frame pretraining", progress,
        order_rng=lambda epoch: np.random.Generator(np.random.PCG64(derive_seed("pretrain", cfg.seed))))
    return {"steps": cfg.pretrain_steps, "batch": cfg.pretrain_batch, "loss": float(np.mean(losses[-50:])),
            "frame_top1": float(np.mean(hits[-50:]))}


def _augment(clips: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Horizontal flip per clip (keeps the motion axis, so the label), seeded."""
    flip = torch.rand(clips.shape[0], generator=g) < 0.5
    clips = clips.clone()
    clips[flip] = clips[flip].flip(-1)
    return clips
