"""Video I/O: decode only the requested frames (PyAV, or torchcodec where it loads); write H.264 mp4.

``read_frames`` demuxes the packets once (no decoding) to learn each frame's timestamp and
where the keyframes are, then walks forward through each group of pictures that holds a wanted
frame, seeking only when the next wanted frame lies beyond the next keyframe. Frames are
numbered in presentation order, so B-frames are handled.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

log = logging.getLogger(__name__)


class VideoDecodeError(RuntimeError):
    """A missing, empty or corrupt video; the message names the file."""


@dataclass(frozen=True)
class VideoIndex:
    """What the container says of a video: presentation timestamps of every frame (sorted, in
    ``time_base`` units), which frame numbers are keyframes, the average frame rate and the
    duration of the last frame (so the video's span is known for variable frame rates)."""

    pts: np.ndarray
    keyframes: np.ndarray  # sorted frame numbers of keyframes
    fps: float
    time_base: Fraction = Fraction(1, 1)
    last_duration: int = 0  # pts units; 0: unknown (taken as the median frame step)

    @property
    def num_frames(self) -> int:
        return len(self.pts)

    @property
    def span(self) -> int:
        """pts units from the first frame's start to the last frame's end."""
        step = self.last_duration
        if step <= 0:
            step = int(np.median(np.diff(self.pts))) if len(self.pts) > 1 else 1
        return int(self.pts[-1] - self.pts[0]) + max(step, 1)

    @property
    def duration(self) -> float:
        """Seconds the frames cover."""
        return float(self.span * self.time_base)

    def to_json(self) -> dict:
        return {"pts": self.pts.tolist(), "keyframes": self.keyframes.tolist(), "fps": self.fps,
                "time_base": str(self.time_base), "last_duration": self.last_duration}

    @classmethod
    def from_json(cls, d: dict) -> VideoIndex:
        return cls(np.asarray(d["pts"], dtype=np.int64), np.asarray(d["keyframes"], dtype=np.int64),
                   float(d["fps"]), Fraction(d["time_base"]), int(d.get("last_duration", 0)))


def crop_box(h: int, w: int, out_h: int, out_w: int, resize: int | None = None) -> tuple[int, int, int, int]:
    """Resize the shorter side (to ``resize``, default: just enough for the crop), then
    centre-crop (MMAction2's ``Resize(-1, s)`` + ``CenterCrop``; timm's ``crop_pct``): the
    scaled (height, width) and the crop's (top, left)."""
    scale = max(out_h / h, out_w / w, (resize or 0) / min(h, w))
    rh, rw = max(out_h, round(h * scale)), max(out_w, round(w * scale))
    return rh, rw, (rh - out_h) // 2, (rw - out_w) // 2


def _check_file(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.is_file():
        raise VideoDecodeError(f"{p}: no such video file")
    if p.stat().st_size == 0:
        raise VideoDecodeError(f"{p}: empty file")
    return p


def _open(path: str | os.PathLike):
    p = _check_file(path)
    try:
        container = av.open(str(p))
    except av.error.FFmpegError as e:
        raise VideoDecodeError(f"{p}: cannot open as video ({e})") from None
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(f"{p}: no video stream")
    return container


def index_video(path: str | os.PathLike) -> VideoIndex:
    """Demux (without decoding) to list frame timestamps and keyframes."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        pts, keys, durs = [], [], []
        for packet in container.demux(stream):
            if packet.pts is None or packet.size == 0:
                continue
            pts.append(packet.pts)
            keys.append(packet.is_keyframe)
            durs.append(packet.duration or 0)
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        time_base = Fraction(stream.time_base) if stream.time_base else Fraction(1, 1)
    except av.error.FFmpegError as e:
        raise VideoDecodeError(f"{path}: corrupt stream ({e})") from None
    finally:
        container.close()
    if not pts:
        raise VideoDecodeError(f"{path}: the video stream has no frames")
    order = np.argsort(pts, kind="stable")
    pts_sorted = np.asarray(pts, dtype=np.int64)[order]
    key_frames = np.flatnonzero(np.asarray(keys, dtype=bool)[order])
    if key_frames.size == 0 or key_frames[0] != 0:
        key_frames = np.concatenate([[0], key_frames])
    return VideoIndex(pts=pts_sorted, keyframes=key_frames, fps=fps, time_base=time_base,
                      last_duration=int(np.asarray(durs, dtype=np.int64)[order][-1]))


BACKENDS = ("pyav", "torchcodec")


@functools.cache
def torchcodec_available() -> bool:
    """Whether torchcodec imports and its core library finds FFmpeg's shared libraries (Debian:
    libavcodec and friends); probed once per process."""
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401  (loads the FFmpeg libraries)

        return True
    except Exception:  # noqa: BLE001  ImportError, or OSError/RuntimeError when FFmpeg's libraries are missing
        return False


def resolve_backend(backend: str = "auto") -> str:
    """``auto``: torchcodec where it loads (faster than PyAV on this machine's H.264 clips:
    ``nox -s throughput``), else PyAV, which needs nothing outside its wheel."""
    if backend == "auto":
        return "torchcodec" if torchcodec_available() else "pyav"
    if backend not in BACKENDS:
        raise ValueError(f"unknown decode backend {backend!r}; choose from {BACKENDS} or 'auto'")
    if backend == "torchcodec" and not torchcodec_available():
        raise ValueError("decode backend 'torchcodec' is not usable here (pip install torchcodec; it needs "
                         "FFmpeg's shared libraries, e.g. apt-get install libavcodec59 libavformat59 libswscale6)")
    return backend


def read_frames(
    path: str | os.PathLike,
    indices,
    size: tuple[int, int] | None = None,
    index: VideoIndex | None = None,
    resize: int | None = None,
    backend: str = "auto",
    threads: int = 0,
) -> torch.Tensor:
    """Decode frames ``indices`` (any order, repeats allowed) as uint8 (N, 3, H, W).

    Every backend decodes the wanted frames to full-resolution RGB (H, W, 3), the same bits
    from PyAV and torchcodec (tested), and the rest is shared: with ``size`` = (height, width)
    the frames are resized on the shorter side (bilinear, antialiased: torchvision's
    ``resize`` on uint8 channels-last) and centre-cropped (:func:`crop_box`), and returned
    contiguous at that size; a frame already of the right shape is not touched. Without
    ``size`` the result is a channels-last view of the decoded frames (no copy: at full size a
    permute-and-copy cost more than the decoding it followed). ``index`` (the per-video facts
    the runner keeps) spares a demux of the file. ``threads``: FFmpeg's decoding threads (0: its
    choice; a decode worker among several uses 1, see ``samplerbench.kernels.threads``).
    """
    backend = resolve_backend(backend)
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    index = index or index_video(path)
    n = index.num_frames
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise VideoDecodeError(f"{path}: frame index out of range 0..{n - 1}: {idx.min()}..{idx.max()}")
    if not idx.size:
        h, w = size if size else (0, 0)
        return torch.empty((0, 3, h, w), dtype=torch.uint8)
    wanted = np.unique(idx)
    decode = _decode_torchcodec if backend == "torchcodec" else _decode_pyav
    frames = decode(path, wanted, index, threads).permute(0, 3, 1, 2)  # channels-last (N, 3, H, W): a view
    if size is not None:
        frames = fit_frames(frames, size, resize)
    if np.array_equal(idx, wanted):
        return frames
    return frames[torch.from_numpy(np.searchsorted(wanted, idx))]


def fit_frames(frames: torch.Tensor, size: tuple[int, int], resize: int | None = None) -> torch.Tensor:
    """uint8 (N, 3, H, W) frames resized on the shorter side (to ``resize``, or just enough for
    the crop; bilinear with antialiasing, as torchvision's and PIL's ``Resize``) and centre-cropped
    to ``size``: contiguous (N, 3, *size)."""
    from torchvision.transforms.v2.functional import resize as tv_resize

    h, w = frames.shape[-2:]
    oh, ow = int(size[0]), int(size[1])
    if (h, w) == (oh, ow) and not resize:
        return frames.contiguous()
    rh, rw, top, left = crop_box(h, w, oh, ow, resize)
    if (rh, rw) != (h, w):
        frames = tv_resize(frames.contiguous(memory_format=torch.channels_last), [rh, rw], antialias=True)
    return frames[:, :, top:top + oh, left:left + ow].contiguous()


def _decode_pyav(path, wanted: np.ndarray, index: VideoIndex, threads: int = 0) -> torch.Tensor:
    """Sorted distinct frames ``wanted`` as full-size RGB uint8 (N, H, W, 3), through PyAV."""
    out: list[np.ndarray] = []
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.thread_count = max(int(threads), 0)
        pts_to_frame = {int(p): i for i, p in enumerate(index.pts)}
        # one scaler for the whole read: ``frame.to_ndarray(format=...)`` builds a new one per
        # frame, which cost more than decoding it (1.2 ms a 64x64 frame; same output, tested)
        reformatter = VideoReformatter()
        decoder = None
        pos = -1  # frame number of the last decoded frame
        for target in wanted:
            key_before = index.keyframes[np.searchsorted(index.keyframes, target, side="right") - 1]
            # Seek only when it skips work: the target's keyframe lies beyond the next frame.
            if decoder is None or key_before > pos + 1 or target <= pos:
                container.seek(int(index.pts[key_before]), stream=stream, backward=True, any_frame=False)
                decoder = container.decode(stream)
                pos = -1
            found = False
            for frame in decoder:
                if frame.pts is None:
                    continue
                pos = pts_to_frame.get(int(frame.pts), pos + 1)
                if pos == target:
                    out.append(reformatter.reformat(frame, format="rgb24").to_ndarray())
                    found = True
                    break
                if pos > target:
                    break
            if not found:
                raise VideoDecodeError(f"{path}: could not decode frame {target}")
    except av.error.FFmpegError as e:
        raise VideoDecodeError(f"{path}: corrupt stream ({e})") from None
    finally:
        container.close()
    return torch.from_numpy(np.stack(out))


def _decode_torchcodec(path, wanted: np.ndarray, index: VideoIndex, threads: int = 0) -> torch.Tensor:
    """Sorted distinct frames ``wanted`` as full-size RGB uint8 (N, H, W, 3), through torchcodec.

    Its own exact-seek scan is used rather than our kept index as ``custom_frame_mappings``: the
    scan costs about 1 ms (in C++) and the mapping made its reads 5% slower (233 vs 222 ms, 8
    frames of a 396-frame clip). Where its frame count disagrees with the index (a stream our
    demux counts differently), the read goes to PyAV, so that frame numbers never shift."""
    from torchcodec.decoders import VideoDecoder

    _check_file(path)  # the same one-line errors as PyAV's for a missing or empty file
    try:
        dec = VideoDecoder(str(path), dimension_order="NHWC", num_ffmpeg_threads=max(int(threads), 0), device="cpu")
        if dec.metadata.num_frames != index.num_frames:
            log.warning("%s: torchcodec counts %s frames, the index %d: decoding with PyAV", path,
                        dec.metadata.num_frames, index.num_frames)
            return _decode_pyav(path, wanted, index, threads)
        return dec.get_frames_at(indices=wanted.tolist()).data
    except (RuntimeError, ValueError, IndexError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise VideoDecodeError(f"{path}: corrupt stream ({first})") from None


def rgb_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """BT.601 limited-range RGB -> planar YUV 4:2:0 as PyAV's (H*3/2, W) layout, in numpy.

    Done here rather than by FFmpeg's scaler, whose SIMD path (and so its rounding) depends on
    the input buffer's alignment: the same frames gave different files from run to run.
    """
    h, w, _ = rgb.shape
    x = rgb.astype(np.float64)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    cb = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    cr = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255

    def sub(c):
        return c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))

    planes = [np.clip(np.rint(p), 0, 255).astype(np.uint8).ravel() for p in (y, sub(cb), sub(cr))]
    return np.concatenate(planes).reshape(h * 3 // 2, w)


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: int = 25, gop: int = 12, crf: int = 0) -> None:
    """Write uint8 (N, H, W, 3) RGB frames (even H, W) as H.264 yuv420p mp4; atomically (tmp + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.mp4")
    n, h, w, _ = frames.shape
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        # One encoder thread: x264's output must be byte-identical between runs (manifest hashes).
        stream.codec_context.thread_count = 1
        stream.codec_context.thread_type = "NONE"
        stream.options = {"crf": str(crf), "g": str(gop), "preset": "veryfast", "threads": "1"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb_to_yuv420p(f), format="yuv420p")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
