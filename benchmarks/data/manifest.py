"""The manifest hash: what identifies a split's data, recomputed on every load.

It covers the content of every annotation file and, per video, its path relative to the data
root with its size and modification time (seconds for 10k videos); ``verify`` replaces size and
time by the full content hash. A video missing from disk enters as ``missing``. A model trained
on a dataset whose videos were replaced is then never reused for it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from samplerbench.data.annotations import AnnotationError, VideoRecord, file_sha256

VERSION = "manifest-v1"


def _rel(path: Path, root: Path) -> str:
    try:
        return path.absolute().relative_to(root.absolute()).as_posix()
    except ValueError:
        return path.as_posix()


def video_token(rec: VideoRecord, root: Path, verify: bool) -> str:
    """One video's part of the hash: relative path and (size, mtime) or content hash."""
    rel = _rel(rec.path, root)
    if rec.frames:  # rawframes: each frame file
        parts = []
        for name in rec.frames:
            p = rec.path / name
            parts.append(_file_token(p, verify))
        return f"{rel}\0" + hashlib.sha256("\0".join(parts).encode()).hexdigest()
    return f"{rel}\0{_file_token(rec.path, verify)}"


def _file_token(p: Path, verify: bool) -> str:
    try:
        st = os.stat(p)
    except OSError:
        return "missing"
    if verify:
        try:
            return file_sha256(p)
        except OSError:
            return "unreadable"
    return f"{st.st_size}\0{st.st_mtime_ns}"


def manifest_hash(annotation_files: list[Path], records: list[VideoRecord], root: Path, verify: bool = False,
                  extra: str = "") -> str:
    """sha256 over the annotation files' contents and every video's token (see module doc);
    ``extra`` carries the adapter's parameters that change the split (fold, seed)."""
    if not records:
        raise AnnotationError(f"{root}: no videos: an empty split has no manifest")
    h = hashlib.sha256(VERSION.encode())
    h.update(extra.encode())
    for f in sorted(Path(a) for a in annotation_files):
        if not f.is_file():
            raise AnnotationError(f"{f}: annotation file not found")
        h.update(f"{f.name}\0{file_sha256(f)}\n".encode())
    for rec in records:
        h.update(f"{rec.video_id}\0{video_token(rec, root, verify)}\n".encode())
    return h.hexdigest()
