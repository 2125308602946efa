"""What every real-dataset adapter shares: its parameters, the data root, a seeded stratified
validation split, finding video files, and turning parsed records into a :class:`VideoSplit`
(probed facts, events in seconds placed through timestamps, the manifest hash).

An adapter is one function ``load(params, root, split) -> Parsed`` registered with
:func:`adapter`; the registry entry is the builder the tasks call,
``build(cache_dir, split, progress=True, data_root=None, limit=0, **params)``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from samplerbench.data.annotations import AnnotationError, VideoRecord, VideoSplit
from samplerbench.data.facts import FactsCache, events_in_seconds, probe_records
from samplerbench.data.manifest import manifest_hash
from samplerbench.registry import DATASETS
from samplerbench.seeding import derive_seed

log = logging.getLogger(__name__)

VIDEO_EXTS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".flv", ".mpg", ".mpeg", ".3gp")
DATA_ENV = "SAMPLERBENCH_DATA"


class DataLayoutError(AnnotationError):
    """A file of the dataset's published layout is missing; the message names it and the layout."""


@dataclass(frozen=True)
class DataParams:
    """Parameters every real adapter takes (a suite's ``[dataset.params]``)."""

    #: the dataset's folder; relative: under ``--data-root`` or ``$SAMPLERBENCH_DATA``
    root: str = ""
    #: manifest from full content hashes instead of (size, mtime)
    verify: bool = False
    #: the share of the training videos held out (seeded, stratified, stored) as ``val``
    val_fraction: float = 0.1
    split_seed: int = 0


@dataclass
class Parsed:
    """What an adapter read from the annotation files for one split."""

    records: list[VideoRecord]
    classes: list[str]
    files: list[Path]  # the annotation files read (their content enters the manifest hash)
    multilabel: bool = False
    #: events in seconds, placed on frames once the video's timestamps are probed
    timed_events: dict[str, list[tuple[int, float, float]]] = field(default_factory=dict)
    #: videos listed but absent from disk that the dataset is known to miss (Kinetics): dropped, counted
    skip_missing: bool = False
    meta: dict = field(default_factory=dict)


def data_root(root: str, given: str | Path | None) -> Path:
    """The dataset folder: ``root`` as given when absolute, else under the data root
    (``--data-root``, else ``$SAMPLERBENCH_DATA``, else the working directory)."""
    p = Path(os.path.expanduser(root or "."))
    if p.is_absolute():
        return p
    base = given or os.environ.get(DATA_ENV) or "."
    return Path(base) / p


def require(path: Path, adapter: str, layout: str) -> Path:
    """``path``, or a one-line error naming the missing file and the adapter's layout."""
    if not path.exists():
        raise DataLayoutError(f"{path}: missing; the {adapter} adapter expects {layout} (see README, 'Datasets')")
    return path


def index_files(folder: Path, exts=VIDEO_EXTS) -> dict[str, Path]:
    """Every video under ``folder`` (recursively: flat or in class folders) by file stem and by
    relative path; a stem seen twice keeps the first in sorted order."""
    out: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(exts):
                p = Path(dirpath) / name
                out.setdefault(p.stem, p)
                out.setdefault(p.relative_to(folder).as_posix(), p)
    return out


def carve_val(records: list[VideoRecord], fraction: float, seed: int, cache_dir: Path, tag: str) -> set[str]:
    """The ids held out of a training list as ``val``: per class (first label), a seeded
    ``round(fraction * n)`` of its videos (at least one when the class has two or more). Stored
    under ``<cache>/splits/`` on first use and read back after, so the split survives library
    upgrades and can be inspected."""
    ids = sorted(r.video_id for r in records)
    key = hashlib.sha256(json.dumps([tag, ids, fraction, seed]).encode()).hexdigest()[:16]
    path = Path(cache_dir) / "splits" / f"{tag}-{key}.json"
    if path.is_file():
        return set(json.loads(path.read_text())["val"])
    by_class: dict[int, list[str]] = defaultdict(list)
    for r in records:
        by_class[r.labels[0] if r.labels else -1].append(r.video_id)
    val: list[str] = []
    for c in sorted(by_class):
        vids = sorted(by_class[c])
        k = int(round(fraction * len(vids)))
        if fraction > 0 and len(vids) >= 2:
            k = min(max(k, 1), len(vids) - 1)
        rng = np.random.Generator(np.random.PCG64(derive_seed("val-split", tag, seed, c)))
        val += [vids[i] for i in sorted(rng.permutation(len(vids))[:k])]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"tag": tag, "fraction": fraction, "seed": seed, "val": sorted(val)}, indent=0))
    os.replace(tmp, path)
    return set(val)


def train_val(parsed: Parsed, split: str, params: DataParams, cache_dir: Path, tag: str) -> Parsed:
    """From a training list: ``train`` without the held-out videos, or ``val`` = them."""
    held = carve_val(parsed.records, params.val_fraction, params.split_seed, cache_dir, tag)
    keep = [r for r in parsed.records if (r.video_id in held) == (split == "val")]
    return Parsed(keep, parsed.classes, parsed.files, parsed.multilabel, parsed.timed_events,
                  parsed.skip_missing, {**parsed.meta, "val_held_out": len(held)})


def adapter(name: str, params_cls: type[DataParams], layout: str):
    """Register ``load(params, root, split, cache_dir) -> Parsed`` as dataset ``name``."""

    def deco(load):
        def build(cache_dir: str | Path, split: str, progress: bool = True, data_root_dir: str | Path | None = None,
                  limit: int = 0, **raw) -> VideoSplit:
            params = params_cls(**raw)
            root = data_root(params.root, data_root_dir)
            if not root.is_dir():
                raise DataLayoutError(f"{root}: no such data folder; the {name} adapter expects {layout}")
            parsed = load(params, root, split, Path(cache_dir))
            return finish(name, split, parsed, root, Path(cache_dir), params, limit)

        build.__doc__ = f"{name}: {layout}"
        build.layout = layout
        DATASETS.register(name, params=params_cls, layout=layout)(build)
        return load

    return deco


def finish(name: str, split: str, parsed: Parsed, root: Path, cache_dir: Path, params: DataParams,
           limit: int = 0) -> VideoSplit:
    """Probe every video (cached), place timed events, drop or keep missing videos, hash."""
    records = parsed.records[:limit] if limit else parsed.records
    records = probe_records(records, FactsCache(cache_dir / "video-facts.jsonl"))
    if parsed.timed_events:
        records = [events_in_seconds(r, parsed.timed_events.get(r.video_id, [])) for r in records]
    missing = [r for r in records if r.error and not r.path.exists()]
    if parsed.skip_missing and missing:
        log.warning("%s/%s: %d of %d listed videos are missing from %s; evaluated without them",
                    name, split, len(missing), len(records), root)
        records = [r for r in records if r.path.exists()]
    bad = sum(1 for r in records if r.error)
    if bad:
        log.warning("%s/%s: %d video(s) cannot be read; each is a recorded failure", name, split, bad)
    if not parsed.records:  # nothing to look for on disk: say why the split is empty
        raise AnnotationError(f"{name}/{split}: the split lists no video (an empty list, or a held-out fraction "
                              f"of too few videos: raise val_fraction / test_fraction or list the split itself)")
    if not records:
        raise AnnotationError(f"{name}/{split}: none of the {len(parsed.records)} listed videos is on disk under {root}")
    extra = json.dumps({"adapter": name, "split": split, "limit": limit,
                        **{k: v for k, v in asdict(params).items() if k not in ("root", "verify")}}, sort_keys=True)
    h = manifest_hash(parsed.files, records, root, params.verify, extra)
    meta = {**parsed.meta, "root": str(root), "missing": [str(r.path) for r in missing] if parsed.skip_missing else [],
            "listed": len(parsed.records)}
    if "captions" in meta:  # a video left out (--limit, missing) takes its captions with it
        kept = {r.video_id for r in records}
        meta["captions"] = [(v, c) for v, c in meta["captions"] if v in kept]
    return VideoSplit(name, split, records, parsed.classes, parsed.multilabel, h, meta)


def class_index(classes: dict[str, int], name: str, where: str) -> int:
    """The index of a class name (``{name: index}``), or an error naming the file and line."""
    try:
        return classes[name]
    except KeyError:
        raise AnnotationError(f"{where}: unknown class name {name!r}") from None


def read_json(path: Path):
    """A JSON annotation file; errors name the file and line."""
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise AnnotationError(f"{path}: not UTF-8") from None
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    except OSError as e:
        raise AnnotationError(f"{path}: cannot read ({e.strerror})") from None
