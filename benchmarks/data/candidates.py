"""Candidate positions of a video: the T frames a sampler chooses among (TSN segment centres,
placed in time), and decoding a split's candidate pools."""

from __future__ import annotations

import numpy as np
import torch

from samplerbench.data.annotations import VideoRecord, VideoSplit
from samplerbench.data.media import read_record
from samplerbench.data.video import VideoIndex


def segment_centres(t: int, n: int) -> np.ndarray:
    """Centres of n equal segments of range(t): floor((i + 0.5) * t / n) (TSN at test time)."""
    return np.floor((np.arange(n) + 0.5) * t / n).astype(np.int64)


def candidate_pool(num_frames: int, t: int) -> np.ndarray:
    """The T candidate frames of a video of constant frame rate: one per equal segment, at its
    centre. A video shorter than T repeats frames, as MMAction2's ``SampleFrames(clip_len=1,
    num_clips=T, test_mode=True)`` does (offsets ``int(avg_interval / 2 + i * avg_interval)``
    with ``avg_interval = num_frames / T``), so every pool has T entries."""
    return segment_centres(num_frames, t)


def candidates_in_time(index: VideoIndex, t: int) -> np.ndarray:
    """The segment centres placed in time: the frame on screen at the centre of each of T equal
    time segments, through the presentation timestamps (variable frame rates and trimmed clips
    sample the right frames). Exact integer arithmetic in pts units: on a constant frame rate it
    equals :func:`candidate_pool`."""
    rel = 2 * t * (index.pts - index.pts[0])
    targets = (2 * np.arange(t, dtype=np.int64) + 1) * index.span
    return np.clip(np.searchsorted(rel, targets, side="right") - 1, 0, index.num_frames - 1).astype(np.int64)


def candidates_of(rec: VideoRecord, t: int) -> np.ndarray:
    """A record's T candidate frame numbers: in time when its timestamps are known."""
    if rec.index is not None:
        return candidates_in_time(rec.index, t)
    return candidate_pool(rec.num_frames, t)


def decode_pools(split: VideoSplit, candidates: int, size, resize: int | None = None) -> torch.Tensor:
    """Every video's T candidate frames, uint8 (videos, T, C, H, W) (training splits hold only
    readable videos: :meth:`VideoSplit.readable_only`)."""
    return torch.stack([read_record(r, candidates_of(r, candidates), size=size, resize=resize) for r in split.records])
