"""The harness's frame classifier: a small CNN frame encoder and a consensus head.

``FrameCNN`` costs about 16 MFLOPs (fvcore convention) per 64x64 frame. The head pools the
selected frames' features (max, as SOSampler's classifier; or TSN's average of logits) and
classifies. The encoder works frame by frame, so the runner can encode a video's candidates
once and apply the head to any selection's features: the same numbers as running the model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from samplerbench.registry import Registry

ENCODERS = Registry("encoders")

MEAN, STD = 0.45, 0.225


def normalise(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3, H, W) -> float, roughly zero-mean unit-variance."""
    return (frames.float() / 255.0 - MEAN) / STD


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


@ENCODERS.register("cnn-small")
class FrameCNN(nn.Module):
    """Four 3x3 conv blocks, each followed by 2x2 max pooling but the last, then global pooling:
    (M,3,H,W) -> (M,D). About 16 MFLOPs per 64x64 frame at width 16.

    A first version with stride-2 convolutions and average pooling stayed at chance on
    synth-events: the class is one small object, and strided stems and averages lose it.
    """

    def __init__(self, width: int = 16, dim: int = 128, pool: str = "max"):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            _conv(3, w, 1), nn.MaxPool2d(2), _conv(w, 2 * w, 1), nn.MaxPool2d(2),
            _conv(2 * w, 4 * w, 1), nn.MaxPool2d(2), _conv(4 * w, dim, 1),
        )
        self.dim = dim
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return y.amax(dim=(2, 3)) if self.pool == "max" else y.mean(dim=(2, 3))


class ConsensusHead(nn.Module):
    """Consensus over frames, then a linear classifier.

    ``max`` (default): max over frames of each feature, then fc: SOSampler's classifier head
    (max over frames). ``avg``: fc on every frame, logits averaged (TSN). With ``avg`` the
    classifier stayed at chance on synth-events within the training budget: the one event frame
    gets 1/N of the gradient. Either way the prediction on a selection is a function of the
    selected frames' features alone, so the runner computes them once per video.
    """

    def __init__(self, dim: int, num_classes: int, dropout: float = 0.3, consensus: str = "max"):
        super().__init__()
        if consensus not in ("max", "avg"):
            raise ValueError(f"consensus must be max or avg, not {consensus!r}")
        self.consensus = consensus
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(dim, num_classes)

    def frame_logits(self, feats: torch.Tensor) -> torch.Tensor:
        """Each frame alone: (M, D) -> (M, C)."""
        return self.fc(self.dropout(feats))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:  # (B, N, D) -> (B, C)
        if self.consensus == "max":
            return self.fc(self.dropout(feats.amax(dim=1)))
        return self.frame_logits(feats).mean(dim=1)


@dataclass(frozen=True)
class ModelConfig:
    encoder: str = "cnn-small"
    width: int = 16
    dim: int = 128
    pool: str = "max"
    dropout: float = 0.3
    consensus: str = "max"


class FrameClassifier(nn.Module):
    """Encoder + consensus head over N frames: uint8 (B, N, 3, H, W) -> logits (B, C)."""

    def __init__(self, cfg: ModelConfig, num_classes: int):
        super().__init__()
        self.cfg = cfg
        self.encoder = ENCODERS.get(cfg.encoder)(width=cfg.width, dim=cfg.dim, pool=cfg.pool)
        self.head = ConsensusHead(cfg.dim, num_classes, cfg.dropout, cfg.consensus)

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (M, 3, H, W) -> per-frame features (M, D)."""
        return self.encoder(normalise(frames))

    def frame_logits(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (M, 3, H, W) -> per-frame logits (M, C), each frame alone."""
        return self.head.frame_logits(self.features(frames))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        b, n = frames.shape[:2]
        feats = self.encoder(normalise(frames.flatten(0, 1))).view(b, n, -1)
        return self.head(feats)

    def config(self) -> dict:
        return asdict(self.cfg)
