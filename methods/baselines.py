"""Baselines every sampling table needs, over a candidate pool of T frames.

- ``uniform``: TSN (Wang et al., ECCV 2016) test-time sampling: the pool split into N equal
  segments, the centre of each (MMAction2 ``SampleFrames(test_mode=True)``).
- ``random``: N candidates without replacement from the per-(seed, video, method) generator,
  sorted by time.
- ``dense``: every candidate: the cost upper bound. Ignores the budget.
- ``stride``: EVFR's uniform frame sampling (UFS): every s-th candidate from the first, with
  s = floor(T / N), the first N of them; under a ratio budget r, s = ceil(1 / r): every k-th at
  EVFR's S_k (r = 1/k), and a stride rounded up, never past the budget, at other ratios.
- ``head``: the first N candidates (CLIP4Clip's ``slice_framepos=0``).

Deviations: none in the selection rules. Positions are computed in the candidate pool (as the
papers do with their T=8..32 pools), not in the raw video.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from samplerbench.registry import METHODS
from samplerbench.sampling import Budget, Sampler, Selection, VideoView, segment_centres


@METHODS.register("uniform")
@dataclass
class Uniform(Sampler):
    """TSN test-time sampling: the centre of each of N equal segments of the candidate pool."""

    name = "uniform"

    def select(self, view: VideoView, budget: Budget, rng: np.random.Generator) -> Selection:
        return Selection(segment_centres(view.num_candidates, budget.frames(view.num_candidates)))


@METHODS.register("random")
@dataclass
class Random(Sampler):
    """N candidates drawn without replacement from the per-(seed, video, method) generator, sorted by
    time."""

    name = "random"

    def select(self, view: VideoView, budget: Budget, rng: np.random.Generator) -> Selection:
        t = view.num_candidates
        return Selection(np.sort(rng.choice(t, size=budget.frames(t), replace=False)))


@METHODS.register("dense")
@dataclass
class Dense(Sampler):
    """Every candidate, whatever the budget: the cost upper bound, evaluated once at N = T."""

    name = "dense"
    ignores_budget = True

    def select(self, view: VideoView, budget: Budget, rng: np.random.Generator) -> Selection:
        return Selection(np.arange(view.num_candidates))


@METHODS.register("stride")
@dataclass
class Stride(Sampler):
    """EVFR's uniform frame sampling (UFS): every k-th candidate from the first.

    At a ratio r the stride is s = ceil(1 / r), the smallest stride that keeps at most the
    ratio's share: exactly k at EVFR's S_k (r = 1/k), the paper's V[::k]; a ratio that is not
    a unit fraction rounds the stride up (0.3 -> 4), never down past the budget. At a count N
    the stride is floor(T / N) from the first candidate, so exactly N frames."""

    name = "stride"

    def select(self, view: VideoView, budget: Budget, rng: np.random.Generator) -> Selection:
        t = view.num_candidates
        if budget.kind == "ratio":
            return Selection(np.arange(0, t, max(1, int(np.ceil(1 / budget.value - 1e-9)))))
        n = budget.frames(t)
        return Selection(np.arange(n) * max(1, t // n))


@METHODS.register("head")
@dataclass
class Head(Sampler):
    """The first N candidates (CLIP4Clip's slice_framepos = 0)."""

    name = "head"

    def select(self, view: VideoView, budget: Budget, rng: np.random.Generator) -> Selection:
        return Selection(np.arange(budget.frames(view.num_candidates)))
