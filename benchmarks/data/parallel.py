"""A dataset's items made in DataLoader worker processes, in order: how the harness decodes many
videos at once (feature extraction, the classifier's training frames)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

from threadpoolctl import threadpool_limits
from torch.utils.data import DataLoader, Dataset

from samplerbench.data.video import resolve_backend
from samplerbench.seeding import torch_generator


def decode_workers() -> int:
    """Processes for decoding alone (nothing to encode beside it): one per core, at most 8."""
    return max(1, min(8, os.cpu_count() or 2))


def single_thread_worker(_worker_id: int) -> None:
    """``worker_init_fn`` of the harness's worker processes: one thread in every native pool (a
    worker is one core; torch already gives it one intra-op thread). Two workers with two
    OpenBLAS threads each took 12-14 s for an epoch's K-center selections of 800 videos, 6-8 s
    with one."""
    threadpool_limits(1)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` is running (another user's live process counts): whether the
    files a writer of that pid left may still be in use."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def exit_with_parent(parent: int) -> None:
    """``initializer`` of the harness's process pools (``initargs=(os.getpid(),)``): the worker
    exits once ``parent``, the process that started it, is gone. A SIGKILLed run left its
    ``ProcessPoolExecutor`` workers blocked on the call queue for good (every worker holds the
    queue's write end, so its pipe never closes), about 550 MB each; DataLoader workers have torch's
    own watchdog. The parent's pid comes from the parent: a worker still importing when the run
    died is already another process's child when this runs."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def in_order(data: Dataset, workers: int, pin_memory: bool = False) -> Iterator:
    """``data[0], data[1], ...``, made by ``workers`` processes (here, when 0 or fewer than two items).

    The decoder's libraries are loaded here first, so the forked workers inherit them: loading
    them in each worker took 3 s a call. Each worker runs one thread in every pool."""
    n = len(data)
    if workers <= 0 or n < 2:
        yield from (data[k] for k in range(n))
        return
    resolve_backend()
    # its own generator: a DataLoader otherwise draws its workers' base seed from torch's global
    # RNG, and a store filled inside a training shifted that training's dropout
    yield from DataLoader(data, batch_size=None, shuffle=False, num_workers=min(workers, n), pin_memory=pin_memory,
                          prefetch_factor=4, persistent_workers=False,
                          worker_init_fn=single_thread_worker, generator=torch_generator("in-order"))
