"""The harness's frame classifier: a frame encoder (the small CNN it trains, or a pretrained one
from :mod:`.pretrained`) and a consensus head (trained, or CLIP's zero-shot text head).

``FrameCNN`` costs about 16 MFLOPs (fvcore convention) per 64x64 frame. The head pools the
selected frames' features (max, as SOSampler's classifier; or TSN's average of logits) and
classifies. The encoder works frame by frame, so the runner can encode a video's candidates
once and apply the head to any selection's features: the same numbers as running the model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from samplerbench.registry import Registry

ENCODERS = Registry("encoders")

MEAN, STD = 0.45, 0.225


def normalise(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3, H, W) -> float, roughly zero-mean unit-variance."""
    return (frames.float() / 255.0 - MEAN) / STD


class MaxPool2x2(nn.MaxPool2d):
    """2x2 max pooling, stride 2: the same numbers as ``nn.MaxPool2d(2)`` (a max is exact), but
    without autograd as the max of four strided views, written here because torch's CPU
    ``max_pool2d`` on NCHW floats was 5x slower (23 vs 4 ms on (32, 16, 64, 64)) and was a third
    of the encoder's time. With gradients it is torch's op, whose backward sends a tie's gradient
    to the first maximum (``torch.maximum`` would split it): training is unchanged."""

    def __init__(self):
        super().__init__(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or x.dim() != 4 or x.is_cuda:
            return super().forward(x)
        h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2  # floor, as max_pool2d
        return torch.maximum(torch.maximum(x[..., 0:h:2, 0:w:2], x[..., 0:h:2, 1:w:2]),
                             torch.maximum(x[..., 1:h:2, 0:w:2], x[..., 1:h:2, 1:w:2]))


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
            _conv(3, w, 1), MaxPool2x2(), _conv(w, 2 * w, 1), MaxPool2x2(),
            _conv(2 * w, 4 * w, 1), MaxPool2x2(), _conv(4 * w, dim, 1),
        )
        self.dim = dim
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_cuda:  # oneDNN's NHWC kernels: training 1.4x, inference 1.5-1.8x faster on this CPU
            x = x.contiguous(memory_format=torch.channels_last)
        y = self.body(x)
        return y.amax(dim=(2, 3)) if self.pool == "max" else y.mean(dim=(2, 3))

    #: reads frames (or patches) of any size
    any_size = True
    #: has a spatial feature map (:meth:`feature_map`): a token of a frame can be the map over its patch
    has_feature_map = True

    def feature_map(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Normalised frames (M, 3, H, W) -> (M, rows * cols, D): the last conv block's map
        pooled over each cell of a rows x cols grid, as :meth:`forward` pools the whole map
        (max or mean), so that pooling a frame's cells again gives its feature exactly."""
        if not x.is_cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        y = self.body(x)
        cells = F.adaptive_max_pool2d(y, grid) if self.pool == "max" else F.adaptive_avg_pool2d(y, grid)
        return cells.flatten(2).transpose(1, 2)

    @staticmethod
    def normalise(frames: torch.Tensor) -> torch.Tensor:
        return normalise(frames)


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


class ZeroShotHead(nn.Module):
    """CLIP zero-shot classification: the video embedding is the mean of the selected frames'
    (unit-norm) embeddings, renormalised; logits are ``scale * cos`` with each class's text
    embedding (the mean of its prompts' unit embeddings, renormalised, as in CLIP's ensembles).
    Linear in the frame features up to the norms, so the fvcore count is the matmul."""

    def __init__(self, text: torch.Tensor, scale: float = 100.0):
        super().__init__()
        self.register_buffer("text", nn.functional.normalize(text.float(), dim=-1))
        self.scale = scale
        self.consensus = "mean-embedding"

    def frame_logits(self, feats: torch.Tensor) -> torch.Tensor:
        return self.scale * nn.functional.normalize(feats.float(), dim=-1) @ self.text.T

    def forward(self, feats: torch.Tensor) -> torch.Tensor:  # (B, N, D) -> (B, C)
        v = nn.functional.normalize(nn.functional.normalize(feats.float(), dim=-1).mean(dim=1), dim=-1)
        return self.scale * v @ self.text.T


#: What a suite's ``[model] protocol`` can be (README, "Real models").
PROTOCOLS = ("trained", "frozen-probe", "zero-shot", "retrieval-clip")


@dataclass(frozen=True)
class ModelConfig:
    encoder: str = "cnn-small"
    width: int = 16
    dim: int = 128
    pool: str = "max"
    dropout: float = 0.3
    consensus: str = "max"
    #: pretrained encoders (``<family>:<model>``): a local weights file (else $SAMPLERBENCH_WEIGHTS)
    weights: str = ""
    protocol: str = "trained"
    #: zero-shot prompt templates (``{}`` = the class name); empty: CLIP's Kinetics ensemble subset
    prompts: tuple = ()
    #: cuda only: ``bf16`` / ``fp16`` autocast and channels_last for the frozen encoder
    precision: str = "fp32"
    channels_last: bool = False
    #: frozen-probe: the head's training
    probe_epochs: int = 30
    probe_lr: float = 1e-3
    #: retrieval-clip: a CLIP4Clip fine-tuned checkpoint for the towers (empty: the CLIP weights)
    retrieval_weights: str = ""

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, not {self.protocol!r}")
        if self.protocol != "trained" and ":" not in self.encoder:
            raise ValueError(f"protocol {self.protocol!r} needs a pretrained encoder (<family>:<model>), "
                             f"not {self.encoder!r}")
        if self.protocol in ("zero-shot", "retrieval-clip") and not self.encoder.startswith("open_clip:"):
            raise ValueError(f"protocol {self.protocol!r} needs a CLIP encoder (open_clip:<model>)")
        object.__setattr__(self, "prompts", tuple(self.prompts))

    @property
    def pretrained(self) -> bool:
        return ":" in self.encoder

    def identity(self) -> dict:
        """The fields that make this configuration (fields added later count only when set, so
        earlier suites keep their cache keys)."""
        d = asdict(self)
        for k in ("weights", "protocol", "prompts", "precision", "channels_last", "probe_epochs",
                  "probe_lr", "retrieval_weights"):
            if d[k] == ModelConfig.__dataclass_fields__[k].default:
                del d[k]
        return d


class FrameClassifier(nn.Module):
    """Encoder + consensus head over N frames: uint8 (B, N, 3, H, W) -> logits (B, C)."""

    def __init__(self, cfg: ModelConfig, num_classes: int, head: nn.Module | None = None, load_weights: bool = True):
        super().__init__()
        self.cfg = cfg
        if cfg.pretrained:
            from samplerbench.models.pretrained import build_pretrained

            self.encoder = build_pretrained(cfg.encoder, cfg.weights or None, load=load_weights)
            dim = self.encoder.dim
            self.cfg = cfg = replace(cfg, dim=dim)  # ``dim`` is the features' size, which the weights decide
        else:
            self.encoder = ENCODERS.get(cfg.encoder)(width=cfg.width, dim=cfg.dim, pool=cfg.pool)
            dim = cfg.dim
        self.head = head if head is not None else ConsensusHead(dim, num_classes, cfg.dropout, cfg.consensus)

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (M, 3, H, W) -> per-frame features (M, D)."""
        x = self.encoder.normalise(frames)
        if self.cfg.pretrained and x.device.type == "cuda":
            if self.cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if self.cfg.precision in ("bf16", "fp16"):
                dtype = torch.bfloat16 if self.cfg.precision == "bf16" else torch.float16
                with torch.autocast("cuda", dtype=dtype):
                    return self.encoder(x).float()
        return self.encoder(x)

    def encoder_identity(self, classifier_key: str, device: torch.device) -> dict:
        """What the encoder's features depend on (a feature store's key): a pretrained encoder's
        configuration and weights, frozen whatever head reads it; the harness's encoder trains
        with its head, so the classifier's key; and the device kind (CUDA autocast differs)."""
        if self.cfg.pretrained:
            own = {k: v for k, v in self.cfg.identity().items()
                   if k not in ("protocol", "prompts", "probe_epochs", "probe_lr", "consensus", "dropout")}
            return {**own, "weights_sha": self.encoder.weights_sha, "clip4clip_sha": self.encoder.clip4clip_sha,
                    "device": device.type}
        return {"classifier": classifier_key, "device": device.type}

    def frame_logits(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (M, 3, H, W) -> per-frame logits (M, C), each frame alone."""
        return self.head.frame_logits(self.features(frames))

    def resize_for(self, size) -> int | None:
        """The shorter side to scale frames to before the centre crop of ``size``: a pretrained
        encoder's own crop ratio (torchvision's resize 232 / crop 224; timm's ``crop_pct``);
        None for the harness's encoder (resize just to the crop)."""
        if not self.cfg.pretrained:
            return None
        pre = self.encoder.preprocess
        if pre.resize == min(pre.size):
            return None
        return int(round(min(size) * pre.resize / min(pre.size)))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        b, n = frames.shape[:2]
        feats = self.features(frames.flatten(0, 1)).view(b, n, -1)
        return self.head(feats)

    def config(self) -> dict:
        return asdict(self.cfg)
