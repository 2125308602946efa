"""Candidate positions of a video: the T frames a sampler chooses among (TSN segment centres),
and decoding a split's candidate pools."""

from __future__ import annotations

import numpy as np
import torch

from samplerbench.data.annotations import VideoSplit
from samplerbench.data.video import read_frames


def segment_centres(t: int, n: int) -> np.ndarray:
    """Centres of n equal segments of range(t): floor((i + 0.5) * t / n) (TSN at test time)."""
    return np.floor((np.arange(n) + 0.5) * t / n).astype(np.int64)


def candidate_pool(num_frames: int, t: int) -> np.ndarray:
    """The T candidate frames of a video: one per equal segment, at its centre; every frame
    when the video is shorter than T."""
    return segment_centres(num_frames, t) if num_frames > t else np.arange(num_frames, dtype=np.int64)


def decode_pools(split: VideoSplit, candidates: int, size) -> torch.Tensor:
    """Every video's T candidate frames, uint8 (videos, T, C, H, W)."""
    return torch.stack([read_frames(r.path, candidate_pool(r.num_frames, candidates), size=size)
                        for r in split.records])
