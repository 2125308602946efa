"""The intra-op thread policy: how many threads each pool gets, so that a sweep never runs slower
with more threads than with one.

- A run's process: ``--threads N`` (default: every core) for torch *and* for the BLAS/OpenMP
  pools of numpy, scipy and faiss (threadpoolctl), so that two pools do not each take every core.
- While extraction workers run, the main process keeps ``max(1, N - workers)``
  (:func:`encode_threads`): each worker holds a core (torch gives a DataLoader worker one
  intra-op thread; the decoders get one FFmpeg thread there). On CUDA the main process encodes;
  on CPU the workers decode and encode, one per core, and the main process only writes the
  stores. (Before that, on this 2-core machine, the encoder with 2 threads beside a busy decode
  worker ran 40 -> 66 ms a video, slower than with 1.)
- Benchmarks (``nox -s throughput``): one thread in every pool, unless a benchmark states
  otherwise; each benchmark records the counts it ran with.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from threadpoolctl import threadpool_info, threadpool_limits


def cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def encode_threads(threads: int, workers: int) -> int:
    """Intra-op threads of the encoding process while ``workers`` decode workers run beside it."""
    return max(1, threads - max(workers, 0))


def set_threads(n: int) -> None:
    """Every pool of this process to ``n`` threads: torch's and the native BLAS/OpenMP ones."""
    n = max(1, int(n))
    torch.set_num_threads(n)
    threadpool_limits(n)


def thread_counts() -> dict:
    """What the pools are set to now (recorded with every timing and benchmark)."""
    pools = {}
    for info in threadpool_info():
        pools[f"{info['user_api']}:{info['internal_api']}"] = info["num_threads"]
    return {"torch": torch.get_num_threads(), **dict(sorted(pools.items()))}


@contextmanager
def threads(n: int) -> Iterator[None]:
    """``set_threads(n)`` for the block, the previous torch count and native limits restored after."""
    before = torch.get_num_threads()
    with threadpool_limits(max(1, int(n))):
        torch.set_num_threads(max(1, int(n)))
        try:
            yield
        finally:
            torch.set_num_threads(before)
