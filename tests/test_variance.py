"""EVFR's frame variance indices and Adaptive Frame Sampling against independent references."""

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from samplerbench.kernels.variance import feature_index, flow_index, frame_weights, ssim_index, ssim_pairs
from samplerbench.methods.evfr import afs_select
from samplerbench.registry import METHODS
from samplerbench.sampling import Budget, VideoView, candidate_pool
from samplerbench.seeding import generator


def _smooth_frames(t=6, size=48, seed=0):
    """Blurred noise moving a pixel per frame plus noise: structure SSIM and flow can see."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, (3, size + 2 * t, size + 2 * t))
    k = np.ones(5) / 5
    for ax in (1, 2):
        base = np.apply_along_axis(lambda r: np.convolve(r, k, mode="same"), ax, base)
    frames = [base[:, i : i + size, i : i + size] + rng.normal(0, 3, (3, size, size)) for i in range(t)]
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def _skimage_ssim(a, b):
    return structural_similarity(a.transpose(1, 2, 0), b.transpose(1, 2, 0), channel_axis=2, gaussian_weights=True,
                                 sigma=1.5, use_sample_covariance=False, data_range=255)


@pytest.mark.parametrize("seed", [0, 1])
def test_ssim_matches_scikit_image(seed):
    px = _smooth_frames(seed=seed)
    noise = np.random.default_rng(seed).integers(0, 256, (2, 3, 40, 33), dtype=np.uint8)  # odd sizes, no structure
    for frames in (px, noise):
        got = ssim_index(torch.from_numpy(frames))
        want = [1 - _skimage_ssim(frames[i], frames[i + 1]) for i in range(len(frames) - 1)]
        assert np.max(np.abs(got - np.array(want))) < 1e-4


def test_ssim_of_identical_frames_is_one():
    px = torch.from_numpy(_smooth_frames(t=2))
    assert ssim_pairs(px[:1], px[:1]).item() == pytest.approx(1.0, abs=1e-12)
    assert ssim_index(px[:1]).shape == (0,)


def test_flow_recovers_a_known_shift():
    # each frame is the previous one moved one pixel down and right: magnitude sqrt(2) inside
    px = _smooth_frames(t=4)
    got = flow_index(torch.from_numpy(px))
    assert got.shape == (3,)
    assert np.all(np.abs(got - np.sqrt(2)) < 0.35)
    still = flow_index(torch.from_numpy(np.repeat(px[:1], 3, axis=0)))
    assert np.all(still < 1e-3)


def test_feature_index_is_one_minus_cosine():
    f = np.random.default_rng(0).normal(size=(7, 16))
    want = [1 - f[i] @ f[i + 1] / np.linalg.norm(f[i]) / np.linalg.norm(f[i + 1]) for i in range(6)]
    np.testing.assert_allclose(feature_index(f), want, atol=1e-12)


def test_frame_weights_follow_the_papers_direction():
    # pairs (0,1)=1, (1,2)=3, (2,3)=2: by default frame i weighs its change into frame i + 1 (the
    # paper's "differences from subsequent frames"), the last frame the mean; "previous": the
    # change into frame i, frame 0 the mean
    assert frame_weights(np.array([1.0, 3.0, 2.0])).tolist() == [1.0, 3.0, 2.0, 2.0]
    assert frame_weights(np.array([1.0, 3.0, 2.0]), "previous").tolist() == [2.0, 1.0, 3.0, 2.0]
    with pytest.raises(ValueError, match="direction"):
        frame_weights(np.array([1.0]), "sideways")


def test_afs_rules_hand_worked():
    w = np.array([0.1, 0.5, 0.2, 0.9, 0.5, 0.0])
    rng = np.random.default_rng(0)
    assert afs_select(w, 3, "top", rng).tolist() == [1, 3, 4]  # 0.9, then 0.5 (frame 1 first), 0.5
    # cumulative 0.1 0.6 0.8 1.7 2.2 2.2 / 2.2; quantiles 1/6, 1/2, 5/6 -> frames 1, 3, 4
    assert afs_select(w, 3, "quantile", rng).tolist() == [1, 3, 4]
    a = afs_select(w, 5, "weighted", np.random.default_rng(7))
    b = afs_select(w, 5, "weighted", np.random.default_rng(7))
    assert a.tolist() == b.tolist() == [0, 1, 2, 3, 4]  # a zero weight is never drawn
    assert afs_select(w, 6, "weighted", np.random.default_rng(7)).tolist() == [0, 1, 2, 3, 4, 5]  # ... but fills
    assert afs_select(np.zeros(4), 2, "weighted", np.random.default_rng(0)).size == 2
    with pytest.raises(ValueError, match="rule"):
        afs_select(w, 2, "best", rng)


def test_weighted_rule_follows_the_weights():
    w = np.array([1.0, 1.0, 8.0, 1.0])
    hits = sum(2 in afs_select(w, 1, "weighted", np.random.default_rng(s)).tolist() for s in range(400))
    assert 0.7 < hits / 400 < 0.9  # p = 8 / 11


@pytest.mark.parametrize("index", ["ssim", "flow", "feature"])
def test_evfr_afs_selects_the_changes_and_charges_its_work(index):
    """A static video with one jump between frames 4 and 5: by the paper's direction the last
    frame before the jump (its difference from the subsequent frame) has the largest weight."""
    px = np.repeat(_smooth_frames(t=1), 8, axis=0)
    px[5:] = np.roll(px[5:], 6, axis=(2, 3))
    feats = px.reshape(8, -1).astype(np.float64)[:, ::7] + 1.0
    v = VideoView("v", 8, candidate_pool(8, 8), allowed=frozenset({"pixels", "features"}),
                  providers={"pixels": lambda: torch.from_numpy(px), "features": lambda: feats},
                  provider_flops={"features": 1000.0})
    m = METHODS.get("evfr-afs")(index=index)
    assert m.observes == frozenset({"features" if index == "feature" else "pixels"})
    sel = m.select(v, Budget("count", 1), generator(0, "v", "evfr-afs"))
    assert sel.indices.tolist() == [4]
    prev = METHODS.get("evfr-afs")(index=index, direction="previous")
    assert prev.select(v, Budget("count", 1), generator(0, "v", "evfr-afs")).indices.tolist() == [5]
    assert sel.own_flops > 0
    assert v.charged_flops == (1000.0 if index == "feature" else 0.0)
    # the memo serves the next budget the same weights, and the view is still charged
    v2 = VideoView("v", 8, candidate_pool(8, 8), allowed=v.allowed, providers=v._providers, provider_flops=v._provider_flops)
    again = m.select(v2, Budget("count", 1), generator(0, "v", "evfr-afs"))
    assert again.indices.tolist() == [4] and again.own_flops == sel.own_flops and v2.charged_flops == v.charged_flops
    assert "_memo" not in m.config()
