"""Trimmed-clip classification datasets given as lists or folders: MMAction2's video and
rawframes lists (``video-list``), a folder of class folders (``video-folder``), UCF101 and
HMDB51 in their published split files."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from samplerbench.data.adapters.common import (
    VIDEO_EXTS,
    DataLayoutError,
    DataParams,
    Parsed,
    adapter,
    carve_val,
    class_index,
    require,
    train_val,
)
from samplerbench.data.annotations import (
    AnnotationError,
    VideoRecord,
    check_labels,
    inside_root,
    parse_list,
    read_lines,
)


@dataclass(frozen=True)
class ListParams(DataParams):
    #: split name -> list file (relative to root): ``{train = "train.txt", test = "val.txt"}``;
    #: without ``val``, it is carved from ``train`` (``val_fraction``)
    lists: dict | None = None
    #: ``video`` (``path label``) or ``rawframes`` (``frame_dir total_frames label``)
    format: str = "video"
    multilabel: bool = False
    #: the folder the list's paths are relative to (MMAction2's ``data_prefix``), under root
    prefix: str = ""
    #: a class-names file (one per line, line i = class i); else classes are ``0..max label``
    classes: str = ""
    #: rawframes: image name of frame i (MMAction2's ``filename_tmpl``) and the first index
    template: str = "img_{:05d}.jpg"
    start_index: int = 1
    #: rawframes: the frame rate the images were extracted at (events in seconds)
    fps: float = 30.0


def _class_names(root: Path, params) -> list[str] | None:
    if not params.classes:
        return None
    return [line for _, line in read_lines(require(root / params.classes, "video-list", "a class-names file"))]


def _list_for(params, split: str) -> tuple[str, bool]:
    lists = dict(params.lists or {})
    if split in lists:
        return lists[split], False
    if split == "val" and "train" in lists:
        return lists["train"], True
    raise AnnotationError(f"no list for split {split!r} (lists: {sorted(lists)})")


@adapter("video-list", ListParams, "MMAction2 lists: 'path label' (video) or 'frame_dir total_frames label' "
         "(rawframes, images named by template) per split, paths relative to root/prefix")
def video_list(params: ListParams, root: Path, split: str, cache_dir: Path) -> Parsed:
    name, carve = _list_for(params, split)
    list_file = require(root / name, "video-list", f"the {split} list file {name}")
    classes = _class_names(root, params)
    records = parse_list(list_file, root / params.prefix, len(classes) if classes else None, fmt=params.format,
                         multilabel=params.multilabel, template=params.template, start_index=params.start_index)
    if params.format == "rawframes":
        records = [_with_fps(r, params.fps) for r in records]
    if classes is None:  # 0..the largest label of any of the suite's lists (the same for every split)
        top = max(x for r in records for x in r.labels)
        for other in set((params.lists or {}).values()) - {name}:
            if (root / other).is_file():
                top = max(top, *(x for r in parse_list(root / other, root / params.prefix, None, fmt=params.format,
                                                       multilabel=params.multilabel, template=params.template,
                                                       start_index=params.start_index) for x in r.labels))
        classes = [str(i) for i in range(top + 1)]
    files = [list_file] + ([root / params.classes] if params.classes else [])
    parsed = Parsed(records, classes, files, params.multilabel)
    if carve or (split == "train" and "val" not in (params.lists or {})):
        parsed = train_val(parsed, split, params, cache_dir, f"video-list-{list_file.name}")
    return parsed


def _with_fps(r: VideoRecord, fps: float) -> VideoRecord:
    return replace(r, fps=fps)


@dataclass(frozen=True)
class FolderParams(DataParams):
    #: split name -> sub-folder holding ``<class>/<video>``; without it, root holds the class
    #: folders and train/val/test are a seeded stratified split (``test_fraction``, stored)
    folders: dict | None = None
    test_fraction: float = 0.2


@adapter("video-folder", FolderParams, "root/<class name>/<video file> (classes sorted by name); split folders "
         "optional ({train = 'train', test = 'test'})")
def video_folder(params: FolderParams, root: Path, split: str, cache_dir: Path) -> Parsed:
    folders = dict(params.folders or {})
    base = root / folders["train"] if "train" in folders else root
    classes = sorted(p.name for p in require(base, "video-folder", "root/<class>/<video>").iterdir() if p.is_dir())
    if not classes:
        raise DataLayoutError(f"{base}: no class folders; the video-folder adapter expects root/<class name>/<video>")
    cls = {c: i for i, c in enumerate(classes)}

    def scan(folder: Path) -> list[VideoRecord]:
        out = []
        for c in sorted(p for p in folder.iterdir() if p.is_dir()):
            label = class_index(cls, c.name, f"{folder}/{c.name}")
            for f in sorted(c.iterdir()):
                if f.is_file() and f.suffix.lower() in VIDEO_EXTS:
                    out.append(VideoRecord(f"{c.name}/{f.stem}", f, 0, (label,)))
        return out

    if split in folders:
        return _carve_if(Parsed(scan(root / folders[split]), classes, []), split, params, cache_dir, folders)
    if split == "val" and "train" in folders:
        return train_val(Parsed(scan(base), classes, []), "val", params, cache_dir, "video-folder-train")
    if folders:
        raise AnnotationError(f"{root}: no folder for split {split!r} (folders: {sorted(folders)})")
    # no split folders: test is a stored stratified share of everything, val a share of the rest
    everything = Parsed(scan(root), classes, [])
    test_ids = carve_val(everything.records, params.test_fraction, params.split_seed, cache_dir, "video-folder-test")
    if split == "test":
        return Parsed([r for r in everything.records if r.video_id in test_ids], classes, [])
    rest = Parsed([r for r in everything.records if r.video_id not in test_ids], classes, [])
    return train_val(rest, split, params, cache_dir, "video-folder-trainval")


def _carve_if(parsed: Parsed, split: str, params, cache_dir: Path, folders: dict) -> Parsed:
    if split == "train" and "val" not in folders:
        return train_val(parsed, "train", params, cache_dir, "video-folder-train")
    return parsed


@dataclass(frozen=True)
class UCF101Params(DataParams):
    fold: int = 1
    videos: str = "UCF-101"
    splits: str = "ucfTrainTestlist"


@adapter("ucf101", UCF101Params, "root/UCF-101/<Class>/v_<Class>_gXX_cYY.avi and root/ucfTrainTestlist/"
         "{classInd.txt, trainlist0{1,2,3}.txt, testlist0{1,2,3}.txt}")
def ucf101(params: UCF101Params, root: Path, split: str, cache_dir: Path) -> Parsed:
    if params.fold not in (1, 2, 3):
        raise AnnotationError(f"ucf101: fold must be 1, 2 or 3, not {params.fold}")
    layout = "ucfTrainTestlist/{classInd.txt, trainlist0N.txt, testlist0N.txt}"
    sdir = root / params.splits
    ind = require(sdir / "classInd.txt", "ucf101", layout)
    classes, cls = [], {}
    for lineno, line in read_lines(ind):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) != len(classes) + 1:
            raise AnnotationError(f"{ind}:{lineno}: expected '<index from 1> <ClassName>' in order, got {line!r}")
        cls[parts[1]] = len(classes)
        classes.append(parts[1])
    name = f"{'test' if split == 'test' else 'train'}list0{params.fold}.txt"
    lst = require(sdir / name, "ucf101", layout)
    records, seen = [], set()
    for lineno, line in read_lines(lst):
        where = f"{lst}:{lineno}"
        parts = line.split()
        rel = parts[0]
        label = class_index(cls, rel.split("/")[0], where)
        if len(parts) > 1:  # trainlist: '<Class>/<file> <index from 1>', which must agree
            if len(parts) != 2 or not parts[1].isdigit():
                raise AnnotationError(f"{where}: expected '<Class>/<file>.avi <class index>', got {line!r}")
            if int(parts[1]) - 1 != label:
                raise AnnotationError(f"{where}: class index {parts[1]} disagrees with the folder {rel.split('/')[0]}")
        check_labels((label,), len(classes), where)
        vid = Path(rel).stem
        if vid in seen:
            raise AnnotationError(f"{where}: duplicate video {rel}")
        seen.add(vid)
        records.append(VideoRecord(vid, inside_root(root / params.videos, rel, where), 0, (label,)))
    parsed = Parsed(records, classes, [ind, lst])
    if split in ("train", "val"):
        parsed = train_val(parsed, split, params, cache_dir, f"ucf101-fold{params.fold}")
    return parsed


@dataclass(frozen=True)
class HMDB51Params(DataParams):
    fold: int = 1
    videos: str = "hmdb51_org"
    splits: str = "testTrainMulti_7030_splits"


@adapter("hmdb51", HMDB51Params, "root/hmdb51_org/<class>/<video>.avi and root/testTrainMulti_7030_splits/"
         "<class>_test_split{1,2,3}.txt ('<video>.avi 1|2|0': 1 train, 2 test, 0 unused)")
def hmdb51(params: HMDB51Params, root: Path, split: str, cache_dir: Path) -> Parsed:
    if params.fold not in (1, 2, 3):
        raise AnnotationError(f"hmdb51: fold must be 1, 2 or 3, not {params.fold}")
    sdir = require(root / params.splits, "hmdb51", "testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt")
    suffix = f"_test_split{params.fold}.txt"
    files = sorted(p for p in sdir.iterdir() if p.name.endswith(suffix))
    if not files:
        raise DataLayoutError(f"{sdir}: no *{suffix} files; the hmdb51 adapter expects <class>{suffix}")
    classes = [p.name[: -len(suffix)] for p in files]
    want = "2" if split == "test" else "1"
    records, seen = [], set()
    for label, f in enumerate(files):
        for lineno, line in read_lines(f):
            where = f"{f}:{lineno}"
            parts = line.split()
            if len(parts) < 2 or parts[-1] not in ("0", "1", "2"):
                raise AnnotationError(f"{where}: expected '<video>.avi 0|1|2', got {line!r}")
            if parts[-1] != want:
                continue
            name = " ".join(parts[:-1])
            vid = Path(name).stem
            if vid in seen:
                raise AnnotationError(f"{where}: duplicate video {name}")
            seen.add(vid)
            records.append(VideoRecord(vid, inside_root(root / params.videos / classes[label], name, where), 0,
                                       (label,)))
    parsed = Parsed(records, classes, files)
    if split in ("train", "val"):
        parsed = train_val(parsed, split, params, cache_dir, f"hmdb51-fold{params.fold}")
    return parsed
