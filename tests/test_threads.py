"""The intra-op thread policy: the pools' counts, the context's restore, and extraction keeping
``threads - workers`` for the encoder while decode workers run."""

import numpy as np
import pytest
import torch

from samplerbench.data.synth import load_split
from samplerbench.features.extract import Extraction, fill
from samplerbench.features.store import ShardedStore
from samplerbench.kernels.threads import cores, encode_threads, set_threads, thread_counts, threads


@pytest.mark.parametrize("n,workers,want", [(2, 1, 1), (8, 3, 5), (1, 4, 1), (4, 0, 4)])
def test_encode_threads_leave_the_workers_their_cores(n, workers, want):
    assert encode_threads(n, workers) == want


def test_threads_sets_every_pool_and_restores():
    before = thread_counts()
    with threads(1):
        inside = thread_counts()
        assert inside["torch"] == 1 and all(v == 1 for v in inside.values())
    assert thread_counts() == before
    assert 1 <= cores()


def test_set_threads_reaches_numpy_blas():
    before = thread_counts()
    try:
        set_threads(1)
        assert any(k.startswith("blas:") and v == 1 for k, v in thread_counts().items())
    finally:
        set_threads(before["torch"])


def test_extraction_encodes_with_the_cores_the_workers_leave(tmp_path, tiny_root):
    split = load_split(tiny_root, "test")
    seen = []

    def encode(x):
        seen.append(torch.get_num_threads())
        return x.float().mean((2, 3))

    ids = [r.video_id for r in split.records]
    before = torch.get_num_threads()
    with threads(3):
        fill(split, Extraction(4, (32, 32), None, encode, workers=2), ShardedStore.open(tmp_path, "f", {}, ids),
             progress=False)
        assert torch.get_num_threads() == 3  # restored after the extraction
    assert seen and set(seen) == {1}  # 3 threads - 2 workers
    store = ShardedStore.open(tmp_path, "f", {}, ids)
    assert store.get(0)["features"].shape == (4, 3) and np.isfinite(store.get(0)["features"]).all()
    assert torch.get_num_threads() == before
