"""MGSampler: motion-guided frame sampling (Zhi et al., "MGSampler: An Explainable Sampling
Strategy for Video Action Recognition", ICCV 2021), training-free.

Motion of each candidate = mean absolute difference to the previous candidate (pixels); its
cumulative sum, normalised, is a distribution over time; frames are taken at N evenly spaced
quantiles of it (the inverse CDF at (i + 0.5) / N: the test-time rule), so stretches with more
motion get more frames.

Deviations:
- Differences are taken between consecutive *candidates* (the T-frame pool), not consecutive raw
  frames, as every sampler here observes the pool; the authors compute them on the decoded clip.
- The first candidate gets the mean motion of the others (it has no predecessor), so that a
  static start is neither forced in nor excluded.
- Two quantiles may land on the same frame; the selection keeps it once (fewer than N frames),
  where the authors' code repeats it. A repeated frame adds cost, not information.
- A video without motion falls back to uniform quantiles (a flat distribution).
- Cost: one FLOP per element for each difference (subtract-and-accumulate, counted like a
  multiply-add): (T - 1) * 3 * H * W at the observed resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from samplerbench.registry import METHODS
from samplerbench.sampling import Budget, Sampler, Selection, VideoView, quantile_frames


def motion(pixels: np.ndarray) -> np.ndarray:
    """(T, C, H, W) uint8 -> (T,) mean absolute difference to the previous frame."""
    x = pixels.astype(np.float32)
    d = np.abs(np.diff(x, axis=0)).mean(axis=(1, 2, 3))
    first = d.mean() if d.size else 0.0
    return np.concatenate([[first], d])


@METHODS.register("mgsampler")
@dataclass
class MGSampler(Sampler):
    """MGSampler: frames at evenly spaced quantiles of the cumulative motion between consecutive
    candidates."""

    name = "mgsampler"
    observes = frozenset({"pixels"})

    def select(self, view: VideoView, budget: Budget, rng: np.random.Generator) -> Selection:
        px = np.asarray(view.pixels())
        m = motion(px)
        flops = float(max(len(px) - 1, 0) * np.prod(px.shape[1:]))
        return Selection(quantile_frames(m, budget.frames(view.num_candidates)), scores=m, own_flops=flops)
