"""Untrimmed videos with labelled segments: ActivityNet v1.3 (untrimmed classification, as
SOSampler reports it) and Charades (multi-label). The segments are the videos' events, placed
on frames through each video's timestamps, so the event hit rate works on real data."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from samplerbench.data.adapters.common import (
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

ANET_LAYOUT = ("root/activity_net.v1-3.min.json ({database: {id: {subset, duration, annotations: [{segment: "
               "[start_s, end_s], label}]}}}) and root/videos/v_<id>.<ext> (or <id>.<ext>)")


@dataclass(frozen=True)
class ActivityNetParams(DataParams):
    annotations: str = "activity_net.v1-3.min.json"
    videos: str = "videos"


def anet_database(path: Path) -> dict:
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
        raise AnnotationError(f"{path}: expected {{'database': {{video id: {{subset, annotations}}}}}}")
    return data["database"]


@adapter("activitynet", ActivityNetParams, ANET_LAYOUT)
def activitynet(params: ActivityNetParams, root: Path, split: str, cache_dir: Path) -> Parsed:
    ann = require(root / params.annotations, "activitynet", ANET_LAYOUT)
    db = anet_database(ann)
    subset = "validation" if split == "test" else "training"
    labelled = {}
    for vid, v in db.items():
        try:
            labelled[vid] = (v["subset"], [(a["label"], float(a["segment"][0]), float(a["segment"][1]))
                                           for a in v.get("annotations", [])])
        except (KeyError, TypeError, ValueError, IndexError):
            raise AnnotationError(f"{ann}: database[{vid!r}]: expected subset and annotations[].segment/label") from None
    # the classes: every label of the labelled subsets, sorted (200 in v1.3)
    classes = sorted({lab for s, segs in labelled.values() if s in ("training", "validation") for lab, _, _ in segs})
    cls = {c: i for i, c in enumerate(classes)}
    found = index_files(root / params.videos)
    records, timed = [], {}
    for vid, (s, segs) in sorted(labelled.items()):
        if s != subset or not segs:
            continue
        labels = tuple(dict.fromkeys(class_index(cls, lab, f"{ann}: {vid}") for lab, _, _ in segs))
        path = found.get(f"v_{vid}") or found.get(vid) or root / params.videos / f"v_{vid}.mp4"
        records.append(VideoRecord(vid, path, 0, labels))
        timed[vid] = [(cls[lab], a, b) for lab, a, b in segs]
    parsed = Parsed(records, classes, [ann], timed_events=timed)
    if split in ("train", "val"):
        parsed = train_val(parsed, split, params, cache_dir, "activitynet")
    return parsed


CHARADES_LAYOUT = ("root/Charades/{Charades_v1_train.csv, Charades_v1_test.csv, Charades_v1_classes.txt} "
                   "(CSV column actions = 'c092 11.90 21.20;...'; classes 'c000 Name') and root/Charades_v1_480/<id>.mp4")


@dataclass(frozen=True)
class CharadesParams(DataParams):
    annotations: str = "Charades"
    videos: str = "Charades_v1_480"


@adapter("charades", CharadesParams, CHARADES_LAYOUT)
def charades(params: CharadesParams, root: Path, split: str, cache_dir: Path) -> Parsed:
    adir = root / params.annotations
    cfile = require(adir / "Charades_v1_classes.txt", "charades", CHARADES_LAYOUT)
    classes, cls = [], {}
    for lineno, line in read_lines(cfile):
        code, _, name = line.partition(" ")
        if not code.startswith("c") or not name:
            raise AnnotationError(f"{cfile}:{lineno}: expected 'cNNN Class name', got {line!r}")
        cls[code] = len(classes)
        classes.append(name.strip())
    table = require(adir / f"Charades_v1_{'test' if split == 'test' else 'train'}.csv", "charades", CHARADES_LAYOUT)
    try:
        rows = list(csv.DictReader(table.read_bytes().decode("utf-8").splitlines()))
    except UnicodeDecodeError:
        raise AnnotationError(f"{table}: not UTF-8") from None
    if rows and not {"id", "actions"} <= set(rows[0]):
        raise AnnotationError(f"{table}:1: expected columns id and actions")
    records, timed, seen = [], {}, set()
    for lineno, row in enumerate(rows, 2):
        where = f"{table}:{lineno}"
        vid, actions = row["id"].strip(), (row["actions"] or "").strip()
        if not actions:  # no action in the video: nothing to classify (the usual protocol skips it)
            continue
        if vid in seen:
            raise AnnotationError(f"{where}: duplicate video {vid}")
        seen.add(vid)
        segs = []
        for act in actions.split(";"):
            parts = act.split()
            try:
                segs.append((class_index(cls, parts[0], where), float(parts[1]), float(parts[2])))
            except (IndexError, ValueError):
                raise AnnotationError(f"{where}: expected actions 'cNNN start end;...', got {act!r}") from None
        records.append(VideoRecord(vid, root / params.videos / f"{vid}.mp4", 0,
                                   tuple(sorted({c for c, _, _ in segs}))))
        timed[vid] = segs
    parsed = Parsed(records, classes, [cfile, table], multilabel=True, timed_events=timed)
    if split in ("train", "val"):
        parsed = train_val(parsed, split, params, cache_dir, "charades")
    return parsed
