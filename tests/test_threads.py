"""The intra-op thread policy: the pools' counts, the context's restore, ``threads - workers`` for
the main process while extraction workers run, and one thread in each of them."""

import os

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


def test_extraction_workers_encode_with_one_thread_each_and_the_main_thread_count_returns(tmp_path, tiny_root):
    """On CPU the extraction workers encode (one torch thread each, in their own processes); the
    main process's count is set for the extraction and restored after it."""
    split = load_split(tiny_root, "test")

    def encode(x):  # each frame's "features": the encoding process's thread count and pid
        return torch.tensor([[float(torch.get_num_threads()), float(os.getpid())]] * len(x))

    ids = [r.video_id for r in split.records]
    before = torch.get_num_threads()
    with threads(3):
        fill(split, Extraction(4, (32, 32), None, encode, workers=2), ShardedStore.open(tmp_path, "f", {}, ids),
             progress=False)
        assert torch.get_num_threads() == 3  # restored after the extraction
    store = ShardedStore.open(tmp_path, "f", {}, ids)
    feats = np.concatenate([store.get(i)["features"] for i in range(len(ids))])
    assert feats.shape == (4 * len(ids), 2)
    assert set(feats[:, 0]) == {1.0}  # one thread per worker
    assert os.getpid() not in set(feats[:, 1].astype(int))  # encoded in the workers
    assert torch.get_num_threads() == before
