"""K-centered patch sampling: Seong Hyeon Park, Jihoon Tack, Byeongho Heo, Jung-Woo Ha and
Jinwoo Shin, "K-centered Patch Sampling for Efficient Video Recognition", European Conference on
Computer Vision (ECCV), 2022 (seed BibTeX ``Park_2022_ECCV``). Choose the K spatio-temporal
patch tokens that cover the video best (greedy K-center in Euclidean distance over raw pixels
plus scaled (t, h, w) coordinates), and let a transformer read only those.

- ``kcenter``: greedy K-center over every token of the T candidates from a seeded random
  start (first maximum on ties); ``hybrid_frames`` whole frames (evenly spaced) are kept
  first and K-center fills the rest; ``space_division`` keeps K / (rows * cols) tokens at each
  spatial cell (K-center over that cell's T tokens), so the selection regroups into
  pseudo-frames with one token per cell; ``w_t``, ``w_s`` scale the coordinates.
- ``tokens-uniform``: the baseline of the paper's tables: every token of N uniformly sampled
  frames (TSN centres), the same token budget.
Both are read by a token ViT (``samplerbench.models.tokens``) trained on the train split with the
sampler's own selections; the budget N is in frame-equivalents, K = N * rows * cols tokens.

Deviations:
- Frames are 64x64 with 16x16 patches (4x4 tokens per frame, 512 per 32-frame video) and a
  ViT of width 128, depth 4, trained from a frame-pretraining stage on the embedded data: the
  paper uses 224x224 frames (14x14 tokens, 6272 per video), an ImageNet-pretrained ViT-B/16
  and K = 1568. The presets of ``samplerbench cost`` keep the paper's sizes, and the
  ``kcenter-kinetics400`` suite runs them (``embed = "vit"``).
- On the embedded data a token is the frozen frame reader's feature map pooled over its patch
  (``embed = "encoder-map"``), not a linear embedding of the patch's pixels: the paper's
  pretrained ViT tokens see past their patch after the first block, and a from-scratch or
  per-patch embedding left the uniform-token reader near chance. The encoder is charged once
  per touched frame, so K-center's spread over many frames costs what it touches.
- Every token sampler is compared with its dense reference (every token of the N uniform
  frames) read by its own ViT, so that a difference is the selection's, not the reader's.
- One ViT serves every budget (trained on a random budget of the suite's per batch), where the
  paper trains one per budget.
- The test-time start is seeded per (seed, video, method) (the authors' start is random).
- Space division is our reading of "one token per spatial cell": per cell, K-center over time.
Cost: the incremental K-center, (K - 1) * n * d multiply-adds with n tokens of d = 3 p^2 + 3
values (``farthest_point_macs``), not the authors' n^2 d full distance matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from samplerbench.kernels.farthest import farthest_point_macs, farthest_point_sampling
from samplerbench.models.tokens import TokenGrid, sampler_points
from samplerbench.registry import METHODS
from samplerbench.sampling import Budget, Sampler, Selection, VideoView, segment_centres


def _selection(tokens: np.ndarray, grid: TokenGrid, order: np.ndarray | None, flops: float) -> Selection:
    tokens = np.sort(np.asarray(tokens, dtype=np.int64))
    return Selection(np.unique(grid.frame_of(tokens)), order=order, own_flops=flops, tokens=tokens)


@METHODS.register("kcenter")
@dataclass
class KCenterPatches(Sampler):
    """K-centered patch sampling: greedy K-center over every spatio-temporal patch token (pixels and
    scaled position), read by a token ViT."""

    name = "kcenter"
    observes = frozenset({"pixels"})
    reader = "tokens"
    patch: int = 16
    w_t: float = 1.0
    w_s: float = 1.0
    hybrid_frames: int = 0
    space_division: bool = False

    def select(self, view: VideoView, budget: Budget, rng: np.random.Generator) -> Selection:
        px = torch.as_tensor(view.pixels())
        pts, grid = sampler_points(px, self.patch, self.w_t, self.w_s)
        n_frames = budget.frames(grid.frames)
        k = n_frames * grid.per_frame
        n, d = pts.shape
        if self.space_division:
            return self._per_cell(pts, grid, n_frames, rng)
        forced = []
        if self.hybrid_frames > 0:
            h = min(self.hybrid_frames, n_frames)
            frames = segment_centres(grid.frames, h)
            forced = (frames[:, None] * grid.per_frame + np.arange(grid.per_frame)).reshape(-1).tolist()
        start = forced if forced else int(rng.integers(n))
        order = farthest_point_sampling(pts, k, start=start).numpy()
        return _selection(order, grid, order, float(farthest_point_macs(n, k, d)))

    def _per_cell(self, pts, grid: TokenGrid, n_frames: int, rng) -> Selection:
        chosen, flops = [], 0.0
        for cell in range(grid.per_frame):
            ids = np.arange(grid.frames) * grid.per_frame + cell
            local = farthest_point_sampling(pts[ids], n_frames, start=int(rng.integers(grid.frames))).numpy()
            chosen.append(ids[local])
            flops += farthest_point_macs(grid.frames, n_frames, pts.shape[1])
        return _selection(np.concatenate(chosen), grid, None, flops)


@METHODS.register("tokens-uniform")
@dataclass
class UniformTokens(Sampler):
    """The token baseline: every patch token of N uniform frames, read by a token ViT trained on them."""

    name = "tokens-uniform"
    reader = "tokens"  # observes nothing: the layout (frame size) is enough
    patch: int = 16

    def select(self, view: VideoView, budget: Budget, rng: np.random.Generator) -> Selection:
        if view.frame_size is None:
            raise ValueError("tokens-uniform needs the view's frame_size")
        grid = TokenGrid.of((view.num_candidates, 3, *view.frame_size), self.patch)
        frames = segment_centres(grid.frames, budget.frames(grid.frames))
        tokens = (frames[:, None] * grid.per_frame + np.arange(grid.per_frame)).reshape(-1)
        return _selection(tokens, grid, None, 0.0)
