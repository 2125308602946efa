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
from tqdm import tqdm

from samplerbench.data.annotations import VideoSplit
from samplerbench.data.video import read_frames
from samplerbench.metrics.classification import one_hot
from samplerbench.models.encoders import FrameClassifier, ModelConfig
from samplerbench.sampling import segment_centres
from samplerbench.seeding import derive_seed, torch_generator
from samplerbench.training import checkpoints as checkpoints

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


def decode_all(split: VideoSplit, size: tuple[int, int], progress: bool = True) -> list[torch.Tensor]:
    """Every frame of every video of a split, uint8 (n, 3, H, W) each."""
    it = tqdm(split.records, desc=f"decoding {split.split}", unit="video", disable=not progress, mininterval=1.0)
    return [read_frames(r.path, np.arange(r.num_frames), size=size) for r in it]


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
    hits = []
    for i, v in enumerate(frames):
        logits = model(v[tsn_indices(len(v), segments, None)][None])
        hits.append(int(logits.argmax(1).item()) in split.records[i].labels)
    return float(np.mean(hits))


def train_classifier(train: VideoSplit, val: VideoSplit, model_cfg: ModelConfig, cfg: TrainConfig,
                     size: tuple[int, int], cache_dir: Path, progress: bool = True) -> tuple[FrameClassifier, dict]:
    """Train (or load from the cache) the classifier; returns it frozen in eval mode, and its record."""
    key = checkpoints.key_of("classifier", asdict(model_cfg), asdict(cfg), train.manifest_hash,
                             val.manifest_hash, list(size), train.num_classes, 2)  # 2: frame pretraining, epoch 0
    path = Path(cache_dir) / "models" / f"classifier-{key}.pt"
    if path.is_file():
        model = FrameClassifier(model_cfg, train.num_classes)
        state, meta = checkpoints.load(path)
        model.load_state_dict(state)
        model.eval().requires_grad_(False)
        return model, {**meta, "checkpoint": str(path), "cached": True}

    # Init and dropout draw from torch's RNG: fork it, seeded, so the caller's state is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed("init", cfg.seed))
        model = FrameClassifier(model_cfg, train.num_classes)
        model, meta = _fit(model, train, val, model_cfg, cfg, size, key, progress)
    checkpoints.save(path, model.state_dict(), meta)
    return model, {**meta, "checkpoint": str(path), "cached": False}


def _fit(model, train, val, model_cfg, cfg, size, key, progress):
    t0 = time.perf_counter()
    train_frames, val_frames = decode_all(train, size, progress), decode_all(val, size, progress)
    pretrain = _pretrain(model, train, train_frames, cfg, progress)
    if pretrain and progress:
        tqdm.write(f"frame pretraining: loss {pretrain['loss']:.3f}, frame top-1 {pretrain['frame_top1']:.3f}")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = int(np.ceil(len(train) / cfg.batch_videos))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
                                                pct_start=cfg.warmup)
    best, best_state, best_epoch, history = -1.0, None, 0, []
    if pretrain:  # epoch 0: the pretrained model may already beat every fine-tuned epoch
        best = evaluate(model, val_frames, val, cfg.segments)
        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        history.append({"epoch": 0, "loss": pretrain["loss"], "val_top1": best})
        if progress:
            tqdm.write(f"after frame pretraining: val top-1 {best:.3f}")
    for epoch in range(cfg.epochs):
        model.train()
        rng = np.random.Generator(np.random.PCG64(derive_seed("train-order", cfg.seed, epoch)))
        order = rng.permutation(len(train))
        losses = []
        bar = tqdm(range(steps_per_epoch), desc=f"training classifier epoch {epoch + 1}/{cfg.epochs}",
                   disable=not progress, mininterval=1.0)
        for step in bar:
            ids = order[step * cfg.batch_videos:(step + 1) * cfg.batch_videos]
            clips = torch.stack([train_frames[i][tsn_indices(len(train_frames[i]), cfg.segments, rng)] for i in ids])
            clips = _augment(clips, torch_generator("augment", cfg.seed, epoch, step))
            loss = _loss(model(clips), _targets(train, ids), train.multilabel)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
        acc = evaluate(model, val_frames, val, cfg.segments)
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_top1": acc})
        log.info("epoch %d: loss %.3f, val top-1 %.3f", epoch + 1, np.mean(losses), acc)
        if progress:
            tqdm.write(f"epoch {epoch + 1}: train loss {np.mean(losses):.3f}, val top-1 {acc:.3f}")
        if acc > best:
            best, best_epoch = acc, epoch + 1
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif epoch + 1 - best_epoch >= cfg.patience:
            break
    model.load_state_dict(best_state)
    model.eval().requires_grad_(False)
    meta = {"key": key, "model": asdict(model_cfg), "train": asdict(cfg), "train_manifest": train.manifest_hash,
            "val_manifest": val.manifest_hash, "best_epoch": best_epoch, "val_top1": best, "history": history,
            "pretrain": pretrain,
            "wall_s": time.perf_counter() - t0, "torch": torch.__version__}
    return model, meta


def _pretrain(model, train: VideoSplit, frames: list[torch.Tensor], cfg: TrainConfig, progress: bool) -> dict:
    """Stage 1: classify single frames drawn from inside labelled events. Returns a summary of
    the last 50 steps (empty when skipped)."""
    pool = [(i, ev.label, ev.start, ev.end) for i, r in enumerate(train.records) for ev in r.events
            if ev.end > ev.start]
    if cfg.pretrain_steps <= 0 or not pool:
        return {}
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.pretrain_lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.pretrain_lr, total_steps=cfg.pretrain_steps,
                                                pct_start=0.1)
    rng = np.random.Generator(np.random.PCG64(derive_seed("pretrain", cfg.seed)))
    losses, hits = [], []
    for step in tqdm(range(cfg.pretrain_steps), desc="frame pretraining", disable=not progress, mininterval=1.0):
        picks = rng.integers(0, len(pool), cfg.pretrain_batch)
        batch = torch.stack([frames[pool[k][0]][int(rng.integers(pool[k][2], pool[k][3]))] for k in picks])
        batch = _augment(batch[:, None], torch_generator("pretrain-augment", cfg.seed, step))[:, 0]
        target = torch.tensor([pool[k][1] for k in picks])
        logits = model.head.fc(model.features(batch))  # each frame alone, no consensus, no dropout
        loss = F.cross_entropy(logits, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        hits.append((logits.argmax(1) == target).float().mean().item())
    return {"steps": cfg.pretrain_steps, "batch": cfg.pretrain_batch, "loss": float(np.mean(losses[-50:])),
            "frame_top1": float(np.mean(hits[-50:]))}


def _augment(clips: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Horizontal flip per clip (keeps the motion axis, so the label), seeded."""
    flip = torch.rand(clips.shape[0], generator=g) < 0.5
    clips = clips.clone()
    clips[flip] = clips[flip].flip(-1)
    return clips
