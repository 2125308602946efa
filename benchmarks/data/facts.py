"""Video facts from the file, not from the list: frame count, presentation timestamps, frame rate,
time base and duration, probed by demuxing (no decoding) and cached by (path, size, mtime).

The cache is one JSON-lines file per cache folder, appended as videos are probed, so a killed
probe loses nothing and a 10k-video dataset is probed once; a line cut short by a kill is
skipped on read. A video that cannot be probed is cached with its error (until the file changes):
it is that video's recorded failure, never the split's.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from samplerbench.data.annotations import Event, VideoRecord
from samplerbench.data.video import VideoDecodeError, VideoIndex, index_video

log = logging.getLogger(__name__)


def file_key(path: Path) -> list | None:
    """(absolute path, size, mtime in ns): what identifies a file's version cheaply."""
    try:
        st = path.stat()
    except OSError:
        return None
    return [str(path.absolute()), st.st_size, st.st_mtime_ns]


class FactsCache:
    """Probed :class:`VideoIndex` (or the error) per file version; ``path=None`` keeps it in memory."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._items: dict[tuple, dict] = {}
        if self.path and self.path.is_file():
            for line in self.path.read_text(errors="replace").splitlines():
                try:
                    d = json.loads(line)
                    self._items[tuple(d["key"])] = d
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a line cut short by a kill

    def probe(self, path: Path) -> VideoIndex:
        """The video's index; raises :class:`VideoDecodeError` naming the file."""
        key = file_key(path)
        if key is None:
            raise VideoDecodeError(f"{path}: no such video file")
        hit = self._items.get(tuple(key))
        if hit is None:
            try:
                hit = {"key": key, "index": index_video(path).to_json()}
            except VideoDecodeError as e:
                hit = {"key": key, "error": str(e).splitlines()[0]}
            self._store(hit)
        if "error" in hit:
            raise VideoDecodeError(hit["error"])
        return VideoIndex.from_json(hit["index"])

    def _store(self, item: dict) -> None:
        with self._lock:
            self._items[tuple(item["key"])] = item
            if self.path:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a") as f:  # one line per write: appends never interleave mid-line
                    f.write(json.dumps(item) + "\n")


def probe_record(rec: VideoRecord, cache: FactsCache) -> VideoRecord:
    """The record with its facts from the file; a video that cannot be read gets ``error``."""
    if rec.error:
        return rec
    if rec.frames:  # rawframes: the images present, in order, are the frames
        if not rec.path.is_dir():
            return replace(rec, error=f"{rec.path}: no such frame folder", num_frames=0)
        n = 0
        while n < len(rec.frames) and os.path.isfile(rec.path / rec.frames[n]):
            n += 1
        if n == 0:
            return replace(rec, error=f"{rec.path}: no frame {rec.frames[0]} in the folder", num_frames=0)
        if n < len(rec.frames):
            log.warning("%s: %d of %d listed frames present; using the first %d", rec.path, n, len(rec.frames), n)
        return replace(rec, frames=rec.frames[:n], num_frames=n)
    try:
        index = cache.probe(rec.path)
    except VideoDecodeError as e:
        return replace(rec, error=str(e).splitlines()[0], num_frames=0)
    if rec.num_frames and rec.num_frames != index.num_frames:
        log.info("%s: the list says %d frames, the file has %d (the file is used)", rec.path, rec.num_frames,
                 index.num_frames)
    events = tuple(Event(e.label, min(e.start, index.num_frames - 1), min(e.end, index.num_frames))
                   for e in rec.events)
    return replace(rec, num_frames=index.num_frames, index=index, fps=index.fps, events=events)


def probe_records(records: list[VideoRecord], cache: FactsCache, workers: int | None = None) -> list[VideoRecord]:
    """Every record probed (threads: demuxing is I/O and FFmpeg work outside the GIL)."""
    workers = workers or min(8, os.cpu_count() or 1)
    if workers <= 1 or len(records) < 8:
        return [probe_record(r, cache) for r in records]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda r: probe_record(r, cache), records))


def frame_at(index: VideoIndex, seconds: float) -> int:
    """The frame shown at ``seconds`` after the first frame's start (through its timestamps)."""
    # in pts ticks, rounded off float noise (1.2 s / (1/10240) is 12287.999... in floating point)
    t = round(seconds * index.time_base.denominator / index.time_base.numerator, 6)
    i = int(np.searchsorted(index.pts - index.pts[0], t, side="right")) - 1
    return min(max(i, 0), index.num_frames - 1)


def events_in_seconds(rec: VideoRecord, spans: list[tuple[int, float, float]]) -> VideoRecord:
    """Attach events given in seconds ([(label, start_s, end_s)]) as frame ranges of the
    probed video, clipped to it; an event that ends before it starts is dropped."""
    if rec.error or rec.index is None and not rec.frames:
        return rec
    out = []
    for label, s, e in spans:
        if rec.index is not None:
            a, b = frame_at(rec.index, s), frame_at(rec.index, e) + 1
        else:  # rawframes: the frame rate declared by the adapter
            a, b = int(s * rec.fps), int(e * rec.fps) + 1
        a, b = max(0, a), min(rec.num_frames, b)
        if b > a:
            out.append(Event(int(label), a, b))
    return replace(rec, events=tuple(out))
