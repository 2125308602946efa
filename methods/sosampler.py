"""SOSampler: Junho Lee, Jeongwoo Shin, Seung Woo Ko, Seongsu Ha and Joonseok Lee, "Scalable Frame
Sampling for Video Classification: A Semi-Optimal Policy Approach with Reduced Search Space",
arXiv preprint arXiv:2409.05260, 2024 (BMVC 2024; seed BibTeX ``lee2024scalable``).

A light scorer looks at every one of the T candidates (one per equal segment) at reduced
resolution; the N best-scoring frames, sorted by time, go to the frozen classifier. The scorer
learns the *semi-optimal policy*: each candidate alone through the frozen classifier, its
importance the probability of the true class (or the maximum class probability), softmaxed over
the T frames with a temperature. Loss: the paper's pairwise hinge between the scorer's
distribution p and those targets t, over all pairs i < j,
``|t_i - t_j| * max(0, gamma - sign(t_i - t_j) * (p_i - p_j))``, optionally mixed with the
label-guidance cross-entropy of a Linear on the frame-averaged scorer features
(``(1 - ce_weight) * hinge + ce_weight * CE``). The classifier stays frozen.

Scorer: ``backbone = "cnn"`` (default, for the 64-pixel embedded dataset): three 3x3 conv
blocks at ``resolution`` pixels with a residual temporal shift (TSM) in the last two, global
max pool, dropout 0.5, Linear to one logit, sigmoid, softmax over the T frames.
``backbone = "mobilenet_v2"`` is the paper's scorer (torchvision's MobileNetV2 with a residual
temporal shift in every inverted-residual block with a skip, 1280-d pooled features; the paper
feeds it 128-pixel frames); ``weights`` loads a local ImageNet state dict (no downloads).

Deviations, and why:
- The default scorer is a scaled-down CNN at 32 pixels (the paper: MobileNetV2 at 128 of 224,
  a similar ratio): MobileNetV2 on 64-pixel frames would cost more than the classifier it saves.
- The hinge is summed over the pairs of a video (the paper's sum over i < j) and averaged over
  videos; the optimiser is AdamW with a one-cycle schedule (``fitting.fit``), not the paper's
  SGD with a cosine schedule and gradient clipping at 40: one training loop serves every
  learned piece of the harness.
- Training sees the training split's fixed candidate pools (segment centres), with a random
  horizontal flip per video; the paper samples T random offsets per epoch from decoded video.
- The temperature default (0.3 of the paper's 1.0 / 0.3) and ``ce_weight`` were chosen on the
  validation split (the note of issue 6 gives the numbers).
- The scorer's FLOPs (fvcore, on T frames at the scorer's resolution) are charged to the
  sampler per video; the resize and the softmax are not counted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from samplerbench.cost.flops import count_flops
from samplerbench.features.train_env import TrainEnv, chance_of, top1_in_labels
from samplerbench.models.encoders import _conv, normalise
from samplerbench.registry import METHODS
from samplerbench.sampling import Budget, Sampler, Selection, VideoMemo, VideoView, per_video, top_n_sorted
from samplerbench.seeding import torch_generator
from samplerbench.training.fit import FitConfig, cached_fit, fit


def temporal_shift(x: torch.Tensor, frames: int, div: int) -> torch.Tensor:
    """TSM (Lin et al., ICCV 2019) on (B*T, C, H, W): channels [0, f) take the next frame's
    values, [f, 2f) the previous frame's, the rest stay; zeros at the ends; f = max(1, C // div)."""
    bt, c, h, w = x.shape
    v = x.view(bt // frames, frames, c, h, w)
    f = max(1, c // div)
    out = torch.zeros_like(v)
    out[:, :-1, :f] = v[:, 1:, :f]
    out[:, 1:, f:2 * f] = v[:, :-1, f:2 * f]
    out[:, :, 2 * f:] = v[:, :, 2 * f:]
    return out.view(bt, c, h, w)


class TemporalShift(nn.Module):
    def __init__(self, frames: int, div: int):
        super().__init__()
        self.frames, self.div = frames, div

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return temporal_shift(x, self.frames, self.div)


class ShiftCNN(nn.Module):
    """The scaled-down scorer backbone: (B*T, 3, R, R) -> (B*T, 4w)."""

    def __init__(self, frames: int, width: int = 16, div: int = 10):
        super().__init__()
        w = width
        self.stem = nn.Sequential(_conv(3, w, 1), nn.MaxPool2d(2))
        self.block1 = nn.Sequential(TemporalShift(frames, div), _conv(w, 2 * w, 1), nn.MaxPool2d(2))
        self.block2 = nn.Sequential(TemporalShift(frames, div), _conv(2 * w, 4 * w, 1))
        self.dim = 4 * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_cuda:  # oneDNN's NHWC kernels, as the harness's FrameCNN (the shift's views keep it)
            x = x.contiguous(memory_format=torch.channels_last)
        return self.block2(self.block1(self.stem(x))).amax(dim=(2, 3))


class _Residual(nn.Module):
    """Wraps an inverted-residual branch: x + branch(shift(x)) (TSM's residual shift)."""

    def __init__(self, shift: nn.Module, branch: nn.Module):
        super().__init__()
        self.shift, self.branch = shift, branch

    def forward(self, x):
        return self.branch(self.shift(x))


def mobilenet_v2_tsm(frames: int, div: int = 10, weights: str = "") -> nn.Module:
    """torchvision MobileNetV2 (weights from a local state dict, if given, before the shifts
    are inserted) with a temporal shift in every inverted-residual branch that has a skip."""
    from torchvision.models import mobilenet_v2
    from torchvision.models.mobilenetv2 import InvertedResidual

    net = mobilenet_v2(weights=None)
    if weights:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        missing = net.load_state_dict(state, strict=False).missing_keys
        if any(k.startswith("features.") for k in missing):
            raise ValueError(f"{weights}: not a MobileNetV2 state dict (missing {missing[:3]}...)")
    for block in net.features:
        if isinstance(block, InvertedResidual) and block.use_res_connect:
            block.conv = _Residual(TemporalShift(frames, div), block.conv)
    body = nn.Sequential(net.features, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    body.dim = 1280
    return body


class SOScorer(nn.Module):
    """uint8 candidates (B, T, 3, H, W) -> per-frame logits (B, T)."""

    def __init__(self, frames: int, backbone: str = "cnn", resolution: int = 32, width: int = 16,
                 shift_div: int = 10, weights: str = ""):
        super().__init__()
        if backbone == "cnn":
            self.backbone = ShiftCNN(frames, width, shift_div)
        elif backbone == "mobilenet_v2":
            self.backbone = mobilenet_v2_tsm(frames, shift_div, weights)
        else:
            raise ValueError(f"SOSampler backbone must be cnn or mobilenet_v2, not {backbone!r}")
        self.resolution = resolution
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(self.backbone.dim, 1)

    def inputs(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (B, T, 3, H, W) -> normalised float (B, T, 3, R, R) at the scorer's resolution."""
        b, t = pixels.shape[:2]
        x = normalise(pixels.flatten(0, 1))
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="area")
        return x.view(b, t, *x.shape[1:])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Prepared inputs (B, T, 3, R, R) -> (B, T, dim)."""
        return self.backbone(x.flatten(0, 1)).view(x.shape[0], x.shape[1], -1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.features(self.inputs(pixels)))).squeeze(-1)


class SOTrainee(nn.Module):
    """What trains: the scorer, and the label-guidance Linear on its frame-averaged features
    (used by the loss only; the sampler keeps ``scorer``)."""

    def __init__(self, scorer: SOScorer, num_classes: int):
        super().__init__()
        self.scorer = scorer
        self.guide = nn.Linear(scorer.backbone.dim, num_classes)


def frame_distribution(logits: torch.Tensor) -> torch.Tensor:
    """The scorer's policy: sigmoid per frame, softmax over the T frames."""
    return torch.softmax(torch.sigmoid(logits), dim=-1)


def semi_optimal_targets(frame_logits: torch.Tensor, multi_hot: torch.Tensor, target: str = "true",
                         temperature: float = 1.0, multilabel: bool = False) -> torch.Tensor:
    """(B, T, C) frozen-classifier logits of each candidate alone -> (B, T) target distribution:
    the probability of the true class (the largest over a multi-label video's classes) or the
    maximum class probability, softmaxed over frames at ``temperature``. Class probabilities as
    the reader computes them: softmax, or a sigmoid per class on ``multilabel`` data."""
    probs = torch.sigmoid(frame_logits) if multilabel else torch.softmax(frame_logits, dim=-1)
    if target == "true":
        imp = (probs * multi_hot[:, None, :]).amax(dim=-1)
    elif target == "max":
        imp = probs.amax(dim=-1)
    else:
        raise ValueError(f"SOSampler target must be true or max, not {target!r}")
    return torch.softmax(imp / temperature, dim=-1).detach()


def pairwise_hinge(p: torch.Tensor, t: torch.Tensor, gamma: float = 0.01) -> torch.Tensor:
    """The paper's ranking loss, summed over pairs i < j of each video, averaged over videos."""
    dt = t[:, :, None] - t[:, None, :]
    dp = p[:, :, None] - p[:, None, :]
    pair = dt.abs() * F.relu(gamma - torch.sign(dt) * dp)
    upper = torch.ones(p.shape[1], p.shape[1], dtype=torch.bool, device=p.device).triu(1)
    return pair[:, upper].sum(dim=1).mean()


@METHODS.register("sosampler")
@dataclass
class SOSampler(Sampler):
    """SOSampler: a light scorer with temporal shift ranks the candidates, trained toward the
    semi-optimal policy with a pairwise hinge; top N by score."""

    name = "sosampler"
    learns = True
    observes = frozenset({"pixels"})
    backbone: str = "cnn"
    resolution: int = 32
    width: int = 16
    shift_div: int = 10
    #: mobilenet_v2: a local ImageNet state dict, or "imagenet" for
    #: ``$SAMPLERBENCH_WEIGHTS/torchvision-mobilenet_v2.pth`` (the paper's ImageNet start)
    weights: str = ""
    target: str = "true"
    temperature: float = 0.3
    gamma: float = 0.01
    ce_weight: float = 0.01
    epochs: int = 6
    batch: int = 16
    lr: float = 2e-3
    seed: int = 0
    _model: SOScorer | None = field(default=None, repr=False, compare=False)
    _flops: dict = field(default_factory=dict, repr=False, compare=False)
    #: per-video scores: no budget or seed changes them, so every cell of the method shares them
    _memo: VideoMemo = field(default_factory=VideoMemo, repr=False, compare=False)

    def prepare(self, env: TrainEnv) -> dict:
        """Train the scorer on the training split (or load it from the cache)."""
        self.forget()
        weights = self.weights_file()

        def build():
            scorer = SOScorer(env.num_candidates, self.backbone, self.resolution, self.width, self.shift_div, weights)
            return SOTrainee(scorer, env.train.num_classes)

        # multi-label targets are sigmoid probabilities (softmax before): their own key
        parts = [self.config(), *env.key_parts(), 1] + (["sigmoid-targets"] if env.train.multilabel else [])
        if weights:  # the ImageNet start's identity: its bytes, not its path
            from samplerbench.models.pretrained import weights_digest

            parts.append(weights_digest(Path(weights)))
        trainee, record = cached_fit("sosampler", parts, build,
                                     lambda m: self._fit(m, env), env.cache_dir, device=env.device)
        self._model = trainee.scorer
        return {**record, **chance_of(env.val)}  # its score: the classifier's top-1 on its selections

    def _fit(self, model: SOTrainee, env: TrainEnv) -> dict:
        seed = env.seed_for(self.seed)  # this replicate's augmentation and data order
        with torch.no_grad():  # the scorer's inputs, resized and normalised once (kept on the CPU)
            inputs = torch.cat([model.scorer.inputs(c.to(env.device)).cpu() for c in env.pools(env.train).split(64)])
        targets = semi_optimal_targets(env.frame_logits(env.train), env.multi_hot(env.train), self.target,
                                       self.temperature, multilabel=env.train.multilabel)
        labels = env.multi_hot(env.train) if env.train.multilabel else env.first_labels(env.train)

        def batch_loss(m, ids, epoch, step, _rng):
            idx = torch.from_numpy(ids)
            x = inputs[idx]
            flip = torch.rand(len(ids), generator=torch_generator("so-flip", seed, epoch, step)) < 0.5
            x = torch.where(flip[:, None, None, None, None], x.flip(-1), x).to(env.device)
            feats = m.scorer.features(x)
            logits = m.scorer.fc(m.scorer.dropout(feats)).squeeze(-1)
            loss = pairwise_hinge(frame_distribution(logits), targets[idx].to(env.device), self.gamma)
            if self.ce_weight > 0:
                guide = m.guide(feats.mean(dim=1))
                y = labels[idx].to(env.device)
                ce = F.binary_cross_entropy_with_logits(guide, y) if env.train.multilabel else F.cross_entropy(guide, y)
                loss = (1 - self.ce_weight) * loss + self.ce_weight * ce
            return loss

        val_budgets = [b for b in env.budgets if b <= env.num_candidates // 4] or list(env.budgets)
        cfg = FitConfig(epochs=self.epochs, batch=self.batch, lr=self.lr, weight_decay=1e-4, patience=3,
                        seed=seed)
        record = fit(model, cfg, len(env.train), batch_loss,
                     lambda m: selection_top1(m.scorer, env, val_budgets), "SOSampler scorer", env.progress,
                     initial_score=False)
        return {**record, "val_metric": f"val top-1 of the frozen classifier on the top-N, N in {val_budgets}"}

    def random_init(self, frames: int, num_classes: int, seed: int = 0) -> None:
        """Untrained weights (throughput benchmarks: timing does not depend on the weights)."""
        self.forget()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self._model = SOScorer(frames, self.backbone, self.resolution, self.width, self.shift_div).eval()

    def weights_file(self) -> str:
        """The scorer's starting weights: ``weights`` as given, or for "imagenet" the file
        ``$SAMPLERBENCH_WEIGHTS/torchvision-mobilenet_v2.pth`` (a one-line error naming it if absent)."""
        if self.weights != "imagenet":
            return self.weights
        from samplerbench.models.pretrained import WEIGHTS_ENV, WeightsError, default_weights

        path = default_weights("torchvision:mobilenet_v2")
        if path is None:
            raise WeightsError(f"sosampler weights = \"imagenet\": no ImageNet MobileNetV2 state dict "
                               f"torchvision-mobilenet_v2.pth in ${WEIGHTS_ENV} "
                               f"({os.environ.get(WEIGHTS_ENV) or 'not set'})")
        return str(path)

    def cost_modules(self) -> dict:
        """The scorer (backbone and its per-frame linear score) on every candidate."""
        return {"scorer": self._model}

    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """(T, 3, H, W) uint8 -> (1, T) the scorer's pre-sigmoid scores."""
        if self._model is None:
            raise RuntimeError("SOSampler is not trained: the runner calls prepare(env) first")
        dev = next(self._model.parameters()).device
        with torch.no_grad():
            return self._model(pixels[None].to(dev)).float().cpu()

    def scores(self, pixels: torch.Tensor) -> np.ndarray:
        """(T, 3, H, W) uint8 -> (T,) the policy's distribution over the candidates."""
        return frame_distribution(self.logits(pixels))[0].numpy()

    def scorer_flops(self, t: int, size: tuple[int, int]) -> float:
        if (t, size) not in self._flops:
            x = torch.zeros((1, t, 3, *size), dtype=torch.uint8, device=next(self._model.parameters()).device)
            self._flops[(t, size)] = count_flops(self._model, x).flops
        return self._flops[(t, size)]

    def select(self, view: VideoView, budget: Budget, rng: np.random.Generator) -> Selection:
        """The top N by the pre-sigmoid score: sigmoid then softmax keep the order, but a sigmoid
        that saturates to 1.0 would tie the best frames and leave the choice to their index."""
        pixels = view.pixels()
        logits = per_video(self._memo, view, lambda: self.logits(pixels))
        return Selection(top_n_sorted(logits[0].numpy(), budget.frames(view.num_candidates)),
                         scores=frame_distribution(logits)[0].numpy(),
                         own_flops=self.scorer_flops(len(pixels), tuple(pixels.shape[-2:])))


@torch.no_grad()
def selection_top1(model: SOScorer, env: TrainEnv, budgets) -> float:
    """Top-1 of the frozen classifier (max consensus over the selected frames' features) on the
    scorer's top-N of the validation candidates, averaged over ``budgets``."""
    model.eval()
    pools, feats = env.pools(env.val), env.features(env.val)
    dev = next(model.parameters()).device
    logits = torch.cat([model(c.to(dev)).float().cpu() for c in pools.split(32)])  # ranked before the sigmoid
    accs = []
    for n in budgets:
        idx = torch.from_numpy(np.stack([top_n_sorted(p.numpy(), n) for p in logits]))
        chosen = feats[torch.arange(len(feats))[:, None], idx].to(env.device)
        accs.append(top1_in_labels(env.classifier.head(chosen).cpu(), env.val))
    return float(np.mean(accs))
