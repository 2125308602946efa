"""What a learned method trains on (SOSampler's scorer, SLLM's head, the token ViTs): the train
and validation splits' candidate pools, decoded once per run and shared, and the frozen
classifier's features and per-frame logits on them, computed once.

A method that learns implements ``Sampler.prepare(env)``: it trains (or loads from the cache,
via :func:`samplerbench.training.fit.cached_fit`) what it needs and returns its training record,
which the runner stores in the run's provenance under ``trained``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from samplerbench.data.annotations import VideoSplit
from samplerbench.data.candidates import decode_pools
from samplerbench.metrics.classification import one_hot
from samplerbench.metrics.stats import chance_top1
from samplerbench.models.encoders import FrameClassifier
from samplerbench.seeding import replicate_seed


@dataclass
class TrainEnv:
    train: VideoSplit
    val: VideoSplit
    classifier: FrameClassifier  # frozen, eval mode
    classifier_key: str  # the classifier's content key (weights identity, without the cache version)
    num_candidates: int
    frame_size: tuple[int, int]
    budgets: tuple[int, ...]
    cache_dir: Path
    device: torch.device = torch.device("cpu")
    progress: bool = True
    retrieval_cfg: dict = field(default_factory=dict)  # ``[retrieval_model]``: RetrievalConfig overrides
    captions_per_video: int = 5
    resize: int | None = None  # the reader's shorter side before the crop (pretrained encoders)
    #: the run's stores (:class:`samplerbench.features.extract.SplitStores`): features and pixels
    #: read from disk when already extracted; None: decoded and encoded here, kept for this run only
    stores: Any = None
    #: the replicate (a suite's ``[eval] seeds`` entry) this environment trains for: every learned
    #: piece trains once per replicate, its checkpoint keyed by it (:meth:`key_parts`)
    replicate: int = 0
    _pools: dict = field(default_factory=dict, repr=False)
    _outputs: dict = field(default_factory=dict, repr=False)
    _retrieval: tuple | None = field(default=None, repr=False)

    def pools(self, split: VideoSplit) -> torch.Tensor:
        """uint8 (videos, T, 3, H, W): the split's candidates, decoded once per run."""
        key = (split.manifest_hash, self.num_candidates, tuple(self.frame_size))
        if key not in self._pools:
            if self.stores is not None and self.stores.want_pixels:  # copied: training indexes it at random
                self._pools[key] = torch.from_numpy(np.array(self.stores.pixels(split)))
            else:
                self._pools[key] = decode_pools(split, self.num_candidates, self.frame_size, self.resize)
        return self._pools[key]

    def _classify(self, split: VideoSplit) -> tuple[torch.Tensor, torch.Tensor]:
        key = split.manifest_hash
        if key not in self._outputs and self.stores is not None:  # the store's features, the fc on them
            stored = torch.from_numpy(np.array(self.stores.features(split))).float()
            with torch.no_grad():  # the same chunks as below: the same logits, bit for bit
                logits = [self.classifier.head.frame_logits(c.flatten(0, 1).to(self.device)).float().cpu()
                          .view(len(c), stored.shape[1], -1) for c in stored.split(64)]
            self._outputs[key] = (stored, torch.cat(logits))
        if key not in self._outputs:
            pools = self.pools(split)
            feats, logits = [], []
            with torch.no_grad():  # not inference_mode: these feed training graphs as inputs
                for chunk in pools.split(64):
                    f = self.classifier.features(chunk.flatten(0, 1).to(self.device))
                    feats.append(f.float().cpu().view(len(chunk), pools.shape[1], -1))
                    logits.append(self.classifier.head.frame_logits(f).float().cpu().view(len(chunk), pools.shape[1], -1))
            self._outputs[key] = (torch.cat(feats), torch.cat(logits))
        return self._outputs[key]

    def features(self, split: VideoSplit) -> torch.Tensor:
        """float (videos, T, D): the frozen encoder's features of every candidate."""
        return self._classify(split)[0]

    def frame_logits(self, split: VideoSplit) -> torch.Tensor:
        """float (videos, T, C): the frozen classifier on each candidate alone."""
        return self._classify(split)[1]

    def memo(self, key: tuple, make):
        """``make()`` once per replicate for ``key``: what several learned pieces compute alike
        (mmSampler's light features, the same for its three variants)."""
        key = ("memo", *key)
        if key not in self._outputs:
            self._outputs[key] = make()
        return self._outputs[key]

    @staticmethod
    def multi_hot(split: VideoSplit) -> torch.Tensor:
        """float (videos, C) ground truth."""
        return torch.from_numpy(one_hot([r.labels for r in split.records], split.num_classes)).float()

    @staticmethod
    def first_labels(split: VideoSplit) -> torch.Tensor:
        return torch.tensor([r.labels[0] for r in split.records])

    def captions(self, split: VideoSplit):
        """The split's captions (:class:`samplerbench.models.clip4clip.CaptionSet`), generated once."""
        from samplerbench.data.captions import split_captions
        from samplerbench.models.clip4clip import CaptionSet

        key = ("captions", split.manifest_hash, self.captions_per_video)
        if key not in self._outputs:
            pairs = split_captions(split, self.captions_per_video)
            self._outputs[key] = CaptionSet.of(pairs, [r.video_id for r in split.records], self.tokenizer())
        return self._outputs[key]

    def tokenizer(self):
        """Words -> ids: the embedded captions' closed vocabulary, or a real dataset's training
        captions' words (``meta["vocab"]``, from its adapter)."""
        from samplerbench.models.clip4clip import Tokenizer

        if self.classifier.cfg.protocol == "retrieval-clip":
            return self.classifier.encoder.text  # CLIP's BPE tokenizer (ships with open_clip)
        vocab = self.train.meta.get("vocab")
        return Tokenizer(vocab) if vocab else Tokenizer()

    def retrieval_model(self):
        """The retrieval model (frozen after training) and its training record, trained once;
        with ``protocol = "retrieval-clip"``, CLIP4Clip meanP on the CLIP towers (nothing trains)."""
        if self._retrieval is None and self.classifier.cfg.protocol == "retrieval-clip":
            from samplerbench.models.clip4clip import ClipRetrieval
            from samplerbench.training import checkpoints

            cfg = self.classifier.cfg
            clip = self.classifier.encoder.net  # a CLIP4Clip checkpoint is already in it (zero_shot_classifier)
            sha = self.classifier.encoder.clip4clip_sha
            parts = ["retrieval-clip", cfg.identity(), self.classifier.encoder.weights_sha, sha]
            record = {"protocol": "retrieval-clip", "key": checkpoints.key_of("retrieval-clip", *parts),
                      "content_key": checkpoints.content_key("retrieval-clip", *parts),
                      "clip4clip_weights": cfg.retrieval_weights, "clip4clip_sha256": sha, "cached": False}
            self._retrieval = (ClipRetrieval(clip).to(self.device).eval().requires_grad_(False), record)
        if self._retrieval is None:
            from samplerbench.models.clip4clip import RetrievalConfig, train_retrieval_model

            cfg = RetrievalConfig(**self.retrieval_cfg)
            cfg = dataclasses.replace(cfg, seed=self.seed_for(cfg.seed))  # this replicate's data order
            with torch.inference_mode(False), torch.enable_grad():
                model, record = train_retrieval_model(
                    lambda: (self.features(self.train), self.features(self.val)), self.captions(self.train),
                    self.captions(self.val), self.classifier.encoder.dim, len(self.train), self.num_candidates, cfg,
                    [*self.key_parts(), self.captions_per_video], self.cache_dir, self.progress,
                    vocab_size=len(self.tokenizer()), device=self.device)
            self._retrieval = (model.eval().requires_grad_(False), {**record, **chance_of(self.val, retrieval=True)})
        return self._retrieval

    def key_parts(self) -> list:
        """What every learned piece depends on besides its own config: the data, the classifier
        and the replicate."""
        return [self.train.manifest_hash, self.val.manifest_hash, self.classifier_key, self.num_candidates,
                list(self.frame_size), {"replicate": self.replicate}]

    def seed_for(self, base: int) -> int:
        """A learned piece's training seed (data order, augmentation) in this replicate, from the
        seed its configuration names (:func:`samplerbench.seeding.replicate_seed`)."""
        return replicate_seed(base, self.replicate)

    def for_replicate(self, replicate: int, classifier: FrameClassifier, classifier_key: str, stores: Any) -> TrainEnv:
        """The environment of another replicate: its reader, the same data; the decoded pools
        are shared, the classifier's outputs too when the reader is the same."""
        same = classifier_key == self.classifier_key
        return dataclasses.replace(self, replicate=replicate, classifier=classifier, classifier_key=classifier_key,
                                   stores=stores, _pools=self._pools, _outputs=self._outputs if same else {},
                                   _retrieval=None)


def top1_in_labels(logits: torch.Tensor, split: VideoSplit) -> float:
    """Share of videos whose top-scoring class is one of their labels."""
    pred = logits.argmax(-1).tolist()
    return float(np.mean([p in r.labels for p, r in zip(pred, split.records, strict=True)]))


def chance_of(split: VideoSplit, retrieval: bool = False) -> dict:
    """A trained piece's validation chance level, for its record: ``chance`` (a classifier's
    top-1 of the majority class; a retrieval model's R@1 of a random ranking, 1 / videos) and
    ``n_val`` (validation videos), from which the run tells whether the piece learned."""
    n = len(split.records)
    chance = 1.0 / max(n, 1) if retrieval else chance_top1([r.labels for r in split.records], split.num_classes)
    return {"chance": chance, "n_val": n}
