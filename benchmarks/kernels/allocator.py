"""glibc's malloc with fixed thresholds for a run: blocks up to 64 MiB come from the heap and up
to 256 MiB of freed heap is kept, instead of glibc's defaults (an mmap threshold that starts at
128 KiB and rises with what is freed, to 32 MiB at most; the heap's top returned to the kernel
past twice that). With the defaults a training step's larger temporaries were fresh mappings,
faulted in page by page at every step: the reader's training step (16 videos x 16 frames at
64x64, 2 threads) took a median 347-371 ms over 30 steps, and 270-301 ms with these thresholds
(three runs of each, alternating, on the AVX-512 EPYC, 2026-12-03). Where memory comes from
changes no arithmetic, so no number moves. ``nox -s throughput`` sets the same values through
the environment for its own reasons (stable timings, see the README).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

MMAP_THRESHOLD = 64 << 20
TRIM_THRESHOLD = 256 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
ENV = {"MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD, "MALLOC_TRIM_THRESHOLD_": TRIM_THRESHOLD}


def tune_malloc() -> bool:
    """Set the thresholds in this process (``mallopt``) and, for the processes it starts (spawned
    workers read them at start-up), in its environment; a value the user set in the environment
    is kept. Returns whether glibc took them (False elsewhere: musl, macOS, Windows)."""
    for name, value in ENV.items():
        os.environ.setdefault(name, str(value))
    path = ctypes.util.find_library("c")
    if path is None:
        return False
    try:
        mallopt = ctypes.CDLL(path).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, int(os.environ["MALLOC_MMAP_THRESHOLD_"]))
                and mallopt(_M_TRIM_THRESHOLD, int(os.environ["MALLOC_TRIM_THRESHOLD_"])))
