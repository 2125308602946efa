"""mmSampler: Zhiming Hu, Ning Ye and Iqbal Mohomed, "mmSampler: Efficient Frame Sampler for
Multimodal Video Retrieval", Proceedings of Machine Learning and Systems (MLSys 2022), pp. 153-171
(seed BibTeX ``hu2022mmsampler``). For text-video retrieval.

A policy looks at light features of all T candidates and decides keep or skip per frame; the
retrieval model (CLIP4Clip mean pooling, :mod:`samplerbench.models.clip4clip`) encodes the kept frames
only, so the number of frames is adaptive per video. Policy: per-frame features (``variant``
``frame``: f_t; ``diff``: f_t - f_{t-1}, zero for the first; ``concat``: [f_t, f_t - f_{t-1}]),
Linear to the width + learned frame position embeddings, a 1-layer transformer across the
frames, MLP width -> 2 width -> ReLU -> 2 keep/skip logits; hard Gumbel-softmax (straight
through) while training, the argmax at test; frame 0 is always kept. Loss: the symmetric
InfoNCE of the frozen retrieval model through the masked mean of the kept frames, plus
``usage_weight`` (0.03) times the share of candidates kept.

Deviations, and why:
- Light features: by default the harness's frozen frame encoder at ``resolution`` (32) pixels,
  where the paper uses a frozen MobileNetV2 at 224 next to CLIP ViT-B/32: the same role (about
  a quarter of the retrieval encoder's cost per frame here), without a download. ``light =
  "torchvision:mobilenet_v2"`` (with ``light_weights``, or ``$SAMPLERBENCH_WEIGHTS``) and
  ``resolution = 224`` is the paper's light encoder, loaded like every pretrained encoder
  (:mod:`samplerbench.models.pretrained`); a pretrained reader needs it (a ViT reads its own
  input size only).
- The transformer attends across the frames of a video (the reference code hands batch-first
  input to a sequence-first module, so it attends across videos), and the test-time decision is
  the argmax (the reference code keeps the Gumbel noise at test): both as METHODS.md says.
- ``attention = "causal"`` (default): the policy decides "given the current and past frame
  observations" (the paper), so frame t's decision attends to frames 0..t. ``"bidirectional"``
  lets every decision see all T candidates, the future included: a deviation from the paper,
  kept as an option to measure what seeing the future is worth.
- The retrieval model is frozen while the policy trains (the paper fine-tunes CLIP4Clip with the
  policy): every retrieval cell of a run is then read by the same model, so the matched
  baselines and mmSampler differ in their frames alone, and training costs seconds on cached
  features instead of CLIP fine-tuning.
- The usage term is the batch's mean keep ratio: the paper's summary ("pushing the keep ratio
  toward its mean") is ambiguous, and this reading is the one that makes the count adaptive
  against InfoNCE, which alone prefers every frame. Early stopping uses the same trade-off on the
  validation split: mean R@1 (both directions, 0-1) - usage_weight x the mean keep ratio.
- Width 128 and 4 heads (the paper: 512 and 8), for 128-d features on 2 CPU cores.
- Cost per video: the light encoder and the policy on all T candidates (fvcore), charged to the
  sampler; the retrieval encoder on the kept frames is charged by the runner.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from samplerbench.cost.flops import count_flops
from samplerbench.devices import device_of
from samplerbench.metrics.ranking import retrieval_metrics
from samplerbench.models.archs import MMSamplerPolicy
from samplerbench.models.clip4clip import caption_embeddings, info_nce, similarity
from samplerbench.registry import METHODS
from samplerbench.sampling import Budget, Sampler, Selection, VideoMemo, VideoView, per_video
from samplerbench.seeding import torch_generator
from samplerbench.training.fit import FitConfig, cached_fit, fit

VARIANTS = ("frame", "diff", "concat")


def policy_inputs(feats: torch.Tensor, variant: str) -> torch.Tensor:
    """(B, T, D) light features -> the policy's per-frame input for a variant."""
    if variant not in VARIANTS:
        raise ValueError(f"mmSampler variant must be one of {VARIANTS}, not {variant!r}")
    if variant == "frame":
        return feats
    diff = torch.cat([torch.zeros_like(feats[:, :1]), feats[:, 1:] - feats[:, :-1]], dim=1)
    return diff if variant == "diff" else torch.cat([feats, diff], dim=-1)


def hard_gumbel_keep(logits: torch.Tensor, tau: float, generator: torch.Generator | None) -> torch.Tensor:
    """(B, T, 2) keep/skip logits -> (B, T) hard keep decisions with straight-through gradients,
    noise from ``generator`` (never the global RNG); frame 0 always kept."""
    u = torch.rand(logits.shape, generator=generator).clamp(1e-9, 1 - 1e-9).to(logits.device)
    soft = F.softmax((logits - torch.log(-torch.log(u))) / tau, dim=-1)
    hard = F.one_hot(soft.argmax(-1), 2).to(soft.dtype)
    keep = (hard - soft.detach() + soft)[..., 0]
    return torch.cat([torch.ones_like(keep[:, :1]), keep[:, 1:]], dim=1)


def argmax_keep(logits: torch.Tensor) -> torch.Tensor:
    """Deterministic decisions: keep where the keep logit wins; frame 0 always."""
    keep = logits[..., 0] >= logits[..., 1]
    keep[:, 0] = True
    return keep


class LightEncoder(nn.Module):
    """The frozen frame encoder at reduced resolution: uint8 (M, 3, H, W) -> (M, D)."""

    def __init__(self, encoder: nn.Module, resolution: int):
        super().__init__()
        self.encoder, self.resolution = encoder, resolution
        self.eval()

    def train(self, mode: bool = True) -> LightEncoder:
        """Always frozen: it wraps the shared classifier's encoder (BatchNorm in eval mode)."""
        return super().train(False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.encoder.normalise(pixels)  # the encoder's own mean and std
        if x.shape[-1] != self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="area")
        return self.encoder(x)


@METHODS.register("mmsampler")
@dataclass
class MMSampler(Sampler):
    """mmSampler: a light policy keeps or skips each candidate (adaptive count) for text-video
    retrieval, trained through the frozen retrieval model."""

    name = "mmsampler"
    learns = True
    observes = frozenset({"pixels"})
    adaptive = True
    variant: str = "frame"
    attention: str = "causal"  # "causal" (the paper) or "bidirectional" (a deviation: sees the future)
    resolution: int = 32
    #: "" = the reader's frozen encoder; "<family>:<model>": a pretrained light encoder (the paper's
    #: "torchvision:mobilenet_v2"), weights from ``light_weights`` or $SAMPLERBENCH_WEIGHTS
    light: str = ""
    light_weights: str = ""
    width: int = 128
    heads: int = 4
    usage_weight: float = 0.03
    tau: float = 1.0
    epochs: int = 30
    batch: int = 64
    lr: float = 1e-3
    seed: int = 0
    _policy: MMSamplerPolicy | None = field(default=None, repr=False, compare=False)
    _light: LightEncoder | None = field(default=None, repr=False, compare=False)
    _flops: dict = field(default_factory=dict, repr=False, compare=False)
    _light_sha: str = field(default="", repr=False, compare=False)
    #: per-video (keep mask, scores): the policy takes no budget or seed, so every seed's cell shares them
    _memo: VideoMemo = field(default_factory=VideoMemo, repr=False, compare=False)

    def __post_init__(self):
        policy_inputs(torch.zeros(1, 1, 1), self.variant)  # validates the variant
        if self.attention not in ("causal", "bidirectional"):
            raise ValueError(f"mmSampler attention must be causal or bidirectional, not {self.attention!r}")

    def config(self) -> dict:
        """The fields that make the policy (the light-encoder fields count only when set, so the
        policies trained before them keep their cache keys)."""
        cfg = super().config()
        for k in ("light", "light_weights"):
            if not cfg[k]:
                del cfg[k]
        return cfg

    def _in_dim(self, dim: int) -> int:
        return 2 * dim if self.variant == "concat" else dim

    def random_init(self, frames: int, num_classes: int, seed: int = 0, dim: int = 128) -> None:
        """Untrained weights (throughput benchmarks: timing does not depend on the weights)."""
        from samplerbench.models.encoders import FrameCNN

        self.forget()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if self.light:  # the configured light encoder's architecture, random weights
                from samplerbench.models.pretrained import build_pretrained

                encoder = build_pretrained(self.light, load=False)
                dim = encoder.dim
            else:
                encoder = FrameCNN(dim=dim)
            self._light = LightEncoder(encoder.eval(), self.resolution)
            self._policy = MMSamplerPolicy(self._in_dim(dim), self.width, self.heads, frames,
                                           self.attention == "causal").eval()

    def cost_modules(self) -> dict:
        """The light encoder on every candidate and the policy over them."""
        return {"light encoder": self._light, "policy": self._policy}

    def prepare(self, env) -> dict:
        """Train the policy against the frozen retrieval model (or load it from the cache)."""
        self.forget()
        retrieval, rec_model = env.retrieval_model()
        if self.light:
            from samplerbench.models.pretrained import build_pretrained

            encoder = build_pretrained(self.light, self.light_weights or None)
        elif env.classifier.cfg.pretrained:
            raise ValueError(f"mmSampler on the pretrained reader {env.classifier.cfg.encoder}: give it a light "
                             f"encoder, e.g. light = \"torchvision:mobilenet_v2\", resolution = 224 (the paper's)")
        else:
            encoder = env.classifier.encoder
        self._light = LightEncoder(encoder, self.resolution).to(env.device)
        dim = encoder.dim
        if self.light:  # the light encoder's identity: its weights
            self._light_sha = encoder.weights_sha

        def build():
            return MMSamplerPolicy(self._in_dim(dim), self.width, self.heads, env.num_candidates,
                                   self.attention == "causal")

        parts = [self.config(), *env.key_parts(), rec_model["content_key"], 1]
        if self.light:
            parts.append(self._light_sha)
        self._policy, record = cached_fit("mmsampler", parts, build, lambda m: self._fit(m, env, retrieval),
                                          env.cache_dir, device=env.device)
        return record

    def light_features(self, pools: torch.Tensor) -> torch.Tensor:
        """(V, T, 3, H, W) uint8 -> (V, T, D) on the CPU, frozen, no gradients (the light encoder
        runs where it is, a video at a time)."""
        dev = device_of(self._light)
        with torch.no_grad():
            return torch.stack([self._light(p.to(dev)).cpu() for p in pools])

    def _fit(self, policy: MMSamplerPolicy, env, retrieval) -> dict:
        seed = env.seed_for(self.seed)  # this replicate's captions, Gumbel noise and order
        # the light encoder's features of each split: the same for every variant of the replicate
        light = (self.light, self._light_sha) if self.light else ("reader", env.classifier_key)

        def feats_of(split):
            return env.memo(("mmsampler-light", *light, self.resolution, split.manifest_hash),
                            lambda: self.light_features(env.pools(split)))

        train_x = policy_inputs(feats_of(env.train), self.variant)
        val_x = policy_inputs(feats_of(env.val), self.variant)
        feats, val_feats = env.features(env.train), env.features(env.val)
        caps, val_caps = env.captions(env.train), env.captions(env.val)
        dev = env.device  # the policy's and the retrieval model's; the features stay on the CPU, batches move
        text, val_text = caption_embeddings(retrieval, caps, dev), caption_embeddings(retrieval, val_caps, dev)
        per_video = [np.flatnonzero(caps.video == v) for v in range(len(feats))]
        scale = retrieval.logit_scale.exp().clamp(max=100).detach()

        def batch_loss(m, ids, epoch, step, _rng):
            g = torch_generator("mmsampler", seed, epoch, step)
            pick = torch.randint(0, 1 << 30, (len(ids),), generator=g).numpy()
            cap = torch.tensor([per_video[i][pick[j] % len(per_video[i])] for j, i in enumerate(ids)], device=dev)
            idx = torch.from_numpy(ids)
            keep = hard_gumbel_keep(m(train_x[idx].to(dev)), self.tau, g)
            v = retrieval.video_embed(feats[idx].to(dev), keep)
            return info_nce(v, text[cap], scale) + self.usage_weight * keep.mean()

        def validate(m):
            with torch.no_grad():
                keep = argmax_keep(m(val_x.to(dev)))
                emb = retrieval.video_embed(val_feats.to(dev), keep.float())
                r = retrieval_metrics(similarity(retrieval, emb, val_caps, val_text), val_caps.video)
            return (r["t2v_R@1"] + r["v2t_R@1"]) / 200 - self.usage_weight * float(keep.float().mean())

        retrieval.requires_grad_(False)
        cfg = FitConfig(epochs=self.epochs, batch=self.batch, lr=self.lr, weight_decay=0.01, patience=6,
                        seed=seed)
        record = fit(policy, cfg, len(feats), batch_loss, validate, f"mmSampler policy ({self.variant})",
                     env.progress, initial_score=False)
        with torch.no_grad():
            record["val_keep_ratio"] = float(argmax_keep(policy(val_x.to(dev))).float().mean())
        return {**record, "val_metric": "mean R@1 (t2v, v2t; 0-1) - usage_weight x keep ratio, validation split"}

    def policy_flops(self, t: int, size: tuple[int, int]) -> float:
        """The light encoder on T candidates plus the policy (fvcore), once per (T, size)."""
        if (t, size) not in self._flops:
            dev = next(self._policy.parameters()).device
            enc = count_flops(self._light, torch.zeros((t, 3, *size), dtype=torch.uint8, device=dev)).flops
            pol = count_flops(self._policy, torch.zeros(1, t, self._policy.proj.in_features, device=dev)).flops
            self._flops[(t, size)] = enc + pol
        return self._flops[(t, size)]

    @torch.no_grad()
    def policy(self, pixels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(T, 3, H, W) uint8 -> the policy's keep mask (T,) and keep probabilities (T,)."""
        dev = next(self._policy.parameters()).device
        logits = self._policy(policy_inputs(self._light(pixels.to(dev))[None], self.variant))
        return argmax_keep(logits)[0].cpu().numpy(), torch.softmax(logits, -1)[0, :, 0].float().cpu().numpy()

    def select(self, view: VideoView, budget: Budget, rng: np.random.Generator) -> Selection:
        if self._policy is None:
            raise RuntimeError("mmSampler is not trained: the runner calls prepare(env) first")
        pixels = view.pixels()
        keep, scores = per_video(self._memo, view, lambda: self.policy(pixels))
        return Selection(np.flatnonzero(keep), scores=scores,
                         own_flops=self.policy_flops(len(pixels), tuple(pixels.shape[-2:])))
