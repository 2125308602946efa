"""Kinetics-400/600/700 (and Mini-Kinetics as a subset) and Something-Something v2, in the
layouts they are downloaded in."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from samplerbench.data.adapters.common import (
    DataLayoutError,
    DataParams,
    Parsed,
    adapter,
    class_index,
    index_files,
    read_json,
    require,
    train_val,
)
from samplerbench.data.annotations import AnnotationError, VideoRecord, read_lines


@dataclass(frozen=True)
class KineticsParams(DataParams):
    #: annotation CSVs under root (the first that exists per split)
    annotations: str = "annotations"
    train_csv: tuple = ("train.csv",)
    test_csv: tuple = ("validate.csv", "val.csv")
    #: video folders under root per split; files flat or under class folders
    train_videos: tuple = ("train", "videos_train", "train_256")  # DeepMind/CVDF, MMAction2, resized copies
    test_videos: tuple = ("val", "validate", "valid", "videos_val", "val_256")
    #: Mini-Kinetics and other subsets: a file of youtube ids per split, ``{train = "...", test = "..."}``
    id_lists: dict | None = None


def _first(root: Path, names, layout: str) -> Path:
    for n in ([names] if isinstance(names, str) else names):
        if (root / n).exists():
            return root / n
    raise DataLayoutError(f"{root / (names if isinstance(names, str) else names[0])}: missing; the kinetics adapter "
                          f"expects {layout} (see README, 'Datasets')")


KINETICS_LAYOUT = ("root/annotations/{train.csv, validate.csv} (label,youtube_id,time_start,time_end,split) and "
                   "root/{train,val}/[<label>/]{youtube_id}_{start:06d}_{end:06d}.mp4")


def read_kinetics_csv(path: Path) -> list[tuple[int, str, str, int, int]]:
    """(line, label, youtube_id, start, end) rows; errors name file:line."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise AnnotationError(f"{path}:{line}: not UTF-8") from None
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        raise AnnotationError(f"{path}: empty")
    head = [h.strip() for h in rows[0]]
    need = ("label", "youtube_id", "time_start", "time_end")
    if not all(h in head for h in need):
        raise AnnotationError(f"{path}:1: expected a header with {', '.join(need)}, got {','.join(head)}")
    col = {h: head.index(h) for h in need}
    out = []
    for lineno, row in enumerate(rows[1:], 2):
        if not row:
            continue
        try:
            out.append((lineno, row[col["label"]].strip(), row[col["youtube_id"]].strip(),
                        int(float(row[col["time_start"]])), int(float(row[col["time_end"]]))))
        except (IndexError, ValueError):
            raise AnnotationError(f"{path}:{lineno}: expected label,youtube_id,time_start,time_end, got {row}") from None
    return out


@adapter("kinetics", KineticsParams, KINETICS_LAYOUT)
def kinetics(params: KineticsParams, root: Path, split: str, cache_dir: Path) -> Parsed:
    ann = root / params.annotations
    train_csv = _first(ann, params.train_csv, KINETICS_LAYOUT)
    the_csv = train_csv if split in ("train", "val") else _first(ann, params.test_csv, KINETICS_LAYOUT)
    train_rows = read_kinetics_csv(train_csv)
    rows = train_rows if the_csv == train_csv else read_kinetics_csv(the_csv)
    files = [train_csv] if the_csv == train_csv else [train_csv, the_csv]
    ids = {k: _ids(root / v) for k, v in (params.id_lists or {}).items()}  # Mini-Kinetics: id lists per split
    files += [root / v for v in (params.id_lists or {}).values()]
    # MMAction2's label map: the train classes in alphabetical order (of the subset's train ids)
    classes = sorted({r[1] for r in train_rows if "train" not in ids or r[2] in ids["train"]})
    keep = ids.get("train" if split in ("train", "val") else "test")
    cls = {c: i for i, c in enumerate(classes)}
    videos = _first(root, params.train_videos if split in ("train", "val") else params.test_videos, KINETICS_LAYOUT)
    found = index_files(videos)
    records, seen = [], set()
    for lineno, label, yid, start, end in rows:
        if keep is not None and yid not in keep and f"{yid}_{start:06d}_{end:06d}" not in keep:
            continue
        where = f"{the_csv}:{lineno}"
        stem = f"{yid}_{start:06d}_{end:06d}"
        if stem in seen:
            raise AnnotationError(f"{where}: duplicate video {stem}")
        seen.add(stem)
        c = class_index(cls, label, where)
        path = found.get(stem) or found.get(yid) or videos / label / f"{stem}.mp4"
        records.append(VideoRecord(stem, path, 0, (c,)))
    parsed = Parsed(records, classes, files, skip_missing=True)
    if split in ("train", "val"):
        parsed = train_val(parsed, split, params, cache_dir, f"kinetics-{train_csv.parent.parent.name}")
    return parsed


@dataclass(frozen=True)
class SSv2Params(DataParams):
    labels: str = "labels"
    videos: str = "20bn-something-something-v2"


SSV2_LAYOUT = ("root/labels/{labels.json, train.json, validation.json} ({'Template text': 'index'}; "
               "[{id, label, template, placeholders}]) and root/20bn-something-something-v2/<id>.webm")


@adapter("ssv2", SSv2Params, SSV2_LAYOUT)
def ssv2(params: SSv2Params, root: Path, split: str, cache_dir: Path) -> Parsed:
    ldir = root / params.labels
    labels_file = require(ldir / "labels.json", "ssv2", SSV2_LAYOUT)
    table = read_json(labels_file)
    try:
        order = sorted(table.items(), key=lambda kv: int(kv[1]))
    except (AttributeError, ValueError, TypeError):
        raise AnnotationError(f"{labels_file}: expected {{'template': 'index'}}") from None
    classes = [k for k, _ in order]
    if [int(v) for _, v in order] != list(range(len(classes))):
        raise AnnotationError(f"{labels_file}: class indices are not 0..{len(classes) - 1}")
    cls = {c: i for i, c in enumerate(classes)}
    ann = require(ldir / ("validation.json" if split == "test" else "train.json"), "ssv2", SSV2_LAYOUT)
    items = read_json(ann)
    if not isinstance(items, list):
        raise AnnotationError(f"{ann}: expected a list of {{id, template}}")
    videos = root / params.videos
    records, seen = [], set()
    for i, it in enumerate(items):
        where = f"{ann}: item {i}"
        try:
            vid, template = str(it["id"]), it["template"]
        except (KeyError, TypeError):
            raise AnnotationError(f"{where}: expected {{id, template, ...}}, got {it!r:.80}") from None
        # the class is the template without the placeholder brackets (the dataset's own rule)
        c = class_index(cls, template.replace("[", "").replace("]", ""), where)
        if vid in seen:
            raise AnnotationError(f"{where}: duplicate video {vid}")
        seen.add(vid)
        records.append(VideoRecord(vid, videos / f"{vid}.webm", 0, (c,)))
    parsed = Parsed(records, classes, [labels_file, ann])
    if split in ("train", "val"):
        parsed = train_val(parsed, split, params, cache_dir, "ssv2")
    return parsed


def _ids(path: Path) -> set[str]:
    """A subset's ids, one per line (the first field)."""
    require(path, "kinetics", "one youtube id (or file stem) per line")
    return {line.split()[0] for _, line in read_lines(path)}
