"""SLLM: Harry Cheng, Yangyang Guo, Liqiang Nie, Zhiyong Cheng and Mohan S. Kankanhalli, "Sample
Less, Learn More: Efficient Action Recognition via Frame Feature Restoration", CoRR
abs/2307.14866, 2023 (ACM Multimedia 2023; seed BibTeX ``DBLP:journals/corr/abs-2307-14866``).

Of the N frames a sampler picks (``base``: uniform/TSN by default, any registered sampler,
e.g. ``sosampler``), only every other one is encoded (positions 0, 2, 4, ...). FFRes restores
the feature between each adjacent pair of encoded features: learned position embeddings on
[a, b], a small transformer run on [a, b] and on [b, a], the two averaged and mean-pooled. The
sequence (encoded and restored, in time order) goes through a temporal transformer head with a
residual, mean-pooled; logits are a scaled cosine similarity to one embedding per class.
Loss: cross-entropy + ``kl_weight`` * KL(softmax(true feature) || softmax(restored feature))
over the feature dimension for the dropped frames, targets without gradient, as the paper.

``mode`` selects what the table compares at the same N sampled frames:
- ``restore``: SLLM (N/2 encoder passes, restorer, head on N - 1 features);
- ``full``: the same head on all N frames (twice the encoder cost, no restorer);
- ``half``: the same head on the N/2 encoded frames alone (same encoder cost, no restoration).
Each mode trains its own head (the paper's baselines train their own model too).

Deviations, and why:
- The encoder is the harness's frozen frame CNN (the paper fine-tunes CLIP ViT-B/32), so the
  head and restorer train on cached features in seconds; widths follow the features (128-d),
  depths are scaled down (head 2 of 6 layers, restorer 1 of 3) for 2 CPU cores.
- The class embeddings are learned parameters, not the text embeddings of class prompts: the
  embedded dataset has no class names worth a text encoder.
- The paper does not say how the last sampled frame is handled; it has no encoded neighbour
  after it, so the sequence holds N - 1 features (N/2 encoded, N/2 - 1 restored).
- The head trains on TSN-random choices of N of the training candidates (N drawn per batch from
  the suite's budgets), whatever the base sampler: one checkpoint serves every base, and the
  base's own selection is used at test.
- Cost per video: the base sampler's own work, the encoder on the encoded frames, and the
  restorer and head counted by fvcore (``gflops_head``).

Measured on synth-events (default suite, heads trained with 3 seeds): ``restore`` and ``half``
are within a seed's spread at every N. A restored feature is a function of its two encoded
neighbours, and this dataset's class is an object seen in a few frames: restoration cannot show
an object that neither neighbour shows. The paper's gains come from actions whose evidence is
spread over time, which synth-events does not model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from samplerbench.cost.flops import count_flops
from samplerbench.features.train_env import TrainEnv, chance_of, top1_in_labels
from samplerbench.models.archs import SLLM_MODES, SLLMHead, SLLMRestorer, sllm_layout
from samplerbench.registry import METHODS
from samplerbench.sampling import Budget, Sampler, Selection, VideoView, segment_centres
from samplerbench.seeding import derive_seed
from samplerbench.training.fit import FitConfig, cached_fit, fit

MODES = SLLM_MODES


def encoded_positions(n: int, mode: str) -> np.ndarray:
    """Which of the n sampled frames the encoder sees: all (full) or every other one
    (:func:`samplerbench.models.archs.sllm_layout`, which the cost presets share)."""
    return sllm_layout(n, mode)[0]


class SLLMModel(nn.Module):
    """Encoded features (B, k, D) -> logits (B, C); with ``restore``, FFRes fills the k - 1 gaps."""

    def __init__(self, dim: int, num_classes: int, mode: str = "restore", depth: int = 2,
                 restorer_depth: int = 1, heads: int = 4, frames: int = 64):
        super().__init__()
        self.mode = mode
        self.restorer = SLLMRestorer(dim, restorer_depth, heads) if mode == "restore" else None
        self.norm = nn.LayerNorm(dim)
        self.head = SLLMHead(dim, depth, heads, frames)
        nn.init.normal_(self.head.pos, std=0.02)
        if self.restorer is not None:
            nn.init.normal_(self.restorer.pos, std=0.02)
        self.classes = nn.Parameter(torch.randn(num_classes, dim) * 0.02)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    def restore(self, enc: torch.Tensor) -> torch.Tensor:
        """(B, k, D) -> (B, k - 1, D): one feature between each adjacent pair."""
        return self.restorer(torch.stack([enc[:, :-1], enc[:, 1:]], dim=2))

    def sequence(self, enc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The head's input in time order (B, 2k - 1, D) with restoration, else ``enc``; and the
        restored features (or None)."""
        if self.restorer is None or enc.shape[1] < 2:
            return enc, None
        b, k, d = enc.shape
        restored = self.restore(enc)
        seq = torch.empty(b, 2 * k - 1, d, dtype=enc.dtype, device=enc.device)
        seq[:, 0::2], seq[:, 1::2] = enc, restored
        return seq, restored

    def classify(self, seq: torch.Tensor) -> torch.Tensor:
        pooled = F.normalize(self.head(self.norm(seq)), dim=-1)
        return self.logit_scale.exp() * pooled @ F.normalize(self.classes, dim=-1).T

    def forward(self, enc: torch.Tensor) -> torch.Tensor:
        return self.classify(self.sequence(enc)[0])


def restoration_kl(restored: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """KL(softmax(true) || softmax(restored)) over the feature dimension, per restored frame."""
    return F.kl_div(F.log_softmax(restored.flatten(0, 1), -1), F.softmax(true.flatten(0, 1).detach(), -1),
                    reduction="batchmean")


@METHODS.register("sllm")
@dataclass
class SLLM(Sampler):
    """SLLM: encode every other sampled frame and restore the features between them (FFRes), read by a
    temporal transformer head."""

    name = "sllm"
    reader = "head"  # its own restorer and temporal head read the encoded frames' features
    learns = True
    mode: str = "restore"
    base: str = "uniform"
    base_params: dict = field(default_factory=dict)
    depth: int = 2
    restorer_depth: int = 1
    heads: int = 4
    kl_weight: float = 1.0
    #: "classifier": class embeddings start from the frozen classifier's fc rows (pretrained class
    #: representations, as the paper's class-prompt text embeddings are); "random": from scratch
    class_init: str = "random"
    epochs: int = 30
    batch: int = 32
    lr: float = 1e-3
    seed: int = 0
    _base: Sampler | None = field(default=None, repr=False, compare=False)
    _model: SLLMModel | None = field(default=None, repr=False, compare=False)
    _flops: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        encoded_positions(1, self.mode)  # validates the mode
        if self.base == "sllm":
            raise ValueError("SLLM cannot be its own base sampler")
        self._base = METHODS.get(self.base)(**self.base_params)
        self.observes = self._base.observes
        self.upper_bound = self._base.upper_bound  # SLLM on the oracle is an upper bound too

    def parts(self) -> tuple[Sampler, ...]:
        return (self._base,)

    def prepare(self, env: TrainEnv) -> dict:
        record = {}
        if self._base.learns:
            record["base"] = self._base.prepare(env)
        head_cfg = {k: v for k, v in self.config().items() if k not in ("base", "base_params")}

        def build():
            model = SLLMModel(env.classifier.cfg.dim, env.train.num_classes, self.mode, self.depth,
                              self.restorer_depth, self.heads, 2 * env.num_candidates)
            if self.class_init == "classifier":
                with torch.no_grad():
                    model.classes.copy_(env.classifier.head.fc.weight)
            elif self.class_init != "random":
                raise ValueError(f"SLLM class_init must be classifier or random, not {self.class_init!r}")
            return model

        self._model, head = cached_fit(f"sllm-{self.mode}", [head_cfg, *env.key_parts(), list(env.budgets), 1],
                                       build, lambda m: self._fit(m, env), env.cache_dir, device=env.device)
        return {**head, **chance_of(env.val), **record}

    def random_init(self, frames: int, num_classes: int, seed: int = 0, dim: int = 128) -> None:
        """Untrained weights (throughput benchmarks: timing does not depend on the weights)."""
        if self._base.learns:
            self._base.random_init(frames, num_classes, seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self._model = SLLMModel(dim, num_classes, self.mode, self.depth, self.restorer_depth, self.heads,
                                    2 * frames).eval()

    def _fit(self, model: SLLMModel, env: TrainEnv) -> dict:
        seed = env.seed_for(self.seed)  # this replicate's batches
        feats = env.features(env.train)
        labels = env.multi_hot(env.train) if env.train.multilabel else env.first_labels(env.train)
        t = env.num_candidates
        budgets = [b for b in env.budgets if 2 <= b <= t] or [min(2, t)]

        def batch_loss(m, ids, epoch, step, _rng):
            rng = np.random.Generator(np.random.PCG64(derive_seed("sllm-batch", seed, epoch, step)))
            n = int(rng.choice(budgets))
            edges = np.linspace(0, t, n + 1)  # TSN: a random candidate in each of n segments
            pos = np.minimum((edges[:-1] + rng.random((len(ids), n)) * np.diff(edges)).astype(np.int64), t - 1)
            x = feats[torch.from_numpy(ids)[:, None], torch.from_numpy(pos)].to(env.device)
            enc = x[:, encoded_positions(n, self.mode)]
            seq, restored = m.sequence(enc)
            logits = m.classify(seq)
            y = labels[torch.from_numpy(ids)].to(env.device)
            loss = F.binary_cross_entropy_with_logits(logits, y) if env.train.multilabel else F.cross_entropy(logits, y)
            if restored is not None and self.kl_weight > 0:
                loss = loss + self.kl_weight * restoration_kl(restored, x[:, 1:2 * enc.shape[1] - 1:2])
            return loss

        cfg = FitConfig(epochs=self.epochs, batch=self.batch, lr=self.lr, weight_decay=0.05, seed=seed,
                        patience=6)
        record = fit(model, cfg, len(env.train), batch_loss, lambda m: head_top1(m, env, budgets),
                     f"SLLM head ({self.mode})", env.progress, initial_score=False)
        return {**record, "val_metric": f"val top-1 on uniform selections, N in {budgets}"}

    def select(self, view: VideoView, budget: Budget, rng: np.random.Generator) -> Selection:
        sel = self._base.select(view, Budget("count", budget.frames(view.num_candidates)), rng)
        keep = encoded_positions(sel.indices.size, self.mode)
        return Selection(sel.indices[keep], scores=sel.scores, own_flops=sel.own_flops)

    def head_logits(self, feats: torch.Tensor) -> torch.Tensor:
        """Encoded frames' features (B, k, D) -> logits (B, C)."""
        if self._model is None:
            raise RuntimeError("SLLM is not trained: the runner calls prepare(env) first")
        return self._model(feats)

    def cost_modules(self) -> dict:
        """FFRes (restore mode) and the temporal head."""
        out = {"head": self._model.head}
        if self._model.restorer is not None:
            out["restorer"] = self._model.restorer
        return out

    def head_flops(self, k: int) -> float:
        """fvcore FLOPs of the restorer and head on k encoded frames."""
        if k not in self._flops:
            dev = next(self._model.parameters()).device
            x = torch.zeros(1, k, self._model.classes.shape[1], device=dev)
            self._flops[k] = count_flops(self._model, x, expect_uncalled=k < 2).flops  # k = 1: no pair to restore
        return self._flops[k]


@torch.no_grad()
def head_top1(model: SLLMModel, env: TrainEnv, budgets) -> float:
    """Val top-1 with TSN test sampling (segment centres of the candidates), averaged over budgets."""
    feats = env.features(env.val)
    accs = []
    for n in budgets:
        pos = segment_centres(env.num_candidates, n)[encoded_positions(n, model.mode)]
        accs.append(top1_in_labels(model(feats[:, torch.from_numpy(pos)].to(env.device)).cpu(), env.val))
    return float(np.mean(accs))
