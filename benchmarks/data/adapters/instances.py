"""Per-frame instance annotations of videos for EVFR's reduction task: YouTube-VIS JSON and COCO
JSON with a video id per image (BDD100K's segmentation tracks converted by its toolkit). Frames
are the annotated images (a rawframes record per video); the masks are converted by the
reduction task to the frames' geometry (:func:`samplerbench.data.instances.convert_video_instances`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from samplerbench.data.adapters.common import DataParams, Parsed, adapter, carve_val, read_json, require
from samplerbench.data.annotations import AnnotationError, VideoRecord

YTVIS_LAYOUT = ("root/train.json (YouTube-VIS: videos[{id, file_names, height, width}], annotations[{video_id, "
                "category_id, segmentations[per frame RLE or null]}], categories) and root/train/JPEGImages/<file_names>")
COCOVID_LAYOUT = ("root/annotations.json (COCO with videos[{id, name}] and images[{id, video_id, frame_id, "
                  "file_name}], annotations[{image_id, category_id, instance_id, segmentation}]) and root/images/<file_name>")


@dataclass(frozen=True)
class InstanceParams(DataParams):
    annotations: str = "train.json"
    images: str = "train/JPEGImages"
    #: a second annotation file for the test split; without it a stored seeded share of the videos
    test_annotations: str = ""
    test_fraction: float = 0.2
    #: frame rate of the annotated images (YouTube-VIS: every 5th frame of 30 fps)
    fps: float = 6.0


def _annotations(params: InstanceParams, root: Path, split: str, tag: str) -> Path:
    """The annotation file a split reads: the test file when one is given, else the one file."""
    name = params.test_annotations if params.test_annotations and split == "test" else params.annotations
    return require(root / name, tag, "the annotation file")


def _subset(records: list[VideoRecord], which: str | None, params, cache_dir: Path, tag: str) -> list[VideoRecord]:
    if which is None:
        return records
    test = carve_val(records, params.test_fraction, params.split_seed, cache_dir, f"{tag}-test")
    if which == "test":
        return [r for r in records if r.video_id in test]
    rest = [r for r in records if r.video_id not in test]
    val = carve_val(rest, params.val_fraction, params.split_seed, cache_dir, f"{tag}-val")
    return [r for r in rest if (r.video_id in val) == (which == "val")]


def _finish(records, per_video, cats, ann, params, root, split, cache_dir, tag) -> Parsed:
    # with a test file of its own the split is that file's videos; else a stored seeded share of the one file
    records = _subset(records, None if params.test_annotations else split, params, cache_dir, tag)
    keep = {r.video_id for r in records}
    data = [(v, h, w, frames) for v, h, w, frames in per_video if v in keep]
    return Parsed(records, [c["name"] for c in sorted(cats, key=lambda c: c["id"])], [ann],
                  meta={"instances_data": data, "categories": cats})


@adapter("youtube-vis", InstanceParams, YTVIS_LAYOUT)
def youtube_vis(params: InstanceParams, root: Path, split: str, cache_dir: Path) -> Parsed:
    ann = _annotations(params, root, split, "youtube-vis")
    data = read_json(ann)
    try:
        videos, annotations, cats = data["videos"], data["annotations"], data["categories"]
        by_video: dict = {}
        for a in annotations:
            by_video.setdefault(a["video_id"], []).append(a)
        records, per_video = [], []
        for v in videos:
            vid = str(v["id"])
            names = tuple(v["file_names"])
            frames = [[] for _ in names]
            for a in by_video.get(v["id"], []):
                for t, seg in enumerate(a["segmentations"][: len(names)]):
                    if seg:
                        frames[t].append((a["category_id"], a["id"], seg))
            records.append(VideoRecord(vid, root / params.images, 0, (0,), frames=names, fps=params.fps))
            per_video.append((vid, int(v["height"]), int(v["width"]), frames))
    except (KeyError, TypeError) as e:
        raise AnnotationError(f"{ann}: not a YouTube-VIS file (missing {e})") from None
    return _finish(records, per_video, cats, ann, params, root, split, cache_dir, "youtube-vis")


@dataclass(frozen=True)
class CocoVideoParams(InstanceParams):
    annotations: str = "annotations.json"
    images: str = "images"
    fps: float = 5.0


@adapter("coco-video", CocoVideoParams, COCOVID_LAYOUT)
def coco_video(params: CocoVideoParams, root: Path, split: str, cache_dir: Path) -> Parsed:
    ann = _annotations(params, root, split, "coco-video")
    data = read_json(ann)
    try:
        names = {v["id"]: str(v.get("name", v["id"])) for v in data.get("videos", [])}
        images: dict = {}
        for im in data["images"]:
            images.setdefault(im["video_id"], []).append(im)
        by_image: dict = {}
        for a in data["annotations"]:
            by_image.setdefault(a["image_id"], []).append(a)
        cats = data["categories"]
        records, per_video = [], []
        for v in sorted(images, key=lambda k: str(names.get(k, k))):
            ims = sorted(images[v], key=lambda im: im.get("frame_id", im.get("frame_index", 0)))
            vid = names.get(v, str(v))
            frames = [[(a["category_id"], a.get("instance_id", a["id"]), a["segmentation"])
                       for a in by_image.get(im["id"], []) if a.get("segmentation")] for im in ims]
            records.append(VideoRecord(vid, root / params.images, 0, (0,), frames=tuple(im["file_name"] for im in ims),
                                       fps=params.fps))
            per_video.append((vid, int(ims[0]["height"]), int(ims[0]["width"]), frames))
    except (KeyError, TypeError, IndexError) as e:
        raise AnnotationError(f"{ann}: not a COCO file with video ids (missing {e})") from None
    return _finish(records, per_video, cats, ann, params, root, split, cache_dir, "coco-video")
