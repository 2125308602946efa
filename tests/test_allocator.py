"""The run's malloc thresholds (samplerbench.kernels.allocator): large temporaries are reused from
the heap instead of mapped and faulted in again at every allocation."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CHURN = """
import os, resource, sys, torch
if sys.argv[1] == "tuned":
    from samplerbench.kernels.allocator import tune_malloc
    assert tune_malloc()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):  # 48 MiB: over glibc's largest dynamic mmap threshold (32 MiB); the first
    x = torch.ones(48 << 18); del x  # few grow the heap past torch's small blocks
before = faults()
for _ in range(10):
    x = torch.ones(48 << 18); del x
print(faults() - before, os.environ.get("MALLOC_MMAP_THRESHOLD_"))
"""


def _churn(mode: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", CHURN, mode], env=env, capture_output=True, text=True, check=True)
    faults, threshold = out.stdout.split()
    return int(faults), threshold


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tuned_malloc_reuses_large_blocks_instead_of_faulting_them_in_again():
    """Ten 48 MiB tensors made and dropped one after the other (after twenty that settle the heap):
    with glibc's defaults each is a fresh mapping (12,288 page faults each), with the run's
    thresholds the heap's memory is reused (almost no fault); the processes it starts get the
    thresholds through the environment."""
    default, unset = _churn("default")
    tuned, threshold = _churn("tuned")
    assert default > 10 * 12_000 * 0.9 and unset == "None"
    assert tuned < default / 10 and threshold == str(64 << 20)
