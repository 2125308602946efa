"""Small clips encoded at test time and the published layouts of the datasets built from them.

Frame ``t`` of a clip is a flat grey of level ``level(t)`` with a coloured bar whose position
moves with ``t``, so a decoded frame says which frame it is (:func:`frame_number`).
"""

from __future__ import annotations

import csv
import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

CODECS = {".mp4": ("libx264", "yuv420p"), ".webm": ("libvpx-vp9", "yuv420p"), ".avi": ("mpeg4", "yuv420p"),
          ".mkv": ("libx264", "yuv420p")}


def level(t: int) -> int:
    return 16 + 12 * (t % 19)


def frame_image(t: int, h: int, w: int) -> np.ndarray:
    img = np.full((h, w, 3), level(t), dtype=np.uint8)
    img[: h // 4, :, 0] = 200  # a red band on top
    return img


def frame_number(frame: np.ndarray) -> int:
    """Which frame (mod 19) a decoded (3, H, W) or (H, W, 3) frame shows: its grey level."""
    a = np.asarray(frame)
    if a.shape[0] == 3:
        a = a.transpose(1, 2, 0)
    g = float(np.median(a[a.shape[0] // 2:, :, 1]))
    return int(np.argmin([abs(g - level(t)) for t in range(19)]))


def write_clip(path: Path, n: int = 12, size: tuple[int, int] = (32, 48), fps: int = 25,
               pts: list[int] | None = None, time_base: Fraction | None = None) -> Path:
    """An n-frame clip of (height, width) ``size``; codec from the suffix; ``pts`` (with
    ``time_base``) gives a variable frame rate."""
    path.parent.mkdir(parents=True, exist_ok=True)
    codec, pix = CODECS[path.suffix]
    h, w = size
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = w, h, pix
        s.codec_context.thread_count = 1
        if codec == "libx264":
            s.options = {"crf": "0", "g": "6", "bf": "0"}
        if time_base is not None:
            s.codec_context.time_base = time_base
            s.time_base = time_base
        for t in range(n):
            f = av.VideoFrame.from_ndarray(frame_image(t, h, w), format="rgb24").reformat(format=pix)
            if pts is not None:
                f.pts, f.time_base = pts[t], time_base
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def write_rawframes(folder: Path, n: int = 10, size=(32, 48), template: str = "img_{:05d}.jpg", start: int = 1):
    folder.mkdir(parents=True, exist_ok=True)
    for t in range(n):
        Image.fromarray(frame_image(t, *size)).save(folder / template.format(start + t), quality=95)
    return folder


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


UCF_CLASSES = ["ApplyEyeMakeup", "Archery", "Basketball"]


def ucf101(root: Path, per_class: int = 4) -> Path:
    """UCF101: UCF-101/<Class>/v_<Class>_gXX_cYY.avi, ucfTrainTestlist/{classInd, train/testlist01}."""
    s = root / "ucfTrainTestlist"
    s.mkdir(parents=True)
    (s / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(UCF_CLASSES)))
    train, test = [], []
    for i, c in enumerate(UCF_CLASSES):
        for g in range(per_class):
            rel = f"{c}/v_{c}_g{g + 1:02d}_c01.avi"
            write_clip(root / "UCF-101" / rel, n=10 + g)
            (test if g == 0 else train).append((rel, i + 1))
    (s / "trainlist01.txt").write_text("".join(f"{r} {k}\r\n" for r, k in train))  # the files ship with CRLF
    (s / "testlist01.txt").write_text("".join(f"{r}\r\n" for r, _ in test))
    return root


def hmdb51(root: Path, classes=("brush_hair", "cartwheel"), per_class: int = 5) -> Path:
    s = root / "testTrainMulti_7030_splits"
    s.mkdir(parents=True)
    for c in classes:
        lines = []
        for k in range(per_class):
            name = f"{c}_video_{k}.avi"
            write_clip(root / "hmdb51_org" / c / name, n=9)
            lines.append(f"{name} {[1, 2, 0][k % 3]} ")  # the files end lines with a space
        (s / f"{c}_test_split1.txt").write_text("\n".join(lines) + "\n")
    return root


def kinetics(root: Path, missing: int = 1) -> tuple[Path, list[str]]:
    """annotations/{train,validate}.csv; train/<label>/<id>_<s>_<e>.mp4, val/ flat; ``missing``
    listed val videos are not on disk (every Kinetics copy misses some)."""
    labels = ["abseiling", "air drumming", "zumba"]
    train, val, gone = [], [], []
    for i, lab in enumerate(labels):
        for k in range(3):
            yid = f"tr{i}{k}xxxxxxx"[:11]
            train.append([lab, yid, 10 * k, 10 * k + 10, "train"])
            write_clip(root / "train" / lab / f"{yid}_{10 * k:06d}_{10 * k + 10:06d}.mp4", n=10)
        yid = f"va{i}xxxxxxxx"[:11]
        val.append([lab, yid, 5, 15, "val"])
        if i < missing:
            gone.append(f"{yid}_000005_000015")
        else:
            write_clip(root / "val" / f"{yid}_000005_000015.mp4", n=10)
    head = ["label", "youtube_id", "time_start", "time_end", "split"]
    write_csv(root / "annotations" / "train.csv", head, train)
    write_csv(root / "annotations" / "validate.csv", head, val)
    return root, gone


def ssv2(root: Path) -> Path:
    templates = ["Holding something", "Pushing something from left to right", "Dropping something into something"]
    write_json(root / "labels" / "labels.json", {t: str(i) for i, t in enumerate(templates)})
    train, val = [], []
    vid = 100
    for t in templates:
        bracketed = t.replace("something", "[something]")
        for k in range(3):
            vid += 1
            write_clip(root / "20bn-something-something-v2" / f"{vid}.webm", n=8)
            (val if k == 0 else train).append({"id": str(vid), "label": t.lower(), "template": bracketed,
                                               "placeholders": ["a cup"]})
    write_json(root / "labels" / "train.json", train)
    write_json(root / "labels" / "validation.json", val)
    return root


def activitynet(root: Path, fps: int = 10) -> Path:
    """v1.3 JSON with segments in seconds; 40-frame videos at ``fps`` (4 s)."""
    db = {}
    names = ["Bathing dog", "Doing karate"]
    for i, lab in enumerate(names):
        for k in range(3):
            vid = f"a{i}{k}bcdefghi"
            write_clip(root / "videos" / f"v_{vid}.mp4", n=40, fps=fps)
            db[vid] = {"subset": "validation" if k == 0 else "training", "duration": 4.0, "resolution": "48x32",
                       "url": f"https://www.youtube.com/watch?v={vid}",
                       "annotations": [{"segment": [1.0, 2.05], "label": lab}]}
    db["zzztestonly"] = {"subset": "testing", "duration": 4.0, "annotations": []}
    write_json(root / "activity_net.v1-3.min.json", {"version": "VERSION 1.3", "taxonomy": [], "database": db})
    return root


def charades(root: Path, fps: int = 10) -> Path:
    a = root / "Charades"
    a.mkdir(parents=True)
    (a / "Charades_v1_classes.txt").write_text("c000 Holding some clothes\nc001 Putting clothes somewhere\n"
                                               "c002 Opening a door\n")
    head = ["id", "subject", "scene", "quality", "relevance", "verified", "script", "objects", "descriptions",
            "actions", "length"]
    rows = {"train": [], "test": []}
    for k in range(8):
        vid = f"V{k:04d}"
        write_clip(root / "Charades_v1_480" / f"{vid}.mp4", n=30, fps=fps)
        acts = f"c00{k % 3} 0.50 1.20;c00{(k + 1) % 3} 2.00 2.90"
        rows["test" if k < 2 else "train"].append([vid, "S", "Kitchen", 6, 7, "Yes", "s", "o", "d", acts, 3.0])
    rows["train"].append(["VNOACT", "S", "Kitchen", 6, 7, "Yes", "s", "o", "d", "", 3.0])  # no action: skipped
    write_csv(a / "Charades_v1_train.csv", head, rows["train"])
    write_csv(a / "Charades_v1_test.csv", head, rows["test"])
    return root


def msrvtt(root: Path, videos: int = 8, test: int = 3) -> Path:
    d = root / "msrvtt_data"
    words = ["a man is cooking food", "a dog runs in a park", "people dance on a stage", "a car drives fast"]
    sentences, vids = [], []
    for i in range(videos):
        vids.append({"video_id": f"video{i}", "category": i % 3, "url": "u", "start time": 0, "end time": 1,
                     "split": "train" if i >= test else "test", "id": i})
        write_clip(root / "MSRVTT_Videos" / f"video{i}.mp4", n=10)
        for k in range(3):
            sentences.append({"video_id": f"video{i}", "caption": f"{words[(i + k) % 4]} number {i}", "sen_id": len(sentences)})
    write_json(d / "MSRVTT_data.json", {"info": {}, "videos": vids, "sentences": sentences})
    write_csv(d / "MSRVTT_train.9k.csv", ["video_id"], [[f"video{i}"] for i in range(test, videos)])
    write_csv(d / "MSRVTT_JSFUSION_test.csv", ["key", "vid_key", "video_id", "sentence"],
              [[f"ret{i}", f"msr{i}", f"video{i}", f"{words[i % 4]} number {i}"] for i in range(test)])
    return root


def activitynet_captions(root: Path, videos: int = 7, test: int = 2) -> Path:
    train, val = {}, {}
    for i in range(videos):
        key = f"v_cap{i}abcdefg"
        write_clip(root / "videos" / f"{key[2:]}.mp4", n=10)  # CLIP4Clip's files drop the 'v_'
        (val if i < test else train)[key] = {"duration": 0.4, "timestamps": [[0, 0.2], [0.2, 0.4]],
                                             "sentences": [f"someone starts task {i}. ", f"then finishes {i % 3}."]}
    write_json(root / "train.json", train)
    write_json(root / "val_1.json", val)
    return root


def didemo(root: Path) -> Path:
    parts = {"train": range(0, 5), "val": range(5, 7), "test": range(7, 9)}
    for split, ids in parts.items():
        items = []
        for i in ids:
            name = f"1234@N0{i}_56789_abc{i}.mov"
            write_clip(root / "videos" / f"{name}.mp4", n=10)
            items += [{"video": name, "description": f"the girl waves {i}", "times": [[0, 0]], "annotation_id": 2 * i},
                      {"video": name, "description": f"a dog appears {i % 2}", "times": [[1, 1]],
                       "annotation_id": 2 * i + 1}]
        write_json(root / f"{split}_data.json", items)
    return root


def _rle(mask: np.ndarray) -> dict:
    """Uncompressed COCO RLE (column-major run lengths starting with zeros), as YouTube-VIS ships it."""
    flat = mask.astype(np.uint8).flatten(order="F")
    counts, cur, run = [], 0, 0
    for v in flat:
        if v == cur:
            run += 1
        else:
            counts.append(run)
            cur, run = v, 1
    counts.append(run)
    return {"counts": counts, "size": list(mask.shape)}


def youtube_vis(root: Path, videos: int = 6, frames: int = 6, size=(32, 48)) -> Path:
    """train.json + train/JPEGImages/<vid>/<frame>.jpg; one object per video, a box moving right."""
    h, w = size
    vids, anns = [], []
    for v in range(videos):
        name = f"{v:02d}f88c4f0a"
        files = [f"{name}/{t * 5:05d}.jpg" for t in range(frames)]
        segs, boxes, areas = [], [], []
        for t, f in enumerate(files):
            img = frame_image(t, h, w)
            m = np.zeros((h, w), dtype=bool)
            m[8:24, 4 + 4 * t:16 + 4 * t] = True
            img[m] = (20, 220, 20)
            p = root / "train" / "JPEGImages" / f
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(p, quality=95)
            segs.append(_rle(m) if t != 2 else None)  # the object is unannotated in frame 2
            boxes.append([4 + 4 * t, 8, 12, 16] if t != 2 else None)
            areas.append(int(m.sum()) if t != 2 else None)
        vids.append({"id": v + 1, "width": w, "height": h, "length": frames, "file_names": files})
        anns.append({"id": v + 1, "video_id": v + 1, "category_id": 1 + v % 2, "iscrowd": 0, "segmentations": segs,
                     "bboxes": boxes, "areas": areas})
    write_json(root / "train.json", {"info": {}, "licenses": [], "videos": vids, "annotations": anns,
                                     "categories": [{"id": 1, "name": "person", "supercategory": "object"},
                                                    {"id": 2, "name": "giant_panda", "supercategory": "object"}]})
    return root


def coco_video(root: Path, videos: int = 6, frames: int = 5, size=(32, 48)) -> Path:
    """BDD100K-style COCO: videos[], images[] with video_id/frame_id, polygon segmentations."""
    h, w = size
    vids, images, anns = [], [], []
    for v in range(videos):
        name = f"b1c66a42-{v:08d}"
        vids.append({"id": v + 1, "name": name})
        for t in range(frames):
            fn = f"{name}/{name}-{t + 1:07d}.jpg"
            img = frame_image(t, h, w)
            x0 = 4 + 5 * t
            img[6:22, x0:x0 + 14] = (230, 30, 30)
            p = root / "images" / fn
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(p, quality=95)
            images.append({"id": len(images) + 1, "video_id": v + 1, "frame_id": t, "file_name": fn,
                           "height": h, "width": w})
            anns.append({"id": len(anns) + 1, "image_id": len(images), "category_id": 3, "instance_id": v,
                         "bbox": [x0, 6, 14, 16], "area": 224, "iscrowd": 0,
                         "segmentation": [[x0, 6, x0 + 14, 6, x0 + 14, 22, x0, 22]]})
    write_json(root / "annotations.json", {"videos": vids, "images": images, "annotations": anns,
                                           "categories": [{"id": 3, "name": "car"}, {"id": 5, "name": "bus"}]})
    return root
