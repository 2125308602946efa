"""EVFR's selection-for-training task: instance masks, ratio budgets, seeded selections, the
segmentation model, and a tiny run end to end (resume, failures, report)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pycocotools.coco import COCO

from samplerbench import suite as suite_mod
from samplerbench.data.instances import (
    CATEGORIES,
    FrameInstances,
    frame_label_maps,
    label_maps,
    write_instances,
)
from samplerbench.data.synth import (
    PALETTE,
    Scene,
    SceneObject,
    SynthConfig,
    load_split,
    plan_scene,
    render_video,
)
from samplerbench.metrics.coco import coco_gt, mask_and_box_ap
from samplerbench.models.segmentation import SegConfig, predict_instances, train_segmenter
from samplerbench.registry import METHODS
from samplerbench.sampling import Budget, VideoView
from samplerbench.tasks.reduction import VideoData, select_frames
from samplerbench.tasks.run import run_suite
from tests.conftest import cache_with_a_corrupt_video

TINY_ML = dict(seed=5, size=32, min_frames=24, max_frames=40, min_event=4, max_event=8, multilabel=True,
               splits={"train": 4, "test": 2})


def _scene(objects: list[SceneObject], n: int = 3) -> Scene:
    d = [o for o in objects if o.label < 0]
    e = [o for o in objects if o.label >= 0]
    return Scene(n, {}, tuple(d), tuple(e))


def test_label_maps_follow_paint_order_and_skip_the_trail():
    """A disc (painted first) under a square event (painted last): the overlap is the square's;
    the square's fading trail (behind it, along its motion) belongs to no instance."""
    disc = SceneObject("disc", -1, 0, 3, 5.0, 0, (12.0, 16.0), (0.0, 0.0))
    # a horizontal event (label 0: square-horizontal) moving +2 px per frame, centre x = 14 + 2 t
    square = SceneObject("square", 0, 0, 3, 5.0, 1, (14.0, 0.0), (2.0, 16.0))
    maps, cats = label_maps(_scene([disc, square]), 32)
    assert cats == [CATEGORIES.index("disc") + 1, CATEGORIES.index("square") + 1]
    t = 2  # square centre x = 18, its ghosts at 15 and 12
    disc_px = np.hypot(*np.mgrid[0:32, 0:32][::-1] - np.array([12.0, 16.0])[:, None, None]) <= 5
    yy, xx = np.mgrid[0:32, 0:32]
    square_px = (np.abs(xx - 18) <= 5 * 0.85) & (np.abs(yy - 16) <= 5 * 0.85)
    assert np.array_equal(maps[t] == 2, square_px)  # the body, all of it: it is on top
    assert np.array_equal(maps[t] == 1, disc_px & ~square_px)  # the disc minus what covers it
    ghost_only = (np.abs(xx - 9) <= 4.25) & (np.abs(yy - 16) <= 4.25) & ~disc_px & ~square_px
    assert ghost_only.any() and (maps[t][ghost_only] == 0).all()


def test_event_masks_match_the_rendered_pixels():
    """Where the masks say an event body is visible, the rendered frame shows the event's
    colour (up to the sensor noise, std 5); the masks are read from the renderer's own stamps."""
    cfg = SynthConfig(**TINY_ML)
    key = "train/train_00001"
    frames, events = render_video(cfg, key)
    maps, cats = frame_label_maps(cfg, key)
    scene, _ = plan_scene(cfg, key)
    nd = len(scene.distractors)
    for j, ev in enumerate(scene.events):
        px = frames[maps == nd + j + 1].astype(np.float32)
        assert len(px) > 20
        err = np.abs(px - PALETTE[ev.colour]).max(axis=1)
        assert np.median(err) < 10 and np.quantile(err, 0.99) < 25
        visible = {int(t) for t in np.nonzero((maps == nd + j + 1).any(axis=(1, 2)))[0]}
        assert visible <= set(range(ev.start, ev.end)) and len(visible) >= (ev.end - ev.start) // 2


@pytest.fixture(scope="module")
def tiny_ml(tmp_path_factory):
    from samplerbench.data.synth import generate

    return generate(SynthConfig(**TINY_ML), tmp_path_factory.mktemp("ml") / "tiny-ml", workers=1, progress=False)


def test_coco_file_round_trips_and_is_reused(tiny_ml):
    split = load_split(tiny_ml, "train")
    path = write_instances(split, 2)
    coco = json.loads(path.read_text())
    assert coco["info"]["videos"] == [r.video_id for r in split.records[:2]]
    assert len(coco["images"]) == sum(r.num_frames for r in split.records[:2])
    api = COCO(str(path))  # pycocotools reads it as a COCO file
    for a in api.loadAnns(api.getAnnIds())[:50]:
        assert api.annToMask(a).sum() == a["area"] > 0
    inst = FrameInstances.load(path)
    rec = split.records[1]
    maps, cats = frame_label_maps(SynthConfig(**TINY_ML), rec.video_id)
    want = np.where(maps > 0, np.asarray([0, *cats])[maps], 0)
    assert np.array_equal(inst.semantic_maps(rec.video_id, rec.num_frames, (32, 32)), want)
    mtime = path.stat().st_mtime_ns
    assert write_instances(split, 2).stat().st_mtime_ns == mtime  # same videos: reused
    write_instances(split, 3)
    assert len(json.loads(path.read_text())["info"]["videos"]) == 3


def test_a_bad_instance_file_names_itself(tmp_path):
    bad = tmp_path / "train_instances.json"
    bad.write_text("{\"images\": 3}")
    with pytest.raises(ValueError, match="train_instances.json"):
        FrameInstances.load(bad)


@pytest.mark.parametrize("t", [1, 7, 24, 51, 72, 96, 150])
def test_ratio_budget_asks_for_a_stride_k_pass(t):
    stride = METHODS.get("stride")()
    for k in range(1, 11):
        want = list(range(0, t, k))
        assert Budget("ratio", 1 / k).frames(t) == len(want)
        v = VideoData("v", torch.zeros(t, 3, 8, 8, dtype=torch.uint8), torch.zeros(t, 8, 8, dtype=torch.uint8))
        (video, idx, _), = select_frames(stride, "stride", [v], k, 0, [])
        assert idx.tolist() == want


def _videos(n_videos=3, seed=0) -> list[VideoData]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n_videos):
        n = 30 + 7 * i
        frames = torch.randint(0, 255, (n, 3, 16, 16), generator=g, dtype=torch.uint8)
        v = VideoData(f"v{i}", frames, torch.zeros(n, 16, 16, dtype=torch.uint8))
        v.feats = torch.rand(n, 12, generator=g).numpy()
        out.append(v)
    return out


@pytest.mark.parametrize("name,params", [("random", {}), ("evfr-fps", {}), ("evfr-afs", {"index": "ssim"}),
                                         ("evfr-afs", {"index": "feature"}), ("mgsampler", {})])
def test_selections_have_the_ratio_count_and_repeat_with_the_seed(name, params):
    videos = _videos()
    sampler = METHODS.get(name)(**params)
    for k in (2, 5, 10):
        a = select_frames(sampler, name, videos, k, 0, [])
        b = select_frames(METHODS.get(name)(**params), name, videos, k, 0, [])
        gflops = np.mean([f for _, _, f in a]) / 1e9
        for (v, ia, _), (_, ib, _) in zip(a, b, strict=True):
            n = len(v.frames)
            assert np.array_equal(ia, ib)
            assert np.all(np.diff(ia) > 0) and ia[-1] < n
            assert len(ia) == -(-n // k) or (name == "mgsampler" and len(ia) <= -(-n // k))
        if name in ("random", "evfr-fps"):  # the seed moves random draws and FPS's start
            c = select_frames(sampler, name, videos, k, 1, [])
            assert any(not np.array_equal(ia, ic) for (_, ia, _), (_, ic, _) in zip(a, c, strict=True))
        if name != "random":
            assert gflops > 0


def test_a_failing_video_is_recorded_and_the_rest_selected():
    videos = _videos()
    videos[1].feats = None  # FPS cannot run on it
    fails = []
    chosen = select_frames(METHODS.get("evfr-fps")(), "evfr-fps", videos, 2, 0, fails)
    assert [v.video_id for v, _, _ in chosen] == ["v0", "v2"]
    assert len(fails) == 1 and fails[0]["video"] == "v1" and "v1" in fails[0]["error"]


def test_segmenter_learns_and_repeats_bit_for_bit(tiny_ml):
    """On a tiny set, 60 steps lift mask AP on the training frames well above the untrained
    weights; the same seeds give the same weights."""
    split = load_split(tiny_ml, "train")
    inst = FrameInstances.load(write_instances(split, 2))
    from samplerbench.data.video import read_frames

    recs = split.records[:2]
    frames = torch.cat([read_frames(r.path, np.arange(r.num_frames), size=(32, 32)) for r in recs])
    maps = torch.cat([torch.from_numpy(inst.semantic_maps(r.video_id, r.num_frames, (32, 32))) for r in recs])
    ids = [inst.image_ids[(r.video_id, t)] for r in recs for t in range(r.num_frames)]
    gt = coco_gt(inst.subset([r.video_id for r in recs]))
    cfg = SegConfig(iterations=60, batch=16, lr=1e-2)
    m1, rec = train_segmenter(frames, maps, len(CATEGORIES), cfg, init_seed=0, order_seed="a")
    m2, _ = train_segmenter(frames, maps, len(CATEGORIES), cfg, init_seed=0, order_seed="a")
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    m0, _ = train_segmenter(frames, maps, len(CATEGORIES), SegConfig(iterations=0), init_seed=0, order_seed="a")
    trained = mask_and_box_ap(gt, predict_instances(m1, frames, ids))["mask_AP50"]
    untrained = mask_and_box_ap(gt, predict_instances(m0, frames, ids))["mask_AP50"]
    assert trained > untrained + 20, (trained, untrained)
    assert rec["train_frames"] == len(frames) and np.isfinite(rec["final_loss"])


def write_reduction_suite(path: Path) -> Path:
    splits = TINY_ML["splits"]
    params = ", ".join(f"{k} = {str(v).lower() if isinstance(v, bool) else v}" for k, v in TINY_ML.items()
                       if k not in ("splits", "multilabel"))
    path.write_text(textwrap.dedent(f"""
        name = "tiny-reduction"
        task = "reduction"
        [dataset]
        name = "synth-events-ml"
        frame_size = [32, 32]
        params = {{ {params}, splits = {{ train = {splits['train']}, test = {splits['test']} }} }}
        [reduction]
        train_videos = 4
        test_videos = 2
        ratios = [1, 2, 5]
        [reduction.model]
        iterations = 8
        batch = 8
        [eval]
        seeds = [0, 1]
        [[methods]]
        name = "stride"
        label = "UFS"
        [[methods]]
        name = "evfr-afs"
        params = {{ index = "flow" }}
        label = "AFS-flow"
    """))
    return path


@pytest.mark.slow
def test_reduction_run_end_to_end(tmp_path, monkeypatch):
    from samplerbench.reports.render import render

    s = suite_mod.load(write_reduction_suite(tmp_path / "red.toml"))
    assert s.task == "reduction"
    run_dir = run_suite(s, tmp_path / "results", tmp_path / "cache", progress=False)
    rows = pd.read_csv(run_dir / "reduction_rows.csv")
    cells = rows.groupby(["method", "k", "seed"]).size()
    assert len(cells) == 12
    frames = rows[rows.metric == "frames"].set_index(["method", "k", "seed"])["value"]
    total = frames[("full", 1, 0)]
    assert frames[("stride", 2, 0)] == pytest.approx(sum(-(-n // 2) for n in _num_frames(tmp_path)))
    assert frames[("stride", 5, 1)] < frames[("stride", 2, 1)] < total
    assert rows["git_commit"].notna().all() and rows["provenance_id"].notna().all()
    sel = json.loads(next((run_dir / "cells" / "reduction").glob("stride__S2__s0.json")).read_text())["videos"]
    assert all(v["indices"] == list(range(0, len(v["indices"]) * 2, 2)) for v in sel)

    out = render(run_dir, tmp_path / "out")
    for f in ("reduction_map_vs_ratio.png", "reduction_map_vs_ratio.pdf", "table_reduction_mask_ap.md",
              "table_reduction_box_ap.tex", "table_reduction_frames.md", "table_reduction_detail.csv"):
        assert (out / f).stat().st_size > 0, f
    t = pd.read_csv(out / "table_reduction_mask_ap.csv")
    assert list(t.columns) == ["Method", "S1", "S2", "S5"] and list(t["Method"]) == ["UFS", "AFS-flow"]

    def summary():
        return json.loads((run_dir / "summary.json").read_text())

    run_suite(s, tmp_path / "results", tmp_path / "cache", progress=False)
    assert summary().get("reduction computed", 0) == 0 and summary()["reduction reused"] == 12  # nothing recomputed
    (run_dir / "cells" / "reduction" / "stride__S5__s1.json").unlink()  # as if killed before it
    run_suite(s, tmp_path / "results", tmp_path / "cache", progress=False)
    assert summary()["reduction computed"] == 1

    # a corrupt training video: recorded, and every cell still completes on the others
    cache, victim = cache_with_a_corrupt_video(tmp_path / "cache", tmp_path / "cache_bad",
                                               "synth-events-ml-*/videos/train/*.mp4")
    bad = run_suite(s, tmp_path / "results", cache, run_id="bad", progress=False)
    rows = pd.read_csv(bad / "reduction_rows.csv")
    assert len(rows.groupby(["method", "k", "seed"])) == 12 and (rows["n_failed"] == 1).all()
    prov = json.loads(next((bad / "provenance").glob("*.json")).read_text())
    assert victim.name in next(iter(prov["video_failures"].values()))


def _num_frames(tmp_path) -> list[int]:
    root = next((tmp_path / "cache" / "datasets").glob("synth-events-ml-*"))
    return [r.num_frames for r in load_split(root, "train").records]


@pytest.mark.parametrize("ratio,t,want", [(0.3, 10, [0, 4, 8]), (1 / 3, 10, [0, 3, 6, 9]), (0.45, 9, [0, 3, 6]),
                                          (1.0, 4, [0, 1, 2, 3]), (0.5, 7, [0, 2, 4, 6])])
def test_stride_at_a_ratio_rounds_the_stride_up(ratio, t, want):
    """Worked by hand: stride = ceil(1 / ratio), so that a ratio that is not a unit fraction
    never selects more than its budget ceil(ratio * T) (0.3 of 10: stride 4, 3 frames; a
    rounded stride 3 would take 4 frames for a budget of 3)."""
    sel = METHODS.get("stride")().select(VideoView("v", t, np.arange(t)), Budget("ratio", ratio),
                                         np.random.default_rng(0))
    assert sel.indices.tolist() == want and len(want) <= Budget("ratio", ratio).frames(t)
