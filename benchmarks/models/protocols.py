"""How a pretrained encoder becomes the classifier that reads every sampler's selection.

``frozen-probe``: the frozen encoder runs once on every candidate of the train and val splits;
only the head (the suite's consensus: ``max`` over frames, or ``avg``, TSN's average of
per-frame logits, which is a linear probe) trains, on random subsets of each video's candidates
so that it reads any budget. ``zero-shot``: CLIP's text tower embeds class-name prompts; no
training at all. Both return ``(FrameClassifier, record)`` like the ``trained`` protocol
(:func:`samplerbench.models.classifier.train_classifier`), the record's ``key`` naming the
weights' content, the data and the configuration.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from samplerbench.data.annotations import VideoSplit
from samplerbench.data.candidates import decode_pools
from samplerbench.devices import device_of
from samplerbench.metrics.classification import one_hot
from samplerbench.models.encoders import ConsensusHead, FrameClassifier, ModelConfig, ZeroShotHead
from samplerbench.seeding import derive_seed
from samplerbench.training import checkpoints
from samplerbench.training.fit import FitConfig, cached_fit, fit

#: A subset of the prompt ensemble CLIP used for Kinetics-700 (Radford et al. 2021, its notebook).
DEFAULT_PROMPTS = ("a photo of {}.", "a photo of a person {}.", "a photo of a person doing {}.",
                   "a video of {}.", "a video of a person {}.", "a video of a person doing {}.",
                   "an example of {}.", "a demonstration of {}.")


def class_phrase(name: str) -> str:
    """A class name as words: ``ApplyEyeMakeup`` -> ``apply eye makeup``, ``brush_hair`` -> ``brush hair``."""
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name.replace("_", " ").replace("-", " "))
    return " ".join(name.split()).lower()


@torch.inference_mode()
def encode_pools(model: FrameClassifier, split: VideoSplit, candidates: int, size, batch: int = 64) -> torch.Tensor:
    """The frozen encoder's features of every candidate of every video: (videos, T, D), on the
    CPU (the encoder runs where the model is, a batch at a time)."""
    pools = decode_pools(split, candidates, size, model.resize_for(size))
    flat, dev = pools.flatten(0, 1), device_of(model)
    feats = torch.cat([model.features(flat[i:i + batch].to(dev)).cpu() for i in range(0, len(flat), batch)])
    return feats.float().view(pools.shape[0], pools.shape[1], -1)


def _masked_logits(head: ConsensusHead, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The head on a subset of each video's frames (mask (B, T) of 0/1)."""
    if head.consensus == "max":
        pooled = feats.masked_fill(mask[..., None] == 0, float("-inf")).amax(dim=1)
        return head.fc(head.dropout(pooled))
    logits = head.frame_logits(feats)
    return (logits * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)


def probe_classifier(train: VideoSplit, val: VideoSplit, cfg: ModelConfig, batch: int, seed: int,
                     size: tuple[int, int], candidates: int, cache_dir: Path,
                     progress: bool = True, device: torch.device | str = "cpu") -> tuple[FrameClassifier, dict]:
    """The frozen-probe classifier: the pretrained encoder (never trained) and a head trained on
    the train split's cached candidate features; validated on val with all candidates. The
    encoder and the head run on ``device``."""
    model = FrameClassifier(cfg, train.num_classes).to(device)
    sha = model.encoder.weights_sha
    epochs, lr = cfg.probe_epochs, cfg.probe_lr
    parts = ["frozen-probe", cfg.identity(), sha, train.manifest_hash, val.manifest_hash, list(size), candidates,
             train.num_classes, batch, seed]
    feats: dict[str, torch.Tensor] = {}

    def build():
        return ConsensusHead(model.encoder.dim, train.num_classes, cfg.dropout, cfg.consensus)

    def run(head: ConsensusHead) -> dict:
        t0 = time.perf_counter()
        feats["train"] = encode_pools(model, train, candidates, size)
        feats["val"] = encode_pools(model, val, candidates, size)
        if train.multilabel:
            target = torch.from_numpy(one_hot([r.labels for r in train.records], train.num_classes)).float()
        else:
            target = torch.tensor([r.labels[0] for r in train.records])
        t = candidates

        def batch_loss(m, ids, epoch, step, _rng):
            rng = np.random.Generator(np.random.PCG64(derive_seed("probe-batch", seed, epoch, step)))
            sizes = rng.integers(1, t + 1, size=len(ids))
            mask = torch.from_numpy(rng.random((len(ids), t)).argsort(1) < sizes[:, None]).float()
            dev = device_of(m)
            logits = _masked_logits(m, feats["train"][torch.from_numpy(ids)].to(dev), mask.to(dev))
            y = target[torch.from_numpy(ids)].to(dev)
            return F.binary_cross_entropy_with_logits(logits, y) if train.multilabel else F.cross_entropy(logits, y)

        def validate(m):
            with torch.no_grad():
                pred = m(feats["val"].to(device_of(m))).argmax(1).tolist()
            return float(np.mean([p in r.labels for p, r in zip(pred, val.records, strict=True)]))

        record = fit(head, FitConfig(epochs=epochs, batch=batch, lr=lr, weight_decay=1e-4, seed=seed),
                     len(train), batch_loss, validate, "frozen probe head", progress, initial_score=False)
        return {**record, "protocol": "frozen-probe", "model": cfg.identity(), "weights": model.encoder.weights,
                "weights_sha256": sha, "train_manifest": train.manifest_hash, "val_manifest": val.manifest_hash,
                "val_top1": record["val"], "encode_and_train_s": time.perf_counter() - t0}

    head, record = cached_fit("probe-head", parts, build, run, cache_dir, device=device)
    model.head = head
    return model.eval().requires_grad_(False), record


@torch.inference_mode()
def zero_shot_classifier(classes: list[str], cfg: ModelConfig) -> tuple[FrameClassifier, dict]:
    """CLIP zero-shot: class embeddings from the prompts through the text tower."""
    model = FrameClassifier(cfg, len(classes), head=torch.nn.Identity())
    clip = model.encoder.net
    if cfg.retrieval_weights:  # the run reads frames with CLIP4Clip's fine-tuned towers throughout
        from samplerbench.models.clip4clip import load_clip4clip

        model.encoder.clip4clip_sha = load_clip4clip(clip, cfg.retrieval_weights)
        clip.requires_grad_(False)
    tokenizer = model.encoder.text
    prompts = cfg.prompts or DEFAULT_PROMPTS
    rows = []
    for c in classes:
        e = clip.encode_text(tokenizer([p.format(class_phrase(c)) for p in prompts])).float()
        rows.append(F.normalize(F.normalize(e, dim=-1).mean(0), dim=-1))
    scale = float(clip.logit_scale.exp())  # CLIP's learned temperature (100 for OpenAI's weights)
    model.head = ZeroShotHead(torch.stack(rows), scale)
    parts = ["zero-shot", cfg.identity(), model.encoder.weights_sha, model.encoder.clip4clip_sha, list(classes),
             list(prompts)]
    key = checkpoints.key_of("zero-shot", *parts)
    record = {"protocol": "zero-shot", "key": key, "content_key": checkpoints.content_key("zero-shot", *parts),
              "model": cfg.identity(), "weights": model.encoder.weights, "weights_sha256": model.encoder.weights_sha,
              "prompts": list(prompts), "classes": len(classes), "logit_scale": scale, "cached": False,
              "config": asdict(cfg)}
    return model.eval().requires_grad_(False), record
