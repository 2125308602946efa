"""A dataset's items made in DataLoader worker processes, in order: how the harness decodes many
videos at once (feature extraction, the classifier's training frames)."""

from __future__ import annotations

import os
from collections.abc import Iterator

from torch.utils.data import DataLoader, Dataset

from samplerbench.data.video import resolve_backend


def decode_workers() -> int:
    """Processes for decoding alone (nothing to encode beside it): one per core, at most 8."""
    return max(1, min(8, os.cpu_count() or 2))


def in_order(data: Dataset, workers: int, pin_memory: bool = False) -> Iterator:
    """``data[0], data[1], ...``, made by ``workers`` processes (here, when 0 or fewer than two items).

    The decoder's libraries are loaded here first, so the forked workers inherit them: loading
    them in each worker took 3 s a call."""
    n = len(data)
    if workers <= 0 or n < 2:
        yield from (data[k] for k in range(n))
        return
    resolve_backend()
    yield from DataLoader(data, batch_size=None, shuffle=False, num_workers=min(workers, n), pin_memory=pin_memory,
                          prefetch_factor=4, persistent_workers=False)
