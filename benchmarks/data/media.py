"""Reading a record's frames whatever it is stored as: a video file (:mod:`.video`) or a
rawframes folder of images (Pillow), at the model's size (shorter side, then centre crop)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from samplerbench.data.annotations import VideoRecord
from samplerbench.data.video import VideoDecodeError, crop_box, read_frames


def read_image(path, size: tuple[int, int] | None, resize: int | None = None) -> np.ndarray:
    """One RGB image (H, W, 3) uint8: resized on its shorter side (bilinear, Pillow's reducing
    decoder for JPEG draft mode) then centre-cropped to ``size``."""
    try:
        with Image.open(path) as im:
            if size is not None:
                rh, rw, top, left = crop_box(im.height, im.width, int(size[0]), int(size[1]), resize)
                im.draft("RGB", (rw, rh))  # JPEG: decode at a reduced scale when it can
                im = im.convert("RGB")
                if (im.height, im.width) != (rh, rw):
                    im = im.resize((rw, rh), Image.BILINEAR)
                return np.asarray(im)[top:top + int(size[0]), left:left + int(size[1])]
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError) as e:
        raise VideoDecodeError(f"{path}: cannot read image ({e})") from None


def read_record(rec: VideoRecord, indices, size: tuple[int, int] | None = None, resize: int | None = None,
                threads: int = 0) -> torch.Tensor:
    """Frames ``indices`` of a record as uint8 (N, 3, H, W); raises :class:`VideoDecodeError`
    naming the file for a video that cannot be read."""
    if rec.error:
        raise VideoDecodeError(rec.error)
    if not rec.frames:
        return read_frames(rec.path, indices, size=size, index=rec.index, resize=resize, threads=threads)
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= len(rec.frames)):
        raise VideoDecodeError(f"{rec.path}: frame index out of range 0..{len(rec.frames) - 1}")
    cache: dict[int, np.ndarray] = {}
    for i in np.unique(idx):
        cache[int(i)] = read_image(rec.path / rec.frames[int(i)], size, resize)
    if not idx.size:
        h, w = size if size else (0, 0)
        return torch.empty((0, 3, h, w), dtype=torch.uint8)
    shapes = {a.shape for a in cache.values()}
    if len(shapes) > 1:
        raise VideoDecodeError(f"{rec.path}: frames of different sizes {sorted(shapes)} (give a frame size)")
    return torch.from_numpy(np.stack([cache[int(i)] for i in idx])).permute(0, 3, 1, 2).contiguous()
