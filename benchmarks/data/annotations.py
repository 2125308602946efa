"""Video lists in MMAction2's format (``relative/path num_frames label [label ...]``) and the
per-video event ground truth kept beside them.

The same loader serves the embedded dataset and a real one: a dataset is a root folder, a list
file per split and, optionally, an events JSON. Malformed lines raise an error naming file:line.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path


class AnnotationError(ValueError):
    """A malformed annotation; the message names the file and line."""


@dataclass(frozen=True)
class Event:
    """One labelled event: frames [start, end) of the video carry class ``label``."""

    label: int
    start: int
    end: int


@dataclass(frozen=True)
class VideoRecord:
    video_id: str
    path: Path
    num_frames: int
    labels: tuple[int, ...]
    events: tuple[Event, ...] = ()


@dataclass
class VideoSplit:
    """One split of a dataset: the records, the class names and the hash that identifies it."""

    name: str
    split: str
    records: list[VideoRecord]
    classes: list[str]
    multilabel: bool = False
    manifest_hash: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.records)


def parse_list(list_file: str | Path, root: str | Path, num_classes: int | None = None) -> list[VideoRecord]:
    """Parse an MMAction2 video list; ``root`` is joined to each relative path."""
    list_file, root = Path(list_file), Path(root)
    if not list_file.is_file():
        raise AnnotationError(f"{list_file}: annotation file not found")
    records, seen = [], set()
    for lineno, raw in enumerate(list_file.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        where = f"{list_file}:{lineno}"
        if len(parts) < 3:
            raise AnnotationError(f"{where}: expected 'path num_frames label [label ...]', got {line!r}")
        try:
            num_frames = int(parts[1])
            labels = tuple(int(x) for x in parts[2:])
        except ValueError:
            raise AnnotationError(f"{where}: num_frames and labels must be integers, got {line!r}") from None
        if num_frames <= 0:
            raise AnnotationError(f"{where}: num_frames must be positive, got {num_frames}")
        if any(lab < 0 or (num_classes is not None and lab >= num_classes) for lab in labels):
            raise AnnotationError(f"{where}: label out of range 0..{(num_classes or 0) - 1}: {labels}")
        video_id = Path(parts[0]).with_suffix("").as_posix()
        if video_id in seen:
            raise AnnotationError(f"{where}: duplicate video {parts[0]}")
        seen.add(video_id)
        records.append(VideoRecord(video_id, root / parts[0], num_frames, labels))
    if not records:
        raise AnnotationError(f"{list_file}: no videos listed")
    return records


def attach_events(records: list[VideoRecord], events_file: str | Path) -> list[VideoRecord]:
    """Add event ground truth from ``{video_id: [[label, start, end], ...]}``."""
    events_file = Path(events_file)
    try:
        table = json.loads(events_file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise AnnotationError(f"{events_file}: cannot read events ({e})") from None
    out = []
    for r in records:
        evs = tuple(Event(int(a), int(b), int(c)) for a, b, c in table.get(r.video_id, []))
        for e in evs:
            if not 0 <= e.start < e.end <= r.num_frames:
                raise AnnotationError(f"{events_file}: {r.video_id}: event {e} outside 0..{r.num_frames}")
        out.append(VideoRecord(r.video_id, r.path, r.num_frames, r.labels, evs))
    return out


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
