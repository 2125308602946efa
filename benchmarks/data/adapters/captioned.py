"""Text-video retrieval datasets in the layouts CLIP4Clip (and mmSampler after it) reads:
MSR-VTT's 1k-A test, ActivityNet Captions and DiDeMo as paragraph-to-video retrieval (each
video's sentences joined into one paragraph). The captions travel in ``split.meta["captions"]``
and the training captions' vocabulary in ``split.meta["vocab"]``."""

from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from samplerbench.data.adapters.common import (
    DataParams,
    Parsed,
    adapter,
    index_files,
    read_json,
    require,
    train_val,
)
from samplerbench.data.annotations import AnnotationError, VideoRecord

GENERIC = ["video"]  # the one class of a dataset without labels (the trained protocol then learns from captions only)


def vocabulary(texts: list[str], min_count: int = 2) -> list[str]:
    """The words of the training captions seen at least ``min_count`` times, sorted."""
    from samplerbench.data.captions import tokenize

    counts = Counter(w for t in texts for w in tokenize(t))
    return sorted(w for w, c in counts.items() if c >= min_count)


def _csv_rows(path: Path, need: tuple[str, ...]) -> list[dict]:
    try:
        rows = list(csv.DictReader(path.read_bytes().decode("utf-8").splitlines()))
    except UnicodeDecodeError:
        raise AnnotationError(f"{path}: not UTF-8") from None
    if not rows or not set(need) <= set(rows[0]):
        raise AnnotationError(f"{path}:1: expected a header with {', '.join(need)}")
    return rows


MSRVTT_LAYOUT = ("root/msrvtt_data/{MSRVTT_data.json, MSRVTT_train.9k.csv, MSRVTT_JSFUSION_test.csv} "
                 "and root/MSRVTT_Videos/video<N>.mp4 (CLIP4Clip's layout; test = the 1k-A split)")


@dataclass(frozen=True)
class MSRVTTParams(DataParams):
    annotations: str = "msrvtt_data"
    videos: str = "MSRVTT_Videos"
    train_csv: str = "MSRVTT_train.9k.csv"
    test_csv: str = "MSRVTT_JSFUSION_test.csv"


@adapter("msrvtt", MSRVTTParams, MSRVTT_LAYOUT)
def msrvtt(params: MSRVTTParams, root: Path, split: str, cache_dir: Path) -> Parsed:
    adir = root / params.annotations
    data_file = require(adir / "MSRVTT_data.json", "msrvtt", MSRVTT_LAYOUT)
    data = read_json(data_file)
    try:
        category = {v["video_id"]: int(v.get("category", 0)) for v in data["videos"]}
        sentences = [(s["video_id"], s["caption"]) for s in data["sentences"]]
    except (KeyError, TypeError, ValueError):
        raise AnnotationError(f"{data_file}: expected videos[].video_id/category and sentences[].video_id/caption") from None
    train_file = require(adir / params.train_csv, "msrvtt", MSRVTT_LAYOUT)
    train_ids = [r["video_id"] for r in _csv_rows(train_file, ("video_id",))]
    train_set = set(train_ids)
    files = [data_file, train_file]
    if split == "test":  # the 1k-A test: one sentence per video, from the JSFusion CSV
        test_file = require(adir / params.test_csv, "msrvtt", MSRVTT_LAYOUT)
        rows = _csv_rows(test_file, ("video_id", "sentence"))
        ids = [r["video_id"] for r in rows]
        captions = [(r["video_id"], r["sentence"]) for r in rows]
        files.append(test_file)
    else:
        ids = train_ids
        captions = [(v, c) for v, c in sentences if v in train_set]
    classes = [f"category-{i:02d}" for i in range(max(category.values(), default=0) + 1)]
    found = index_files(root / params.videos)
    records = []
    for v in dict.fromkeys(ids):
        if v not in category:
            raise AnnotationError(f"{data_file}: video {v} (listed in the split's CSV) is not in videos[]")
        records.append(VideoRecord(v, found.get(v) or root / params.videos / f"{v}.mp4", 0, (category[v],)))
    parsed = Parsed(records, classes, files, meta={"captions": captions,
                                                   "vocab": vocabulary([c for v, c in sentences if v in train_set])})
    if split in ("train", "val"):
        parsed = _carve(parsed, split, params, cache_dir, "msrvtt")
    return parsed


def _carve(parsed: Parsed, split: str, params, cache_dir: Path, tag: str) -> Parsed:
    """train/val from the training videos, each keeping its own videos' captions."""
    out = train_val(parsed, split, params, cache_dir, tag)
    keep = {r.video_id for r in out.records}
    out.meta["captions"] = [(v, c) for v, c in parsed.meta["captions"] if v in keep]
    return out


ANETCAP_LAYOUT = ("root/{train.json, val_1.json} ({'v_<id>': {duration, timestamps, sentences}}) and "
                  "root/videos/<id>.<ext> (or v_<id>.<ext>); optional labels from activity_net.v1-3.min.json")


@dataclass(frozen=True)
class ActivityNetCaptionsParams(DataParams):
    videos: str = "videos"
    train_json: str = "train.json"
    test_json: str = "val_1.json"
    #: ActivityNet v1.3 JSON (relative to root) for class labels; without it, one class
    labels_json: str = ""


@adapter("activitynet-captions", ActivityNetCaptionsParams, ANETCAP_LAYOUT)
def activitynet_captions(params: ActivityNetCaptionsParams, root: Path, split: str, cache_dir: Path) -> Parsed:
    train_file = require(root / params.train_json, "activitynet-captions", ANETCAP_LAYOUT)
    the_file = train_file if split in ("train", "val") else require(root / params.test_json, "activitynet-captions",
                                                                      ANETCAP_LAYOUT)
    train = _anet_caps(train_file)
    table = train if the_file == train_file else _anet_caps(the_file)
    files = [train_file] if the_file == train_file else [train_file, the_file]
    label_of, classes = {}, GENERIC
    if params.labels_json:
        from samplerbench.data.adapters.untrimmed import anet_database

        lf = require(root / params.labels_json, "activitynet-captions", "the ActivityNet v1.3 JSON")
        db = anet_database(lf)
        classes = sorted({a["label"] for v in db.values() for a in v.get("annotations", [])})
        label_of = {k: classes.index(v["annotations"][0]["label"]) for k, v in db.items() if v.get("annotations")}
        files.append(lf)
    found = index_files(root / params.videos)
    records, captions = [], []
    for key, sents in table.items():
        vid = key[2:] if key.startswith("v_") else key  # CLIP4Clip's files drop the 'v_'
        path = found.get(vid) or found.get(key) or root / params.videos / f"{vid}.mp4"
        records.append(VideoRecord(key, path, 0, (label_of.get(vid, 0),)))
        captions.append((key, " ".join(s.strip() for s in sents)))
    parsed = Parsed(records, classes, files, meta={
        "captions": captions, "vocab": vocabulary([" ".join(s) for s in train.values()])})
    if split in ("train", "val"):
        parsed = _carve(parsed, split, params, cache_dir, "activitynet-captions")
    return parsed


def _anet_caps(path: Path) -> dict[str, list[str]]:
    data = read_json(path)
    try:
        return {k: list(v["sentences"]) for k, v in data.items()}
    except (AttributeError, KeyError, TypeError):
        raise AnnotationError(f"{path}: expected {{'v_<id>': {{sentences: [...]}}}}") from None


DIDEMO_LAYOUT = ("root/{train_data.json, val_data.json, test_data.json} ([{video, description, times}]) and "
                 "root/videos/<video>[.<ext>] (CLIP4Clip's layout)")


@dataclass(frozen=True)
class DiDeMoParams(DataParams):
    videos: str = "videos"


@adapter("didemo", DiDeMoParams, DIDEMO_LAYOUT)
def didemo(params: DiDeMoParams, root: Path, split: str, cache_dir: Path) -> Parsed:
    name = {"train": "train_data.json", "val": "val_data.json", "test": "test_data.json"}.get(split)
    if name is None:
        raise AnnotationError(f"didemo: no split {split!r} (train, val, test)")
    the_file = require(root / name, "didemo", DIDEMO_LAYOUT)
    train_file = require(root / "train_data.json", "didemo", DIDEMO_LAYOUT)
    paragraphs = _didemo(the_file)
    found = index_files(root / params.videos)
    records, captions = [], []
    for video, text in paragraphs.items():
        stem = re.sub(r"\.[A-Za-z0-9]+$", "", video)
        path = found.get(video) or found.get(stem) or root / params.videos / video
        records.append(VideoRecord(video, path, 0, (0,)))
        captions.append((video, text))
    vocab = vocabulary(list(_didemo(train_file).values()))
    return Parsed(records, GENERIC, sorted({the_file, train_file}), meta={"captions": captions, "vocab": vocab})


def _didemo(path: Path) -> dict[str, str]:
    """video -> its descriptions joined in order (paragraph-to-video, as CLIP4Clip)."""
    data = read_json(path)
    out: dict[str, list[str]] = {}
    try:
        for item in data:
            out.setdefault(item["video"], []).append(item["description"].strip())
    except (KeyError, TypeError, AttributeError):
        raise AnnotationError(f"{path}: expected [{{video, description, ...}}]") from None
    return {k: " ".join(v) for k, v in out.items()}
