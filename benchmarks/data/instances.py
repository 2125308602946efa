"""Per-frame instance annotations of ``synth-events`` in COCO JSON, for EVFR's segmentation
experiment: every visible object of every frame (event shapes and distractors), with its
category, an RLE mask, its box and area.

Masks come from the same paint operations as the pixels (:func:`.synth.stamps`), so they are
exact. An object's mask is the set of pixels where it is the topmost *opaque* paint (distractors
at 0.9, event bodies at 1.0): a later object covers an earlier one, and the fading motion
trail of an event (0.3 and 0.55) is not part of any instance, as a motion blur is not in a real
annotation. Categories are shapes (an event's class also says its axis of motion, which one
frame does not show). Each object keeps one ``track_id`` through the video.

Layout: ``<root>/<split>_instances.json`` covering the split's first ``videos`` videos, one COCO
image per frame (``file_name`` = ``<video>.mp4#<frame>``, plus ``video_id`` and ``frame``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from samplerbench.data.annotations import AnnotationError, VideoSplit
from samplerbench.data.synth import SHAPES, Scene, SynthConfig, plan_scene, stamps

CATEGORIES = [*SHAPES, "disc", "ellipse"]  # COCO ids 1..7
OPAQUE = 0.9  # paints at least this opaque hide what lies below; trails do not


def category_id(kind: str) -> int:
    return CATEGORIES.index(kind) + 1


def label_maps(scene: Scene, size: int) -> tuple[np.ndarray, list[int]]:
    """(n, S, S) int16 maps of which object is visible at each pixel (object index + 1, 0 for
    none) and the COCO category of each object."""
    maps = np.zeros((scene.num_frames, size, size), dtype=np.int16)
    for s in stamps(scene, size):
        if s.alpha >= OPAQUE:
            maps[s.t, s.y0:s.y1, s.x0:s.x1][s.mask] = s.obj + 1
    return maps, [category_id(o.kind) for o in (*scene.distractors, *scene.events)]


def frame_label_maps(cfg: SynthConfig, key: str) -> tuple[np.ndarray, list[int]]:
    """:func:`label_maps` of a generated video, from its key (no pixel is rendered)."""
    return label_maps(plan_scene(cfg, key)[0], cfg.size)


def encode(mask: np.ndarray) -> dict:
    """COCO RLE of a boolean (H, W) mask, with ``counts`` as text (JSON-ready)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def instances_of_video(cfg: SynthConfig, video_id: str, image_id0: int, ann_id0: int) -> tuple[list, list]:
    """COCO images and annotations of one video's frames (ids counted from the given starts)."""
    maps, cats = frame_label_maps(cfg, video_id)
    images, anns = [], []
    for t, m in enumerate(maps):
        image_id = image_id0 + t
        images.append({"id": image_id, "file_name": f"{video_id}.mp4#{t}", "video_id": video_id, "frame": t,
                       "height": int(m.shape[0]), "width": int(m.shape[1])})
        for obj in np.unique(m[m > 0]):
            rle = encode(m == obj)
            anns.append({"id": ann_id0 + len(anns), "image_id": image_id, "category_id": cats[obj - 1],
                         "track_id": int(obj), "segmentation": rle, "iscrowd": 0,
                         "area": float(mask_utils.area(rle)), "bbox": [float(v) for v in mask_utils.toBbox(rle)]})
    return images, anns


def write_instances(split: VideoSplit, videos: int | None = None) -> Path:
    """Write (once) ``<root>/<split>_instances.json`` for the first ``videos`` videos of a
    generated split; an existing file covering the same videos is reused."""
    root = Path(split.meta.get("root", ""))
    config = split.meta.get("config")
    if config is None or not (root / "manifest.json").is_file():
        raise AnnotationError(f"{root or split.name}: instance masks exist only for generated synth-events data")
    records = split.records[:videos] if videos else split.records
    path = root / f"{split.split}_instances.json"
    ids = [r.video_id for r in records]
    if path.is_file():
        have = json.loads(path.read_text())
        if have.get("info", {}).get("videos") == ids:
            return path
    cfg = SynthConfig(**{**config, "num_distractors": tuple(config["num_distractors"]),
                         "splits": dict(config["splits"])})
    images, anns = [], []
    for vid in ids:
        im, an = instances_of_video(cfg, vid, len(images) + 1, len(anns) + 1)
        images += im
        anns += an
    coco = {"info": {"description": f"{split.name} {split.split}: per-frame instance masks",
                     "manifest_hash": split.manifest_hash, "videos": ids},
            "images": images, "annotations": anns,
            "categories": [{"id": i + 1, "name": c, "supercategory": "event" if c in SHAPES else "distractor"}
                           for i, c in enumerate(CATEGORIES)]}
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(coco))
    os.replace(tmp, path)
    return path


@dataclass
class FrameInstances:
    """A COCO instance file read back: per (video, frame), the semantic map (0 background,
    else category id) the segmentation model trains on, and the raw COCO dict for evaluation."""

    coco: dict
    image_ids: dict[tuple[str, int], int]
    categories: list[str]
    _index: dict[int, list] = field(default_factory=dict, repr=False)  # image id -> annotations

    @classmethod
    def load(cls, path: str | Path) -> FrameInstances:
        path = Path(path)
        try:
            coco = json.loads(path.read_text())
            ids = {(im["video_id"], int(im["frame"])): im["id"] for im in coco["images"]}
            cats = [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise AnnotationError(f"{path}: not a per-frame COCO instance file ({type(e).__name__}: {e})") from None
        return cls(coco, ids, cats)

    def semantic_maps(self, video_id: str, num_frames: int, size: tuple[int, int]) -> np.ndarray:
        """(n, H, W) uint8 category map of every frame of a video."""
        out = np.zeros((num_frames, *size), dtype=np.uint8)
        frame_of = {self.image_ids[(video_id, t)]: t for t in range(num_frames) if (video_id, t) in self.image_ids}
        for a in self._by_image(frame_of):
            out[frame_of[a["image_id"]]][mask_utils.decode(a["segmentation"]).astype(bool)] = a["category_id"]
        return out

    def _by_image(self, frame_of: dict) -> list:
        if not self._index:
            for a in self.coco["annotations"]:
                self._index.setdefault(a["image_id"], []).append(a)
        return [a for i in frame_of for a in self._index.get(i, [])]

    def subset(self, video_ids: list[str]) -> dict:
        """The COCO dict restricted to some videos' frames (the evaluation's ground truth)."""
        keep = {im["id"] for im in self.coco["images"] if im["video_id"] in set(video_ids)}
        return {**self.coco, "images": [im for im in self.coco["images"] if im["id"] in keep],
                "annotations": [a for a in self.coco["annotations"] if a["image_id"] in keep]}


def _to_rle(seg, h: int, w: int):
    """A COCO segmentation (polygons, uncompressed or compressed RLE) as compressed RLE."""
    if isinstance(seg, list):
        return mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    if isinstance(seg, dict) and isinstance(seg.get("counts"), list):
        return mask_utils.frPyObjects(seg, h, w)
    if isinstance(seg, dict) and isinstance(seg.get("counts"), str):
        return {"size": seg["size"], "counts": seg["counts"].encode()}
    raise TypeError(f"unknown segmentation {type(seg).__name__}")


def _fit_mask(rle, size: tuple[int, int]) -> np.ndarray:
    """A mask moved to the frames' geometry: shorter side resized (nearest), centre-cropped."""
    import cv2

    from samplerbench.data.video import crop_box

    m = mask_utils.decode(rle)
    rh, rw, top, left = crop_box(m.shape[0], m.shape[1], int(size[0]), int(size[1]))
    m = cv2.resize(m, (rw, rh), interpolation=cv2.INTER_NEAREST)
    return m[top:top + int(size[0]), left:left + int(size[1])]


def convert_video_instances(videos: list[tuple[str, int, int, list[list]]], categories: list[dict], size, out: Path,
                            info: dict) -> Path:
    """Write the per-frame COCO file the reduction task reads, at the frames' ``size``.

    ``videos``: (record id, height, width, per frame the list of (category id, track id,
    segmentation)) in frame order. Masks are resized and cropped like the frames; category ids
    are renumbered 1..K in the order of their source ids; an instance cropped away is dropped.
    """
    cats = sorted(categories, key=lambda c: c["id"])
    new_id = {c["id"]: i + 1 for i, c in enumerate(cats)}
    images, anns = [], []
    for vid, h, w, frames in videos:
        for t, objs in enumerate(frames):
            image_id = len(images) + 1
            images.append({"id": image_id, "video_id": vid, "frame": t, "file_name": f"{vid}#{t}",
                           "height": int(size[0]), "width": int(size[1])})
            for cat, track, seg in objs:
                m = _fit_mask(_to_rle(seg, h, w), size)
                if not m.any():
                    continue
                rle = encode(m)
                anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": new_id[cat],
                             "segmentation": rle, "area": float(m.sum()), "iscrowd": 0, "track_id": track,
                             "bbox": [float(x) for x in mask_utils.toBbox({**rle, "counts": rle["counts"].encode()})]})
    coco = {"info": info, "images": images, "annotations": anns,
            "categories": [{"id": new_id[c["id"]], "name": c["name"], "supercategory": c.get("supercategory", "")}
                           for c in cats]}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(coco))
    os.replace(tmp, out)
    return out
