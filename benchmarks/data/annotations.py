"""What a split is (records, classes, manifest hash), MMAction2's list formats and the per-video
event ground truth kept beside them.

The same loader serves the embedded dataset and a real one: a dataset is a root folder, a list
file per split and, optionally, events. Malformed lines raise an error naming file:line.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from samplerbench.data.video import VideoIndex


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
    """One video of a split. ``num_frames`` and ``index`` come from the file (probed), not from
    the list; ``frames`` names a rawframes folder's images in time order; ``error`` says why the
    video cannot be read (it is then that video's recorded failure, never a crash)."""

    video_id: str
    path: Path
    num_frames: int
    labels: tuple[int, ...]
    events: tuple[Event, ...] = ()
    frames: tuple[str, ...] = ()
    index: VideoIndex | None = field(default=None, compare=False, repr=False)
    error: str = ""
    fps: float = 0.0


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

    def __post_init__(self) -> None:
        # an empty split or hash must never become a shared cache key
        if not self.records:
            raise AnnotationError(f"{self.name}/{self.split}: the split has no videos")
        if not self.manifest_hash:
            raise AnnotationError(f"{self.name}/{self.split}: empty manifest hash")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def readable_only(self) -> VideoSplit:
        """The split without the videos that cannot be read (for training: a test split keeps
        them, each a recorded failure)."""
        bad = [r for r in self.records if r.error]
        if not bad:
            return self
        return replace(self, records=[r for r in self.records if not r.error],
                       meta={**self.meta, "unreadable": {r.video_id: r.error for r in bad}})

    def __len__(self) -> int:
        return len(self.records)


#: The formats of a list file; the suite declares which (a line is never guessed).
LIST_FORMATS = {
    "video": "path label (several labels with multilabel = true)",
    "rawframes": "frame_dir total_frames label",
    "video-frames": "path num_frames label [label ...] (the embedded dataset's lists)",
}


def read_lines(path: str | Path) -> list[tuple[int, str]]:
    """(line number, stripped text) of a text annotation file, blank and ``#`` lines skipped;
    a missing file or a line that is not UTF-8 raises naming the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"{path}: annotation file not found")
    out = []
    for lineno, raw in enumerate(path.read_bytes().splitlines(), 1):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError as e:
            raise AnnotationError(f"{path}:{lineno}: not UTF-8 ({e.reason} at byte {e.start})") from None
        if line and not line.startswith("#"):
            out.append((lineno, line))
    return out


def inside_root(root: Path, rel: str, where: str) -> Path:
    """``root / rel``, refusing a path that leaves the data root (``../../etc/passwd``)."""
    p = (root / rel)
    try:
        p.resolve().relative_to(root.resolve())
    except ValueError:
        raise AnnotationError(f"{where}: path {rel!r} leaves the data root {root}") from None
    return p


def check_labels(labels: tuple[int, ...], num_classes: int | None, where: str) -> None:
    if not labels:
        raise AnnotationError(f"{where}: no label")
    bad = [x for x in labels if x < 0 or (num_classes is not None and x >= num_classes)]
    if bad:
        hi = f"0..{num_classes - 1}" if num_classes is not None else ">= 0"
        raise AnnotationError(f"{where}: label {bad[0]} out of range {hi}")


def _ints(tokens: list[str], where: str, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in tokens)
    except ValueError:
        raise AnnotationError(f"{where}: {what} must be integers, got {' '.join(tokens)!r}") from None


def _split_path(parts: list[str], fields: int, root: Path, where: str, line: str, fmt: str) -> tuple[str, list[str]]:
    """The path and the ``fields`` tokens after it. A path may hold spaces only when that file
    exists: ``a 1 3 5`` in a single-label list is an error, not a guess."""
    if len(parts) == fields + 1:
        return parts[0], parts[1:]
    if len(parts) > fields + 1:
        path = " ".join(parts[: len(parts) - fields])
        if (root / path).exists():
            return path, parts[len(parts) - fields:]
    raise AnnotationError(f"{where}: expected '{LIST_FORMATS[fmt]}' ({fmt} list), got {line!r}")


def parse_list(list_file: str | Path, root: str | Path, num_classes: int | None = None, fmt: str = "video-frames",
               multilabel: bool = False, template: str = "img_{:05d}.jpg", start_index: int = 1) -> list[VideoRecord]:
    """Parse an MMAction2 list of the declared format; ``root`` is joined to each relative path.

    ``video``: ``path label`` (``path l1 l2 ...`` when multilabel); ``rawframes``: ``frame_dir
    total_frames label...`` with images ``template.format(start_index + i)``; ``video-frames``:
    ``path num_frames label...`` (the embedded dataset's lists). Frame counts in a list are only
    a check: the file says how many frames there are.
    """
    if fmt not in LIST_FORMATS:
        raise AnnotationError(f"{list_file}: unknown list format {fmt!r} (one of {', '.join(LIST_FORMATS)})")
    list_file, root = Path(list_file), Path(root)
    records, seen = [], {}
    for lineno, line in read_lines(list_file):
        where = f"{list_file}:{lineno}"
        parts = line.split()
        frames: tuple[str, ...] = ()
        if fmt == "video":
            n_lab = 1
            if multilabel:  # the trailing integers are the labels
                n_lab = 0
                while n_lab < len(parts) - 1 and parts[-1 - n_lab].isdigit():
                    n_lab += 1
            path, rest = _split_path(parts, max(n_lab, 1), root, where, line, fmt)
            labels, num_frames = _ints(rest, where, "labels"), 0
        else:
            if len(parts) < 3:
                raise AnnotationError(f"{where}: expected '{LIST_FORMATS[fmt]}' ({fmt} list), got {line!r}")
            if not multilabel and fmt == "rawframes":
                path, rest = _split_path(parts, 2, root, where, line, fmt)
            else:
                path, rest = parts[0], parts[1:]
            num_frames = _ints(rest[:1], where, "num_frames")[0]
            labels = _ints(rest[1:], where, "labels")
            if num_frames <= 0:
                raise AnnotationError(f"{where}: num_frames must be positive, got {num_frames}")
            if fmt == "rawframes":
                frames = tuple(template.format(start_index + i) for i in range(num_frames))
        if not multilabel and len(labels) != 1:
            raise AnnotationError(f"{where}: {len(labels)} labels in a single-label list (set multilabel = true)")
        check_labels(labels, num_classes, where)
        full = inside_root(root, path, where)
        video_id = Path(path).with_suffix("").as_posix() if fmt != "rawframes" else Path(path).as_posix()
        if video_id in seen:
            raise AnnotationError(f"{where}: duplicate video {path} (first at line {seen[video_id]})")
        seen[video_id] = lineno
        records.append(VideoRecord(video_id, full, num_frames, labels, frames=frames))
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
        out.append(replace(r, events=evs))
    return out


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
