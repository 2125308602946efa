"""COCO detection metrics through pycocotools: mask AP and box AP (AP@[.5:.95], AP50, AP75)
of predicted instances against COCO ground truth, the numbers of EVFR's figures.

pycocotools is the reference; this module only adapts in- and output: ground truth as a COCO
dict, predictions as ``{"image_id", "category_id", "segmentation" (RLE), "score"}`` records
(their box is taken from the mask, as ``COCO.loadRes`` does), and no detections at all scores
0 rather than failing (``loadRes`` cannot take an empty list). Its console output is silenced.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

STATS = ("AP", "AP50", "AP75")


def _quiet(fn, *args):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


def coco_gt(dataset: dict) -> COCO:
    """A pycocotools COCO object from an in-memory COCO dict."""
    gt = COCO()
    gt.dataset = dataset
    _quiet(gt.createIndex)
    return gt


def coco_ap(gt: COCO, predictions: list[dict], iou_type: str = "segm") -> dict[str, float]:
    """AP, AP50 and AP75 (fractions in [0, 1]) over the ground truth's images and categories,
    and ``AP_cat<id>`` per category (NaN for a category without ground truth). ``iou_type`` is
    ``segm`` (mask IoU) or ``bbox`` (box IoU; boxes from the masks)."""
    if iou_type not in ("segm", "bbox"):
        raise ValueError(f"iou_type must be segm or bbox, not {iou_type!r}")
    if not gt.getAnnIds():
        raise ValueError("the ground truth has no instances: AP is undefined")
    if not predictions:
        return {**dict.fromkeys(STATS, 0.0),
                **{f"AP_cat{c}": 0.0 if gt.getAnnIds(catIds=[c]) else float("nan") for c in gt.getCatIds()}}
    dets = []
    for p in predictions:
        d = {k: p[k] for k in ("image_id", "category_id", "segmentation", "score")}
        if iou_type == "bbox":
            d["bbox"] = [float(v) for v in mask_utils.toBbox(p["segmentation"])]
        dets.append(d)
    dt = _quiet(gt.loadRes, dets)
    ev = COCOeval(gt, dt, iouType=iou_type)
    ev.params.imgIds = sorted(gt.getImgIds())
    _quiet(ev.evaluate)
    _quiet(ev.accumulate)
    _quiet(ev.summarize)
    out = {k: max(0.0, float(v)) for k, v in zip(STATS, ev.stats[:3], strict=True)}  # -1: nothing to score
    prec = ev.eval["precision"][:, :, :, 0, -1]  # (IoU thresholds, recall points, categories), all areas, 100 dets
    for i, cat in enumerate(ev.params.catIds):
        p = prec[:, :, i]
        out[f"AP_cat{cat}"] = float(p[p > -1].mean()) if (p > -1).any() else float("nan")  # as summarize() does
    return out


def mask_and_box_ap(gt: COCO, predictions: list[dict]) -> dict[str, float]:
    """``mask_AP``, ``mask_AP50``, ``mask_AP75``, ``box_AP``, ``box_AP50``, ``box_AP75``, in
    percent; and per supercategory of the ground truth (``mask_AP_<supercategory>``: the mean of
    its categories' AP), which shows which kinds of object a model has learned."""
    out = {}
    groups: dict[str, list[int]] = {}
    for c in gt.loadCats(gt.getCatIds()):
        if "supercategory" in c:
            groups.setdefault(c["supercategory"], []).append(c["id"])
    for prefix, kind in (("mask", "segm"), ("box", "bbox")):
        res = coco_ap(gt, predictions, kind)
        for k in STATS:
            out[f"{prefix}_{k}"] = 100.0 * res[k]
        for name, ids in groups.items():
            vals = [res[f"AP_cat{i}"] for i in ids if not np.isnan(res[f"AP_cat{i}"])]
            if vals:
                out[f"{prefix}_AP_{name}"] = 100.0 * float(np.mean(vals))
    return out


def instances_from_probs(probs: np.ndarray, min_area: int = 4) -> list[tuple[int, np.ndarray, float]]:
    """Instances from one frame's per-pixel class probabilities (C + 1, H, W), class 0 the
    background: each connected component (8-neighbour) of a class in the arg-max map is an
    instance, scored by the mean probability of its class over it; components smaller than
    ``min_area`` pixels are dropped. Returns [(category id, mask, score)]."""
    from scipy import ndimage

    labels = probs.argmax(0)
    out = []
    for c in np.unique(labels):
        if c == 0:
            continue
        comp, n = ndimage.label(labels == c, structure=np.ones((3, 3), dtype=bool))
        for i in range(1, n + 1):
            m = comp == i
            if m.sum() >= min_area:
                out.append((int(c), m, float(probs[c][m].mean())))
    return out
