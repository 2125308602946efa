"""The papers' own architectures, built with random weights for cost accounting.

Weights do not change FLOPs, so every module here is built from its layout alone and counted at
the paper's input shape. Layouts follow the papers and their code:

- ``resnet50``, ``mobilenet_v2``: torchvision's (SOSampler's classifier and scorer; mmSampler's
  policy backbone). Temporal shift (SOSampler's TSM scorer) moves channels and costs no FLOPs.
- ``clip-vit-b32``, ``clip-vit-b16``: CLIP's visual tower (patch conv without bias, class token,
  position embeddings, pre-LayerNorm, 12 residual attention blocks, LayerNorm, projection).
- ``TokenViT``: a ViT-B/16 over K selected spatio-temporal patch tokens (K-centered patch
  sampling): a linear patch embedding, a position embedding per (t, h, w), joint attention.
- ``MMSamplerPolicy``: Linear(1280 -> 512) + frame position embeddings, a 1-layer transformer
  (width 512, 8 heads) across frames, MLP 512 -> 1024 -> 2.
- ``SLLMRestorer``: per adjacent pair of encoded features, a 3-layer transformer (width 512,
  8 heads) on [a, b] and [b, a], averaged and mean-pooled: one restored feature per pair.
- ``SLLMHead``: SLLM's 6-layer temporal transformer over the frame features, mean-pooled.

Attention goes through ``F.scaled_dot_product_attention`` (counted by the handler in
``cost.py``), not ``nn.MultiheadAttention``, whose fused inference path no counter sees.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention; ``causal``: position i attends to positions <= i only."""

    def __init__(self, dim: int, heads: int, causal: bool = False):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-LayerNorm transformer block (CLIP's ResidualAttentionBlock layout), MLP ratio 4."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4, causal: bool = False):
        super().__init__()
        self.ln_1, self.attn = nn.LayerNorm(dim), Attention(dim, heads, causal)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Sequential):
    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: int = 4, causal: bool = False):
        super().__init__(*[Block(dim, heads, mlp_ratio, causal) for _ in range(depth)])


class CLIPVisual(nn.Module):
    """CLIP's VisionTransformer: (M, 3, R, R) images -> (M, out_dim) embeddings."""

    def __init__(self, patch: int = 32, resolution: int = 224, width: int = 768, depth: int = 12,
                 heads: int = 12, out_dim: int = 512):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, patch, patch, bias=False)
        grid = resolution // patch
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(torch.zeros(grid * grid + 1, width))
        self.ln_pre, self.transformer, self.ln_post = nn.LayerNorm(width), Transformer(width, depth, heads), \
            nn.LayerNorm(width)
        self.proj = nn.Linear(width, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = self.ln_pre(torch.cat([cls, x], dim=1) + self.positional_embedding)
        x = self.transformer(x)
        return self.proj(self.ln_post(x[:, 0]))


class TokenViT(nn.Module):
    """ViT-B/16 over K selected patch tokens: (B, K, 3*16*16) pixels + (B, K) position ids ->
    (B, classes). Position embeddings are looked up per token (a gather, no FLOPs)."""

    def __init__(self, patch: int = 16, positions: int = 32 * 196, width: int = 768, depth: int = 12,
                 heads: int = 12, num_classes: int = 400):
        super().__init__()
        self.embed = nn.Linear(3 * patch * patch, width)
        self.pos = nn.Embedding(positions, width)
        # ViT's initialisation (truncated normal, std 0.02; timm's trunc_normal_): nn.Embedding's
        # N(0, 1) made positions about 20 times a token's content, so a reader whose positions
        # carry nothing (every token of uniform frames) stayed at chance
        nn.init.trunc_normal_(self.pos.weight, std=0.02)
        self.cls = nn.Parameter(torch.zeros(width))
        self.transformer, self.norm = Transformer(width, depth, heads), nn.LayerNorm(width)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.pos(pos)
        x = torch.cat([self.cls.expand(x.shape[0], 1, -1), x], dim=1)
        return self.fc(self.norm(self.transformer(x))[:, 0])


class MMSamplerPolicy(nn.Module):
    """mmSampler's policy on precomputed MobileNetV2 features: (B, T, 1280) -> (B, T, 2) logits.
    ``causal`` (the paper's "given the current and past frame observations"): frame t's decision
    sees frames 0..t only; the mask changes no FLOP count (fvcore counts the dense product)."""

    def __init__(self, in_dim: int = 1280, width: int = 512, heads: int = 8, frames: int = 32, causal: bool = True):
        super().__init__()
        self.proj = nn.Linear(in_dim, width)
        self.pos = nn.Parameter(torch.zeros(frames, width))
        self.transformer = Transformer(width, 1, heads, causal=causal)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.ReLU(), nn.Linear(2 * width, 2))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = self.proj(feats) + self.pos[: feats.shape[1]]
        return self.mlp(self.transformer(x))


SLLM_MODES = ("restore", "full", "half")


def sllm_layout(sampled: int, mode: str = "restore") -> tuple[np.ndarray, int, int]:
    """How SLLM pairs the frames, shared by the runtime method and the cost presets: of
    ``sampled`` frames, the encoded positions (every other one from the first; all in ``full``),
    the restored pairs (one between each two adjacent encoded frames: k - 1, none after the
    last), and the length of the sequence the head reads (encoded + restored)."""
    if mode not in SLLM_MODES:
        raise ValueError(f"SLLM mode must be one of {SLLM_MODES}, not {mode!r}")
    enc = np.arange(sampled) if mode == "full" else np.arange(0, sampled, 2)
    pairs = max(len(enc) - 1, 0) if mode == "restore" else 0
    return enc, pairs, len(enc) + pairs


class SLLMRestorer(nn.Module):
    """SLLM's FFRes: (B, P, 2, D) adjacent encoded pairs -> (B, P, D) restored features."""

    def __init__(self, dim: int = 512, depth: int = 3, heads: int = 8):
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(2, dim))
        self.transformer = Transformer(dim, depth, heads)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        b, p, _, d = pairs.shape
        x = pairs.reshape(b * p, 2, d)
        # [a, b] and [b, a], each with the two position embeddings (added after the swap: added
        # before it, the transformer, equivariant to the order, would compute the same thing twice)
        both = self.transformer(torch.cat([x, x.flip(1)], dim=0) + self.pos)
        fwd, bwd = both.split(b * p)
        return ((fwd + bwd) / 2).mean(dim=1).view(b, p, d)


class SLLMHead(nn.Module):
    """SLLM's temporal head: a 6-layer transformer with a residual, mean-pooled: (B, N, D) -> (B, D)."""

    def __init__(self, dim: int = 512, depth: int = 6, heads: int = 8, frames: int = 32):
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(frames, dim))
        self.transformer = Transformer(dim, depth, heads)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return (feats + self.transformer(feats + self.pos[: feats.shape[1]])).mean(dim=1)


def resnet50() -> nn.Module:
    from torchvision.models import resnet50 as build

    return build(weights=None)


def mobilenet_v2_features() -> nn.Module:
    """MobileNetV2's backbone and global pool: images -> 1280-d features (the scorer's and the
    policy's input; SOSampler's Linear(1280 -> 1) on top is added by the caller)."""
    from torchvision.models import mobilenet_v2

    net = mobilenet_v2(weights=None)
    return nn.Sequential(net.features, nn.AdaptiveAvgPool2d(1), nn.Flatten())


class Scorer(nn.Module):
    """SOSampler's scorer: MobileNetV2 features, Linear(1280 -> 1) per candidate."""

    def __init__(self):
        super().__init__()
        self.backbone, self.fc = mobilenet_v2_features(), nn.Linear(1280, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone(x))
