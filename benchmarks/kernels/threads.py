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
- Small BLAS calls inside a run (the K-center kernels' Gram matrix and matrix-vector products on
  a 64x64 video's 512 tokens): one BLAS thread (:func:`blas_threads_for`). Beside torch's pool,
  a second BLAS thread cost more than it saved: after each call OpenBLAS's worker spins for
  about 2^28 cycles (its THREAD_TIMEOUT), on the core torch's next parallel region needs
  (K-center on 512 tokens: 23-32 ms a video with both pools at 2 threads, 9-11 with either at 1;
  at the paper's 6272 tokens two BLAS threads win, 680 vs 1040 ms).
- Decode/selection worker processes (:func:`samplerbench.data.parallel.in_order`): one thread in
  every pool, as torch gives them one (:func:`samplerbench.data.parallel.single_thread_worker`).
- Benchmarks (``nox -s throughput``): one thread in every pool, unless a benchmark states
  otherwise; each benchmark records the counts it ran with.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from functools import lru_cache

import torch
from threadpoolctl import ThreadpoolController, threadpool_info, threadpool_limits

#: below this many multiply-adds in one kernel call (about 0.1 s on one core), its BLAS calls
#: run on one thread (see the module docstring)
SMALL_BLAS_MACS = 1 << 30


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
    """What the pools are set to now (recorded with every timing and benchmark), one entry per
    loaded library: numpy and scipy each bring their own OpenBLAS, and a key of the API alone
    (``blas:openblas``) kept whichever was listed last; their prefixes are the same too, so the
    key ends with the library's file name."""
    pools = {f"{info['user_api']}:{info['internal_api']}:{os.path.basename(info['filepath'])}": info["num_threads"]
             for info in threadpool_info()}
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


@lru_cache(maxsize=1)
def _controller(modules: int) -> ThreadpoolController:
    """The process's native thread pools, found once per count of imported modules (a scan of the
    loaded libraries takes about 4 ms; a limit through the found controller, 30 us). A library
    loaded after the scan (scipy's OpenBLAS, imported with scikit-learn) comes with new modules
    and a new scan; found once for the process, it was left at the run's count."""
    return ThreadpoolController()


def blas_threads_for(macs: float):
    """A context that runs a kernel's BLAS calls on one thread when its work (``macs``
    multiply-adds in all) is small: a second thread's wake-up and spin cost more than it saves
    there. Large work keeps the run's count. OpenBLAS's sgemm rounds differently with another
    thread count (up to 3e-4 in a 512 x 771 Gram matrix here, its matrix-vector products not at
    all), so a near-tie may select differently; with the count fixed, a small problem's
    selection no longer depends on ``--threads``. (In the default suite this moved the K-center
    ViT's training at one near-tie: its 15 mAP values by at most 6e-5, top-1 and top-5 not.)"""
    return _controller(len(sys.modules)).limit(limits=1, user_api="blas") if macs < SMALL_BLAS_MACS else nullcontext()

