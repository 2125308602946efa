"""The text-video retrieval model: CLIP4Clip's mean pooling (Luo et al., 2021) on the harness's
frozen frame encoder, and a small text encoder over the captions' closed vocabulary.

Video: each selected frame's frozen features, a linear map to the joint width, L2-normalised,
a masked mean over the selected frames, normalised again; text: word embeddings + positions, a
small pre-LayerNorm transformer, masked mean, a linear map, normalised; similarity: the cosine.
Trained with the symmetric InfoNCE loss on the training split (one random caption per video
per step), early stopping on the validation split's mean R@1 of both directions; cached like
every learned piece (:func:`samplerbench.training.fit.cached_fit`).

Deviations from CLIP4Clip, and why: the frame encoder is frozen (CLIP is fine-tuned there) and
only a linear map trains on top, so training runs on cached features in seconds; the text
encoder is trained from scratch on the generated captions (no pretrained CLIP text tower can be
downloaded). Each step keeps a random subset of each video's candidates (its size drawn per
video), so that the model scores any sampler's selection, not only the full pool.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from samplerbench.data.captions import VOCAB, tokenize
from samplerbench.devices import device_of
from samplerbench.metrics.ranking import retrieval_metrics
from samplerbench.models.archs import Transformer
from samplerbench.seeding import derive_seed
from samplerbench.training.fit import FitConfig, cached_fit, fit

PAD, UNK = 0, 1


class Tokenizer:
    """Words of the closed caption vocabulary -> ids (0 padding, 1 unknown)."""

    def __init__(self, vocab=VOCAB, max_len: int = 32):
        self.index = {w: i + 2 for i, w in enumerate(vocab)}
        self.max_len = max_len

    def __len__(self) -> int:
        return len(self.index) + 2

    def __call__(self, texts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), self.max_len, dtype=torch.long)
        for i, t in enumerate(texts):
            ids = [self.index.get(w, UNK) for w in tokenize(t)][: self.max_len]
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out


@dataclass(frozen=True)
class RetrievalConfig:
    width: int = 128
    text_depth: int = 2
    heads: int = 4
    epochs: int = 40
    batch: int = 64
    lr: float = 2e-3
    patience: int = 8
    seed: int = 0


class RetrievalModel(nn.Module):
    def __init__(self, feat_dim: int, cfg: RetrievalConfig, vocab_size: int, max_len: int = 32):
        super().__init__()
        self.frame_proj = nn.Linear(feat_dim, cfg.width)
        self.word = nn.Embedding(vocab_size, cfg.width, padding_idx=PAD)
        self.pos = nn.Parameter(torch.randn(max_len, cfg.width) * 0.02)
        self.text = Transformer(cfg.width, cfg.text_depth, cfg.heads)
        self.text_norm = nn.LayerNorm(cfg.width)
        self.text_proj = nn.Linear(cfg.width, cfg.width)
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))

    def frame_proj_flops(self, n: int) -> int:
        """Multiply-adds of projecting n frames' features (fvcore's convention)."""
        return n * self.frame_proj.in_features * self.frame_proj.out_features

    def frame_embeddings(self, feats: torch.Tensor) -> torch.Tensor:
        """(..., D) frozen frame features -> (..., W) L2-normalised frame embeddings."""
        return F.normalize(self.frame_proj(feats), dim=-1)

    def video_embed(self, feats: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """CLIP4Clip meanP: (B, T, D) features and a (B, T) keep mask -> (B, W) unit vectors.
        The mask may be soft (a Gumbel straight-through keep decision carries gradients)."""
        e = self.frame_embeddings(feats)
        m = torch.ones(e.shape[:2], device=e.device) if mask is None else mask.to(e.dtype)
        pooled = (e * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp_min(1e-6)
        return F.normalize(pooled, dim=-1)

    def text_embed(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids -> (B, W) unit vectors."""
        keep = (ids != PAD).float()
        x = self.word(ids) + self.pos[: ids.shape[1]]
        x = self.text_norm(self.text(x))
        pooled = (x * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp_min(1.0)
        return F.normalize(self.text_proj(pooled), dim=-1)


class ClipRetrieval(nn.Module):
    """CLIP4Clip's parameter-free mean pooling (meanP) on the real CLIP towers (mmSampler's
    setting): the video embedding is the mean of its kept frames' unit image embeddings,
    renormalised; a caption is CLIP's text embedding. Nothing trains; the towers come from the
    pretrained weights or a CLIP4Clip fine-tuned checkpoint."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.clip = clip
        self.logit_scale = clip.logit_scale

    def frame_proj_flops(self, n: int) -> int:
        return 0  # the image tower's projection is part of the encoder's count

    def video_embed(self, feats: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        e = F.normalize(feats.float(), dim=-1)
        m = torch.ones(e.shape[:2], device=e.device) if mask is None else mask.to(e.dtype)
        return F.normalize((e * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp_min(1e-6), dim=-1)

    def text_embed(self, ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.encode_text(ids).float(), dim=-1)


def load_clip4clip(clip: nn.Module, path) -> str:
    """Load a CLIP4Clip fine-tuned checkpoint into the CLIP towers (its keys are ``clip.*``; the
    rest, such as a temporal transformer meanP does not use, is ignored). Returns its sha256."""
    from pathlib import Path

    from samplerbench.models.pretrained import WeightsError, load_state_dict, weights_digest

    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"{p}: no CLIP4Clip checkpoint there ([model] retrieval_weights)")
    sd = {k.removeprefix("clip."): v for k, v in load_state_dict(p).items() if k.startswith("clip.")}
    missing, _ = clip.load_state_dict(sd, strict=False)
    if not sd or missing:
        raise WeightsError(f"{p}: not a CLIP4Clip checkpoint of this CLIP ({len(missing)} missing keys)")
    return weights_digest(p)


def info_nce(video: torch.Tensor, text: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of matching (video, text) pairs."""
    logits = scale * video @ text.T
    target = torch.arange(len(video), device=video.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


@dataclass
class CaptionSet:
    """A split's captions: token ids (Q, L) and, per caption, its video's index in the split."""

    ids: torch.Tensor
    video: np.ndarray
    texts: list[str]

    @classmethod
    def of(cls, pairs: list[tuple[str, str]], video_ids: list[str], tokenizer: Tokenizer) -> CaptionSet:
        index = {v: i for i, v in enumerate(video_ids)}
        missing = sorted({v for v, _ in pairs} - set(index))
        if missing:
            raise ValueError(f"captions of unknown videos: {missing[:3]}")
        return cls(tokenizer([c for _, c in pairs]), np.array([index[v] for v, _ in pairs]), [c for _, c in pairs])


@torch.no_grad()
def caption_embeddings(model: RetrievalModel, captions: CaptionSet, device: torch.device | str) -> torch.Tensor:
    """(captions, D) unit text embeddings, 512 captions per call, on ``device``."""
    return torch.cat([model.text_embed(c.to(device)) for c in captions.ids.split(512)])


@torch.no_grad()
def similarity(model: RetrievalModel, video_emb: torch.Tensor, captions: CaptionSet,
               text: torch.Tensor | None = None) -> np.ndarray:
    """(captions, videos) cosine similarities (the captions embedded where the videos' embeddings
    are). ``text``: the captions' embeddings already computed (a frozen model's: once per run,
    not once per cell or epoch)."""
    text = caption_embeddings(model, captions, video_emb.device) if text is None else text.to(video_emb.device)
    return (text @ video_emb.T).double().cpu().numpy()


def train_retrieval_model(features, captions: CaptionSet, val_captions: CaptionSet, feat_dim: int, num_videos: int,
                          candidates: int, cfg: RetrievalConfig, key_parts: list, cache_dir, progress: bool = True,
                          vocab_size: int | None = None, device: torch.device | str = "cpu"):
    """Train (or load) the retrieval model on frozen features, on ``device``. ``features()`` gives
    the train and val splits' (videos, T, D) features (kept where they are; each batch moves) and
    is called only when the model must train (a cached model costs no decoding); ``vocab_size``:
    the tokenizer's (default: the embedded captions' closed vocabulary)."""
    tokenizer_size = int(max(captions.ids.max(), val_captions.ids.max())) + 1
    vocab = vocab_size or len(VOCAB) + 2
    if tokenizer_size > vocab:
        raise ValueError("caption ids outside the vocabulary")
    per_video = [np.flatnonzero(captions.video == v) for v in range(num_videos)]
    t = candidates
    data: dict[str, torch.Tensor] = {}

    def build():
        return RetrievalModel(feat_dim, cfg, vocab, captions.ids.shape[1])

    def batch_loss(m, ids, epoch, step, _rng):
        rng = np.random.Generator(np.random.PCG64(derive_seed("retrieval-batch", cfg.seed, epoch, step)))
        caps = [per_video[i][int(rng.integers(len(per_video[i])))] for i in ids]
        sizes = rng.integers(1, t + 1, size=len(ids))
        mask = torch.from_numpy(rng.random((len(ids), t)).argsort(1) < sizes[:, None]).float()
        dev = device_of(m)
        v = m.video_embed(data["train"][torch.from_numpy(ids)].to(dev), mask.to(dev))
        text = m.text_embed(captions.ids[torch.tensor(caps)].to(dev))
        return info_nce(v, text, m.logit_scale.exp().clamp(max=100))

    def validate(m):
        sim = similarity(m, m.video_embed(data["val"].to(device_of(m))), val_captions)
        r = retrieval_metrics(sim, val_captions.video)
        return (r["t2v_R@1"] + r["v2t_R@1"]) / 200

    def train(m):
        data["train"], data["val"] = features()
        fcfg = FitConfig(epochs=cfg.epochs, batch=cfg.batch, lr=cfg.lr, weight_decay=0.05, patience=cfg.patience,
                         seed=cfg.seed)
        return {**fit(m, fcfg, num_videos, batch_loss, validate, "retrieval model", progress, initial_score=False),
                "val_metric": "mean of t2v and v2t R@1 on the validation split, all candidates"}

    return cached_fit("retrieval", [asdict(cfg), *key_parts, VOCAB, 1], build, train, cache_dir, device=device)
