"""The project's hot paths side by side with what a user would otherwise run (``versus``: paired
rounds in one run, medians), each checked to give the same output:

- decoding an H.264 clip of 640x360, 396 frames, at two keyframe intervals (12 and 250), all
  frames and 8 spread ones, at full size: ``read_frames`` (its backend chosen by ``auto``; the
  per-video index kept, as the runner keeps it) against torchcodec's and decord's own readers
  (one thread each, as ours) and plain PyAV;
- farthest point sampling at 10k x 768 (K = 256) against FAISS's per-step distance kernel and
  the row-major numpy/torch forms, at 100k x 512 (K = 64), and EVFR's published FAISS loop
  (an index of the selected frames searched by every frame at each step), reimplemented here
  from its description;
- K-center at the ECCV paper's setting (6272 tokens of 771 values, K = 1568) against the
  authors' full ``torch.cdist`` matrix then greedy, reimplemented from their description;
- the frame encoder over 16 videos through the extraction's ``encode_videos`` against a bare loop;
- a training step of the frame encoder (channels_last on the CPU) against the same layers in NCHW;
- the token ViT reading a cell's videos in one batch against one call a video;
- K-center selections on 64x64 videos (512 tokens) at the run's threads (every core), its small
  BLAS calls on one thread, against the same with BLAS on every core beside torch's pool.

One thread in every pool (``conftest.pytest_configure``); the table is printed at the end.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samplerbench.data.video import index_video, read_frames, write_video
from samplerbench.kernels.farthest import farthest_point_sampling
from samplerbench.kernels.threads import cores, threads

CLIP_FRAMES, CLIP_H, CLIP_W = 396, 360, 640


def _content(n: int, h: int, w: int) -> np.ndarray:
    """Moving gradients and a moving square: compressible like real footage, not noise. In uint8
    arithmetic, which wraps modulo 256 as the formulas ask (int64 intermediates of the whole clip
    took 29 s of the session's setup on this VM)."""
    t = np.arange(n, dtype=np.int64)
    y, x = np.mgrid[0:h, 0:w]
    frames = np.empty((n, h, w, 3), dtype=np.uint8)
    for c, (base, step) in enumerate(((x, 3), (y * 2, 1), ((x + y) // 2, 5))):
        plane = (base % 256).astype(np.uint8)
        for i in range(n):
            np.add(plane, np.uint8(step * t[i] % 256), out=frames[i, :, :, c])
    for i in range(n):
        r, c = (i * 3) % (h - 60), (i * 7) % (w - 60)
        frames[i, r:r + 60, c:c + 60] = 255 - frames[i, r:r + 60, c:c + 60]
    return frames


@pytest.fixture(scope="module", params=[12, 250], ids=lambda g: f"gop{g}")
def h264_clip(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("peers") / f"clip-gop{request.param}.mp4"
    write_video(path, _content(CLIP_FRAMES, CLIP_H, CLIP_W), fps=25, gop=request.param, crf=23)
    return request.param, path, index_video(path)


def _peers_decode(path: str, idx: np.ndarray) -> dict:
    peers = {}
    try:
        from torchcodec.decoders import VideoDecoder

        peers["torchcodec"] = lambda: VideoDecoder(path, dimension_order="NHWC", num_ffmpeg_threads=1).get_frames_at(
            indices=idx.tolist()).data
    except Exception:  # noqa: BLE001  not installed, or FFmpeg's libraries missing
        pass
    try:
        import decord

        peers["decord"] = lambda: torch.from_numpy(decord.VideoReader(path, num_threads=1).get_batch(idx.tolist()).asnumpy())
    except ImportError:
        pass
    return peers


@pytest.mark.parametrize("mode", ["all", "sparse8"])
def test_decode_vs_peers(versus, h264_clip, mode):
    gop, path, index = h264_clip
    idx = np.arange(CLIP_FRAMES) if mode == "all" else np.linspace(0, CLIP_FRAMES - 1, 8).astype(np.int64)
    peers = _peers_decode(str(path), idx)
    if not peers:
        pytest.skip("no peer decoder installed (torchcodec, decord)")
    ours, theirs = versus(f"decode {mode} of {CLIP_FRAMES} frames, {CLIP_W}x{CLIP_H}, keyint {gop}",
                          lambda: read_frames(path, idx, index=index, threads=1), peers, rounds=5)
    for name, out in theirs.items():
        assert torch.equal(ours.permute(0, 2, 3, 1), out), name


def test_decode_pyav_fallback_vs_peers(versus, h264_clip):
    """The fallback backend alone (what a machine without FFmpeg's libraries runs), sparse reads."""
    gop, path, index = h264_clip
    idx = np.linspace(0, CLIP_FRAMES - 1, 8).astype(np.int64)
    peers = _peers_decode(str(path), idx)
    if not peers:
        pytest.skip("no peer decoder installed (torchcodec, decord)")
    ours, theirs = versus(f"decode sparse8, keyint {gop}, PyAV fallback",
                          lambda: read_frames(path, idx, index=index, threads=1, backend="pyav"), peers, rounds=9)
    for name, out in theirs.items():
        assert torch.equal(ours.permute(0, 2, 3, 1), out), name


def faiss_kernel_fps(x: np.ndarray, k: int, start: int, metric: str = "euclidean") -> list[int]:
    """Greedy FPS with FAISS's per-step distance kernel (``fvec_L2sqr_ny`` or
    ``fvec_inner_products_ny`` on normalised rows) and numpy's running minimum."""
    import faiss

    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    n, d = x.shape
    step = faiss.fvec_L2sqr_ny if metric == "euclidean" else faiss.fvec_inner_products_ny
    dis = np.empty(n, np.float32)
    xp, dp = faiss.swig_ptr(x), faiss.swig_ptr(dis)

    def dist(c):
        step(dp, faiss.swig_ptr(x[c]), xp, d, n)
        return dis if metric == "euclidean" else 1 - dis

    out = [start]
    mind = dist(start).copy()
    mind[start] = -1
    for _ in range(k - 1):
        c = int(mind.argmax())
        out.append(c)
        np.minimum(mind, dist(c), out=mind)
        mind[out] = -1
    return out


def evfr_faiss_loop(x: np.ndarray, k: int, start: int) -> list[int]:
    """EVFR's published loop: an ``IndexFlatL2`` of the frames chosen so far, searched by every
    frame for its nearest chosen one at each step; the frame farthest from it is added."""
    import faiss

    index = faiss.IndexFlatL2(x.shape[1])
    out = [start]
    index.add(x[[start]])
    for _ in range(k - 1):
        dist, _ = index.search(x, 1)
        dist = dist[:, 0].copy()
        dist[out] = -1
        c = int(dist.argmax())
        out.append(c)
        index.add(x[[c]])
    return out


def numpy_rowmajor_fps(x: np.ndarray, k: int, start: int) -> list[int]:
    """What one writes first in numpy: ``x @ c`` on the row-major (n, d) points each step."""
    sq = np.einsum("ij,ij->i", x, x)
    out = [start]
    mind = sq - 2 * (x @ x[start]) + sq[start]
    mind[start] = -1
    for _ in range(k - 1):
        c = int(mind.argmax())
        out.append(c)
        np.minimum(mind, sq - 2 * (x @ x[c]) + sq[c], out=mind)
        mind[out] = -1
    return out


def _points(n: int, d: int) -> np.ndarray:
    return np.random.default_rng(n + d).normal(size=(n, d)).astype(np.float32)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_fps_10k_vs_faiss_kernel(versus, metric):
    pytest.importorskip("faiss")
    x = _points(10_000, 768)
    xt = torch.from_numpy(x)
    peers = {"FAISS kernel": lambda: faiss_kernel_fps(x, 256, 0, metric)}
    if metric == "euclidean":
        peers["numpy row-major"] = lambda: numpy_rowmajor_fps(x, 256, 0)
    ours, theirs = versus(f"FPS 10k x 768, K=256, {metric}", lambda: farthest_point_sampling(xt, 256, 0, metric).tolist(),
                          peers)
    for name, out in theirs.items():
        assert out == ours, name


def test_fps_100k_vs_faiss_kernel(versus):
    """At the process's default threads (every core, the policy of a run), as the issue's row:
    memory-bound, BLAS's sweep uses both cores; FAISS's kernel is single-threaded by design."""
    pytest.importorskip("faiss")
    x = _points(100_000, 512)
    xt = torch.from_numpy(x)
    with threads(cores()):
        ours, theirs = versus(f"FPS 100k x 512, K=64, {cores()} threads",
                              lambda: farthest_point_sampling(xt, 64, 0).tolist(),
                              {"FAISS kernel": lambda: faiss_kernel_fps(x, 64, 0),
                               "numpy row-major": lambda: numpy_rowmajor_fps(x, 64, 0)}, rounds=3)
    for name, out in theirs.items():
        assert out == ours, name


def test_fps_vs_evfr_faiss_loop(versus):
    pytest.importorskip("faiss")
    x = _points(10_000, 768)
    xt = torch.from_numpy(x)
    ours, theirs = versus("FPS 10k x 768, K=256: EVFR's published FAISS loop",
                          lambda: farthest_point_sampling(xt, 256, 0).tolist(),
                          {"EVFR FAISS loop": lambda: evfr_faiss_loop(x, 256, 0)}, rounds=2)
    assert theirs["EVFR FAISS loop"] == ours


def authors_kcenter(x: torch.Tensor, k: int, start: int) -> list[int]:
    """K-centered patch sampling's reference code, from its description: the full ``cdist``
    matrix of every token pair, then the greedy over its rows."""
    full = torch.cdist(x, x)
    mind = full[start].clone()
    out = [start]
    mind[start] = -1
    for _ in range(k - 1):
        c = int(torch.argmax(mind))
        out.append(c)
        torch.minimum(mind, full[c], out=mind)
        mind[c] = -1
    return out


def _near_tie_agreement(x: np.ndarray, a: list[int], b: list[int]) -> None:
    """Two greedy orders agree up to float ties: where they first differ, both points are at
    the same float64 distance from the points chosen before, to float32 rounding."""
    if a == b:
        return
    i = next(j for j in range(len(a)) if a[j] != b[j])
    x64 = x.astype(np.float64)
    sq = np.einsum("ij,ij->i", x64, x64)
    d = (sq[None, :] - 2 * (x64[a[:i]] @ x64.T) + sq[a[:i], None]).min(0)
    assert abs(d[a[i]] - d[b[i]]) <= 1e-5 * d.max(), (i, d[a[i]], d[b[i]])


def test_kcenter_paper_setting_vs_authors_cdist(versus):
    x = _points(6272, 771)
    xt = torch.from_numpy(x)
    ours, theirs = versus("K-center 6272 x 771, K=1568 (ECCV setting)",
                          lambda: farthest_point_sampling(xt, 1568, 0).tolist(),
                          {"authors' full cdist": lambda: authors_kcenter(xt, 1568, 0)}, rounds=5)
    _near_tie_agreement(x, ours, theirs["authors' full cdist"])


def test_encoder_vs_bare_loop(versus):
    from samplerbench.features.extract import encode_videos
    from samplerbench.models.encoders import FrameClassifier, ModelConfig

    torch.manual_seed(0)
    model = FrameClassifier(ModelConfig(), 10).eval()
    g = torch.Generator().manual_seed(1)
    videos = [torch.randint(0, 256, (32, 3, 64, 64), dtype=torch.uint8, generator=g) for _ in range(16)]

    @torch.inference_mode()
    def bare():
        return [model.features(v) for v in videos]

    ours, theirs = versus("encoder, 16 videos x 32 frames 64x64", lambda: encode_videos(model.features, videos,
                                                                                        torch.device("cpu"), 32),
                          {"bare loop": bare})
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs["bare loop"], strict=True))


def test_encoder_training_step_channels_last_vs_nchw(versus):
    """A training step of the harness's frame encoder (forward and backward, 64 frames 64x64):
    as it runs (channels_last on the CPU) against the same layers on the NCHW tensor."""
    from samplerbench.models.encoders import FrameCNN

    torch.manual_seed(0)
    net = FrameCNN().train()
    x = torch.randn(64, 3, 64, 64, generator=torch.Generator().manual_seed(1))

    def step(forward):
        net.zero_grad(set_to_none=True)
        loss = forward(x).square().mean()
        loss.backward()
        return loss.item(), net.body[0][0].weight.grad.clone()

    ours, theirs = versus("encoder training step, 64 frames 64x64", lambda: step(net),
                          {"NCHW": lambda: step(lambda v: net.body(v).amax(dim=(2, 3)))})
    assert ours[0] == pytest.approx(theirs["NCHW"][0], rel=1e-5)
    torch.testing.assert_close(ours[1], theirs["NCHW"][1], rtol=1e-3, atol=1e-5)


def test_token_reader_batched_vs_per_video(versus):
    """The token ViT reading a cell's 32 videos (64 tokens each) in one call, as the runner does,
    against one call a video."""
    from samplerbench.models.archs import TokenViT

    torch.manual_seed(0)
    vit = TokenViT(16, 512, 128, 4, 4, 10).eval()
    vit.embed = torch.nn.Linear(128, 128)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 64, 128, generator=g)
    ids = torch.stack([torch.randperm(512, generator=g)[:64].sort().values for _ in range(32)])

    @torch.inference_mode()
    def batched():
        return vit(x, ids)

    @torch.inference_mode()
    def alone():
        return torch.cat([vit(x[i:i + 1], ids[i:i + 1]) for i in range(len(x))])

    ours, theirs = versus("token ViT, 32 videos x 64 tokens", batched, {"one call a video": alone})
    torch.testing.assert_close(ours, theirs["one call a video"], rtol=1e-4, atol=1e-5)


def test_kcenter_small_blas_one_thread_vs_every_core(versus, monkeypatch):
    """K-center on 16 videos of 32 frames 64x64 (512 tokens, budgets 1-16 frames) with the run's
    threads in torch's and BLAS's pools (every core, as ``samplerbench run``): the kernels' small
    BLAS calls on one thread (:func:`samplerbench.kernels.threads.blas_threads_for`) against
    BLAS on every core beside torch's pool, whose spin-waits took the cores torch needed."""
    from samplerbench.kernels import threads as pools
    from samplerbench.methods.kcenter import KCenterPatches
    from samplerbench.models.tokens import _selected

    sampler = KCenterPatches()
    g = torch.Generator().manual_seed(1)
    videos = [torch.randint(0, 256, (32, 3, 64, 64), dtype=torch.uint8, generator=g) for _ in range(16)]

    def select_all():
        return [_selected(sampler, v, f"v{i}", (1, 2, 4, 8, 16)[i % 5], 0).tolist() for i, v in enumerate(videos)]

    def uncapped():
        with monkeypatch.context() as m:
            m.setattr(pools, "SMALL_BLAS_MACS", 0)
            return select_all()

    with threads(cores()):
        ours, theirs = versus(f"K-center selections, 16 videos x 512 tokens, {cores()} threads", select_all,
                              {"BLAS on every core": uncapped})
    # another BLAS thread count rounds the Gram matrix differently (threads.blas_threads_for): a
    # near-tie may go the other way, so most tokens agree, not necessarily all
    same = sum(len(set(a) & set(b)) for a, b in zip(ours, theirs["BLAS on every core"], strict=True))
    assert same >= 0.9 * sum(len(a) for a in ours)
