"""EVFR's farthest point sampling on frame embeddings (Ahmed et al., "Frame selection for
efficient video frame reduction / annotation", CVPR 2023 workshop): greedy FPS from a seeded
random start, so that the selected frames cover the video's appearance space.

Deviations:
- Embeddings are the harness's own frame-encoder features (the authors use DINOv2 or other
  representation models): a sampler observes ``features``, and the encoder on every candidate
  is charged to it.
- Cosine distance is 1 - cos, the paper's intent; the authors' code computes 1 + cos, which
  selects the same point again.
- The start frame comes from the per-(seed, video, method) generator, never the global RNG.
- Not yet here: the Frame Variance Index and Adaptive Frame Sampling (AFS); UFS is ``stride``
  and RFS is ``random``.
Cost: the FPS work, (N - 1) * T * D multiply-adds (``farthest_point_macs``), on top of the
observed features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from samplerbench.farthest import METRICS, farthest_point_macs, farthest_point_sampling
from samplerbench.registry import METHODS
from samplerbench.sampling import Budget, Sampler, Selection, VideoView


@METHODS.register("evfr-fps")
@dataclass
class EVFRFarthestPoint(Sampler):
    name = "evfr-fps"
    observes = frozenset({"features"})
    metric: str = "euclidean"

    def __post_init__(self):
        if self.metric not in METRICS:
            raise ValueError(f"evfr-fps: metric must be one of {METRICS}, not {self.metric!r}")

    def select(self, view: VideoView, budget: Budget, rng: np.random.Generator) -> Selection:
        x = torch.as_tensor(np.asarray(view.features(), dtype=np.float32))
        t, d = x.shape
        n = budget.frames(t)
        order = farthest_point_sampling(x, n, start=int(rng.integers(t)), metric=self.metric).numpy()
        return Selection(np.sort(order), order=order, own_flops=float(farthest_point_macs(t, n, d)))
