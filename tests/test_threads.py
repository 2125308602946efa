"""The intra-op thread policy: the pools' counts, the context's restore, ``threads - workers`` for
the main process while extraction workers run, and one thread in each of them."""

import json
import os
import textwrap

import numpy as np
import pytest
import torch

from samplerbench.data.parallel import in_order
from samplerbench.data.synth import load_split
from samplerbench.features.extract import Extraction, fill
from samplerbench.features.store import ShardedStore
from samplerbench.kernels import farthest
from samplerbench.kernels.threads import (
    SMALL_BLAS_MACS,
    blas_threads_for,
    cores,
    encode_threads,
    set_threads,
    thread_counts,
    threads,
)


def _blas_threads() -> int:
    return max(v for k, v in thread_counts().items() if k.startswith("blas:"))


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


def test_small_blas_work_runs_on_one_thread_and_large_keeps_the_runs_count():
    with threads(2):
        with blas_threads_for(SMALL_BLAS_MACS - 1):
            assert _blas_threads() == 1
        assert _blas_threads() == 2  # restored
        with blas_threads_for(SMALL_BLAS_MACS):
            assert _blas_threads() == 2


def test_the_cap_reaches_a_blas_library_loaded_after_its_first_use():
    """scipy brings its own OpenBLAS beside numpy's; loaded (with scikit-learn) after the cap's
    first use, it was outside the cap and ran the kernels' neighbours on the run's count (a fresh
    process, so that scipy is not loaded yet). Each library is its own entry in thread_counts."""
    import subprocess
    import sys

    code = textwrap.dedent("""
        import json, sys
        assert "scipy.linalg" not in sys.modules
        from samplerbench.kernels.threads import blas_threads_for, thread_counts, threads
        with threads(2):
            with blas_threads_for(1):
                pass
            import scipy.linalg  # noqa: F401  (loads libscipy_openblas)
            with blas_threads_for(1):
                inside = thread_counts()
            print(json.dumps([inside, thread_counts()]))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    inside, after = json.loads(out)
    blas = [k for k in inside if k.startswith("blas:")]
    assert len(blas) == 2 and any("scipy" in k for k in blas)  # numpy's and scipy's, both listed
    assert all(inside[k] == 1 for k in blas) and all(after[k] == 2 for k in blas)


@pytest.mark.parametrize("algorithm,k", [("full", 200), ("incremental", 40), ("incremental", 120)])
def test_farthest_point_kernels_run_small_problems_on_one_blas_thread(monkeypatch, algorithm, k):
    """Beside torch's pool a second BLAS thread made K-center on 512 tokens 2x slower (its
    spin-wait after each call takes the core torch needs): the numpy kernels of a small problem
    run BLAS on one thread, and still give the brute-force selection (integer-valued points:
    exact arithmetic whatever the thread count; on real values another count may round a
    near-tie the other way)."""
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 8, size=(512, 771)).astype(np.float32))
    seen = []
    init = farthest._Columns.__init__

    def spy(self, *a, **kw):
        seen.append(_blas_threads())
        init(self, *a, **kw)

    monkeypatch.setattr(farthest._Columns, "__init__", spy)
    with threads(2):
        ours = farthest.farthest_point_sampling(x, k, 3, algorithm=algorithm)
        monkeypatch.setattr("samplerbench.kernels.threads.SMALL_BLAS_MACS", 0)  # no cap: the run's two threads
        two = farthest.farthest_point_sampling(x, k, 3, algorithm=algorithm)
    assert seen == [1, 2]
    assert torch.equal(ours, two) and torch.equal(ours, farthest.brute_force_farthest(x, k, 3))


class _PoolThreads(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.tensor([torch.get_num_threads(), _blas_threads(), os.getpid()])


def test_worker_processes_run_one_thread_in_every_pool():
    """Two workers with the parent's two OpenBLAS threads each doubled an epoch's K-center
    selections on 2 cores: each worker runs one thread in torch's pool and in BLAS's."""
    with threads(2):
        items = list(in_order(_PoolThreads(), workers=2))
        assert _blas_threads() == 2  # the parent's count is its own
    assert {int(t[0]) for t in items} == {1} and {int(t[1]) for t in items} == {1}
    assert os.getpid() not in {int(t[2]) for t in items}
