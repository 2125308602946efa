"""Oracle: the semi-optimal policy of SOSampler (Junho Lee, Jeongwoo Shin, Seung Woo Ko, Seongsu
Ha and Joonseok Lee, "Scalable Frame Sampling for Video Classification: A Semi-Optimal Policy
Approach with Reduced Search Space", arXiv:2409.05260, 2024; BMVC 2024), computed with the labels. An upper bound, never a baseline.

Each candidate alone goes through the frozen classifier; its importance is the probability of
the true class; the top N by importance are kept, sorted by time (SOSampler's selection rule).
For a multi-label video the importance is the largest probability over its true classes, each
class's probability a sigmoid as the reader computes it (softmax on single-label data).

Cost: the classifier on every candidate is charged to the sampler (it is work the policy does).
Deviations: none; the paper's softmax over frames with a temperature does not change a top-N.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from samplerbench.registry import METHODS
from samplerbench.sampling import Budget, Sampler, Selection, VideoView, top_n_sorted


@METHODS.register("oracle")
@dataclass
class Oracle(Sampler):
    """The semi-optimal policy with the labels: the N candidates the frozen classifier finds most
    likely to be the true class (an upper bound)."""

    name = "oracle"
    observes = frozenset({"frame_probs", "label"})
    upper_bound = True
    #: "true" (probability of the true class) or "max" (the maximum class probability).
    target: str = "true"

    def select(self, view: VideoView, budget: Budget, rng: np.random.Generator) -> Selection:
        probs = view.frame_probs()
        if self.target == "max":
            scores = probs.max(axis=1)
        else:
            scores = probs[:, view.label().astype(bool)].max(axis=1)
        return Selection(top_n_sorted(scores, budget.frames(view.num_candidates)), scores=scores)
