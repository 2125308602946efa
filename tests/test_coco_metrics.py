"""COCO mask and box AP (pycocotools through samplerbench.metrics.coco) on hand-made cases,
and the arg-max-to-instances rule of the segmentation model."""

from __future__ import annotations

import numpy as np
import pytest

from samplerbench.data.instances import encode
from samplerbench.metrics.coco import coco_ap, coco_gt, instances_from_probs, mask_and_box_ap

H = W = 32


def _box(y0, y1, x0, x1) -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def _gt(masks_per_image: list[list[tuple[int, np.ndarray]]]) -> dict:
    images, anns = [], []
    for i, masks in enumerate(masks_per_image, start=1):
        images.append({"id": i, "height": H, "width": W, "file_name": f"{i}.png"})
        for cat, m in masks:
            ys, xs = np.nonzero(m)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "segmentation": encode(m),
                         "area": float(m.sum()), "iscrowd": 0,
                         "bbox": [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
                                  float(ys.max() - ys.min() + 1)]})
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}


def _det(image_id, cat, m, score=0.9) -> dict:
    return {"image_id": image_id, "category_id": cat, "segmentation": encode(m), "score": score}


def test_perfect_prediction_scores_one():
    a, b = _box(2, 12, 3, 13), _box(15, 25, 10, 30)
    gt = coco_gt(_gt([[(1, a), (2, b)], [(1, b)]]))
    out = mask_and_box_ap(gt, [_det(1, 1, a), _det(1, 2, b), _det(2, 1, b)])
    assert all(v == pytest.approx(100.0) for v in out.values()), out


def test_no_prediction_scores_zero():
    gt = coco_gt(_gt([[(1, _box(2, 12, 3, 13))]]))
    assert mask_and_box_ap(gt, []) == dict.fromkeys(mask_and_box_ap(gt, []), 0.0)
    # a prediction of the wrong category is no better
    assert coco_ap(gt, [_det(1, 2, _box(2, 12, 3, 13))])["AP"] == 0.0


def test_half_overlap_counts_at_iou_half_only():
    """IoU exactly 0.5 (a 10x5 prediction inside a 10x10 object): a match at the 0.5 threshold
    and at none of the nine above it, so AP50 = 1, AP75 = 0 and AP@[.5:.95] = 1/10; the box IoU
    is the same 0.5."""
    gt = coco_gt(_gt([[(1, _box(0, 10, 0, 10))]]))
    for kind in ("segm", "bbox"):
        out = coco_ap(gt, [_det(1, 1, _box(0, 5, 0, 10))], kind)
        assert out["AP50"] == pytest.approx(1.0)
        assert out["AP75"] == pytest.approx(0.0)
        assert out["AP"] == pytest.approx(0.1)


def test_half_recall_gives_the_interpolated_area():
    """Two objects, one found exactly: precision 1 up to recall 0.5, nothing beyond; COCO's
    101-point interpolation gives 51/101 at every threshold."""
    a, b = _box(2, 12, 3, 13), _box(15, 25, 10, 30)
    gt = coco_gt(_gt([[(1, a), (1, b)]]))
    assert coco_ap(gt, [_det(1, 1, a)])["AP"] == pytest.approx(51 / 101)


def test_a_false_positive_ranked_first_costs_precision():
    """One object; the higher-scored detection misses it, the lower one hits: precision 1/2 at
    recall 1, so every threshold's AP is 0.5."""
    a = _box(2, 12, 3, 13)
    gt = coco_gt(_gt([[(1, a)]]))
    dets = [_det(1, 1, _box(20, 30, 20, 30), 0.9), _det(1, 1, a, 0.5)]
    assert coco_ap(gt, dets)["AP"] == pytest.approx(0.5)


def test_ground_truth_without_instances_is_an_error():
    with pytest.raises(ValueError, match="no instances"):
        coco_ap(coco_gt(_gt([[]])), [])


def test_instances_from_probs_by_hand():
    """Class 1 in two separate blobs, class 2 in one touching blob 1 (different classes never
    merge), one 2-pixel speck dropped by min_area; scores are the mean class probability."""
    probs = np.zeros((3, 8, 8), dtype=np.float32)
    probs[0] = 0.5  # background wins wherever no class is painted
    probs[1, 0:2, 0:3] = 0.95   # blob A, class 1
    probs[1, 5:8, 5:8] = 0.8    # blob B, class 1
    probs[2, 0:2, 3:5] = 0.7    # blob C, class 2, touching A
    probs[1, 4, 0:2] = 0.99     # a 2-pixel speck, class 1
    out = instances_from_probs(probs, min_area=3)
    got = sorted((c, int(m.sum()), round(s, 4)) for c, m, s in out)
    assert got == [(1, 6, 0.95), (1, 9, 0.8), (2, 4, 0.7)]
    diagonal = np.zeros((2, 4, 4), dtype=np.float32)
    diagonal[0] = 0.5
    diagonal[1, [0, 1, 2], [0, 1, 2]] = 1.0  # 8-connected: one instance
    assert len(instances_from_probs(diagonal, min_area=1)) == 1


def test_per_category_and_supercategory_ap():
    """Category 1 found exactly, category 2 missed: AP_cat1 = 1, AP_cat2 = 0, the overall AP
    their mean; supercategories average their categories."""
    a, b = _box(2, 12, 3, 13), _box(15, 25, 10, 30)
    d = _gt([[(1, a), (2, b)]])
    d["categories"] = [{"id": 1, "name": "a", "supercategory": "x"}, {"id": 2, "name": "b", "supercategory": "y"}]
    gt = coco_gt(d)
    res = coco_ap(gt, [_det(1, 1, a)])
    assert res["AP_cat1"] == pytest.approx(1.0) and res["AP_cat2"] == pytest.approx(0.0)
    assert res["AP"] == pytest.approx(0.5)
    out = mask_and_box_ap(gt, [_det(1, 1, a)])
    assert out["mask_AP_x"] == pytest.approx(100.0) and out["box_AP_y"] == pytest.approx(0.0)
