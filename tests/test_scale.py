"""Scale: the feature store (sharded, resumable, verified), parallel decode and batched encode,
and sharded runs on torchrun (2 gloo processes on CPU)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from samplerbench.data.candidates import candidates_of
from samplerbench.data.media import read_record
from samplerbench.data.synth import load_split
from samplerbench.features import extract
from samplerbench.features.extract import Extraction, encode_videos, fill
from samplerbench.features.store import ShardedStore, StoreError
from samplerbench.models.encoders import FrameClassifier, ModelConfig
from samplerbench.tasks.dist import Ranks
from tests.test_runner import tiny_run, write_suite, write_token_suite  # noqa: F401  (the module's fixture)


def test_store_roundtrip_missing_shards_and_failures(tmp_path):
    ids = [f"v{i}" for i in range(10)]
    store = ShardedStore.open(tmp_path, "features", {"k": 1}, ids, shard_size=4)
    assert store.num_shards == 3 and list(store.shard_of(2)) == [8, 9]
    assert store.missing() == [0, 1, 2] and store.missing(rank=1, world=2) == [1]
    rng = np.random.default_rng(0)
    data = rng.standard_normal((10, 3, 5)).astype(np.float32)
    store.write(1, {"features": data[4:8]}, {"v6": "v6.mp4: cannot decode"})
    assert store.missing() == [0, 2]
    again = ShardedStore.open(tmp_path, "features", {"k": 1}, ids, shard_size=4)  # another process
    assert again.root == store.root and again.missing() == [0, 2]
    assert np.array_equal(again.get(5)["features"], data[5]) and again.get(6) is None
    assert again.failures() == {"v6": "v6.mp4: cannot decode"}
    store.write(0, {"features": data[:4]}, {})
    store.write(2, {"features": data[8:]}, {})
    assert np.array_equal(store.array("features"), data)
    other = ShardedStore.open(tmp_path, "features", {"k": 2}, ids, shard_size=4)  # another key: another store
    assert other.root != store.root and other.missing() == [0, 1, 2]
    with pytest.raises(ValueError, match="shard 0: features has 3 rows for 4 videos"):
        other.write(0, {"features": data[:3]}, {})


def test_a_corrupt_shard_is_named_and_recomputed(tmp_path):
    ids = [f"v{i}" for i in range(4)]
    store = ShardedStore.open(tmp_path, "features", {"k": 1}, ids, shard_size=2)
    for i in range(2):
        store.write(i, {"features": np.full((2, 3), i, np.float32)}, {})
    path = store.root / "00001.features.npy"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    fresh = ShardedStore.open(tmp_path, "features", {"k": 1}, ids, shard_size=2)
    assert fresh.get(0)["features"].tolist() == [0, 0, 0]
    with pytest.raises(StoreError, match=r"00001\.features\.npy: content does not match its sha256"):
        fresh.get(2)
    assert fresh.missing() == [1]  # the next extraction recomputes it


@pytest.fixture(scope="module")
def split(tmp_path_factory, tiny_root):
    return load_split(tiny_root, "test")


def _encoder():
    torch.manual_seed(0)
    return FrameClassifier(ModelConfig(encoder="cnn-small"), 5).eval()


@pytest.mark.parametrize("workers", [2, 0])
def test_extraction_equals_decoding_and_encoding_each_video_alone(tmp_path, split, workers):
    """Decoded and encoded in 2 worker processes (CPU: each worker encodes its video with one
    thread), or in this process 3 videos per encoder call, the stored features are those of each
    video decoded and encoded alone here, bit for bit; the pixels are the decode."""
    model = _encoder()
    ex = Extraction(8, (32, 32), None, model.features, workers=workers, batch_frames=24)
    assert extract.in_workers(ex, len(split.records)) == (workers > 0)
    ids = [r.video_id for r in split.records]
    feats = ShardedStore.open(tmp_path, "features", {"k": 1}, ids, shard_size=5)
    pixels = ShardedStore.open(tmp_path, "pixels", {"k": 1}, ids, shard_size=5)
    assert fill(split, ex, feats, pixels, progress=False) == len(ids)
    for p, rec in enumerate(split.records):
        px = read_record(rec, candidates_of(rec, 8), size=(32, 32))
        with torch.inference_mode():
            alone = model.features(px)
        assert np.array_equal(pixels.get(p)["pixels"], px.numpy())
        assert np.array_equal(feats.get(p)["features"], alone.numpy()), rec.video_id
    assert fill(split, ex, feats, pixels, progress=False) == 0  # all there: nothing decoded


@pytest.mark.parametrize("workers", [2, 0])
def test_extraction_from_decoded_frames_is_the_decode(tmp_path, split, monkeypatch, workers):
    """Given every frame of each video (what the classifier's training decoded), the stores are
    filled from them, here or in 2 worker processes: nothing is decoded (seen here with 0
    workers), and the pixels and features are those of decoding the candidates, bit for bit."""
    from samplerbench.models.classifier import decode_all

    readable = split.readable_only()
    frames = decode_all(readable, (32, 32), False, workers=0)
    model = _encoder()
    ids = [r.video_id for r in readable.records]
    ex = Extraction(8, (32, 32), None, model.features, workers=workers)
    calls = []
    real = extract.read_record
    monkeypatch.setattr(extract, "read_record", lambda *a, **k: calls.append(a) or real(*a, **k))
    feats = ShardedStore.open(tmp_path, "features", {"k": 1}, ids, shard_size=5)
    pixels = ShardedStore.open(tmp_path, "pixels", {"k": 1}, ids, shard_size=5)
    assert fill(readable, ex, feats, pixels, progress=False, frames=frames) == 0 and calls == []
    assert feats.missing() == [] and pixels.missing() == []
    for p, rec in enumerate(readable.records):
        px = real(rec, candidates_of(rec, 8), size=(32, 32))
        with torch.inference_mode():
            alone = model.features(px)
        assert np.array_equal(pixels.get(p)["pixels"], px.numpy()), rec.video_id
        assert np.array_equal(feats.get(p)["features"], alone.numpy()), rec.video_id


def test_a_cold_run_decodes_the_training_candidates_only_once(tmp_path, monkeypatch):
    """When the run trains its classifier, the training splits' stores are filled from the
    frames that training decoded: the extraction decodes only the test split's videos, and the
    stored training candidates are those of a decode."""
    from samplerbench import suite as suite_mod
    from samplerbench.tasks.run import run_suite

    path = write_token_suite(tmp_path / "tok.toml", "tiny-tok", methods=("kcenter",), eval_extra="\ndecode_workers = 0")
    calls = []
    real = extract.read_record
    monkeypatch.setattr(extract, "read_record", lambda *a, **k: calls.append(a[0].video_id) or real(*a, **k))
    s = suite_mod.load(path)
    run_suite(s, tmp_path / "results", tmp_path / "cache", progress=False, timing=False)
    test, train, val = (load_split(next((tmp_path / "cache" / "datasets").glob("synth-events-*")), k)
                        for k in ("test", "train", "val"))
    assert sorted(calls) == sorted(r.video_id for r in test.records)
    metas = {m["key"]["manifest"]: m for m in (json.loads(f.read_text())
                                                for f in (tmp_path / "cache" / "store").glob("pixels-*/meta.json"))}
    for split in (train, val):
        meta = metas[split.manifest_hash]
        store = ShardedStore.open(tmp_path / "cache", "pixels", meta["key"], meta["videos"], meta["shard_size"])
        assert store.missing() == [] and meta["videos"] == [r.video_id for r in split.records]
        for p, rec in enumerate(split.records):
            want = real(rec, candidates_of(rec, 8), size=(32, 32))
            assert np.array_equal(store.get(p)["pixels"], want.numpy()), (split.split, rec.video_id)


def test_the_fast_pool_is_max_pool2d_bit_for_bit_and_trains_as_it():
    """MaxPool2x2 (the encoder's pooling, a max of strided views without autograd) gives
    max_pool2d's numbers on even and odd sizes with ties (ReLU zeros, repeated values), and with
    gradients it is max_pool2d itself: the same gradient, a tie's to its first maximum."""
    from samplerbench.models.encoders import MaxPool2x2

    g = torch.Generator().manual_seed(0)
    for shape in ((3, 5, 8, 8), (2, 4, 7, 9), (1, 1, 2, 3), (4, 16, 64, 64)):
        x = torch.relu(torch.randn(shape, generator=g)).round(decimals=1)  # ties: zeros and repeats
        with torch.no_grad():
            fast = MaxPool2x2()(x)
        ref = torch.nn.functional.max_pool2d(x, 2)
        assert fast.shape == ref.shape and torch.equal(fast, ref), shape
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        MaxPool2x2()(a).sum().backward()
        torch.nn.functional.max_pool2d(b, 2).sum().backward()
        assert torch.equal(a.grad, b.grad)
        assert set(a.grad.unique().tolist()) <= {0.0, 1.0}  # not split between tied maxima


def test_the_cpu_encoders_run_channels_last_with_the_contiguous_layouts_numbers():
    """FrameCNN and SOSampler's ShiftCNN compute in channels_last on the CPU (oneDNN's NHWC
    kernels, faster here): their convolutions see an NHWC input, and features and input
    gradients equal the NCHW computation (the same layers called on the NCHW tensor) within
    float rounding."""
    from samplerbench.models.encoders import FrameCNN
    from samplerbench.registry import METHODS

    shift_cnn = sys.modules[type(METHODS.get("sosampler")()).__module__].ShiftCNN
    torch.manual_seed(0)
    for net in (FrameCNN(), shift_cnn(3)):
        layers = net.body if isinstance(net, FrameCNN) else torch.nn.Sequential(net.stem, net.block1, net.block2)
        x = torch.randn(6, 3, 32, 32)
        seen = []
        conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
        handle = conv.register_forward_pre_hook(
            lambda _m, args, seen=seen: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        out = net(a)
        assert seen == [True]
        ref = layers(b).amax(dim=(2, 3))
        assert seen == [True, False]  # the reference really ran NCHW
        handle.remove()
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        out.square().sum().backward()
        ref.square().sum().backward()
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_second_encoder_reads_the_stored_pixels_and_decodes_nothing(tmp_path, split, monkeypatch, workers):
    """Once a split's pixel store is whole, the features of another encoder (or of a retrained
    reader) are encoded from it, here or in 2 worker processes: no video is decoded (seen in
    this process with 0 workers), and the features are those of a decode, bit for bit; a decode
    failure stays a failure. A pixel shard that fails its sha256 is decoded again, and only it."""
    ids = [r.video_id for r in split.records]
    ex = Extraction(8, (32, 32), None, _encoder().features, workers=0)
    pixels = ShardedStore.open(tmp_path, "pixels", {"k": 1}, ids, shard_size=5)
    first = ShardedStore.open(tmp_path, "features", {"encoder": "a"}, ids, shard_size=5)
    assert fill(split, ex, first, pixels, progress=False) == len(ids)
    failed = ids[3]
    done = json.loads(pixels.done_path(0).read_text())  # as if video 3 had not decoded
    pixels.done_path(0).write_text(json.dumps({**done, "failures": {failed: f"{failed}.mp4: cannot decode"}}))
    pixels.forget(0)
    torch.manual_seed(1)
    other = FrameClassifier(ModelConfig(encoder="cnn-small"), 5).eval()  # another encoder's weights
    ex2 = Extraction(8, (32, 32), None, other.features, workers=workers)
    calls = []
    real = extract.read_record
    monkeypatch.setattr(extract, "read_record", lambda *a, **k: calls.append(a) or real(*a, **k))
    second = ShardedStore.open(tmp_path, "features", {"encoder": "b"}, ids, shard_size=5)
    assert fill(split, ex2, second, pixels, progress=False) == 0 and calls == []
    assert second.failures() == {failed: f"{failed}.mp4: cannot decode"} and second.get(3) is None
    for p, rec in enumerate(split.records):
        if p == 3:
            continue
        with torch.inference_mode():
            want = other.features(real(rec, candidates_of(rec, 8), size=(32, 32)))
        assert np.array_equal(second.get(p)["features"], want.numpy()), rec.video_id
    # a corrupt pixel shard: found by its check, decoded again alone; the others still read
    third = ShardedStore.open(tmp_path, "features", {"encoder": "c"}, ids, shard_size=5)
    path = pixels.file(1, "pixels")
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    fresh = ShardedStore.open(tmp_path, "pixels", {"k": 1}, ids, shard_size=5)
    ex3 = Extraction(8, (32, 32), None, other.features, workers=0)  # decoded here: the calls are seen
    assert fill(split, ex3, third, fresh, progress=False) == len(fresh.shard_of(1))
    assert [a[0].video_id for a in calls] == ids[5:10] and fresh.missing() == []
    for p in range(len(ids)):
        if p != 3:
            assert np.array_equal(third.get(p)["features"], second.get(p)["features"])


def test_features_alone_come_from_the_workers_without_their_pixels(tmp_path, split):
    """Without a pixel store the workers send back only the features (the same bits)."""
    model = _encoder()
    ids = [r.video_id for r in split.records]
    ex = Extraction(8, (32, 32), None, model.features, workers=2)
    items = list(extract.decoded(split.records, list(range(len(ids))), ex, encode=True, keep_pixels=False))
    assert [p for p, *_ in items] == list(range(len(ids)))
    for p, px, feats, err in items:
        assert px is None and not err
        with torch.inference_mode():
            alone = model.features(read_record(split.records[p], candidates_of(split.records[p], 8), size=(32, 32)))
        assert torch.equal(feats, alone)


def test_decode_all_in_workers_is_the_serial_decode(split):
    """The classifier's training frames decoded by 2 worker processes: every frame of every
    video, in order, the bits of a decode in this process."""
    from samplerbench.models.classifier import decode_all

    serial, parallel = decode_all(split, (32, 32), False, workers=0), decode_all(split, (32, 32), False, workers=2)
    assert len(parallel) == len(split.records)
    for rec, a, b in zip(split.records, serial, parallel, strict=True):
        assert a.shape == (rec.num_frames, 3, 32, 32) and torch.equal(a, b), rec.video_id


def test_encode_videos_groups_whole_videos():
    calls = []

    def encode(x):
        calls.append(len(x))
        return x.float().flatten(1)[:, :2]

    videos = [torch.full((n, 3, 2, 2), i, dtype=torch.uint8) for i, n in enumerate((4, 4, 4, 8))]
    out = encode_videos(encode, videos, torch.device("cpu"), batch_frames=8)
    assert calls == [8, 4, 8] and [len(o) for o in out] == [4, 4, 4, 8]
    assert [int(o[0, 0]) for o in out] == [0, 1, 2, 3]


def test_a_killed_extraction_resumes_at_the_next_shard(tmp_path, split, monkeypatch):
    model = _encoder()
    ex = Extraction(8, (32, 32), None, model.features, workers=0)
    ids = [r.video_id for r in split.records]
    clean = ShardedStore.open(tmp_path / "clean", "features", {"k": 1}, ids, shard_size=4)
    fill(split, ex, clean, progress=False)
    store = ShardedStore.open(tmp_path / "killed", "features", {"k": 1}, ids, shard_size=4)
    real, calls = extract.read_record, []

    def dies_on_the_sixth(*a, **k):
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt  # a kill in the second shard
        return real(*a, **k)

    monkeypatch.setattr(extract, "read_record", dies_on_the_sixth)
    with pytest.raises(KeyboardInterrupt):
        fill(split, ex, store, progress=False)
    monkeypatch.setattr(extract, "read_record", real)
    assert store.missing() == [1, 2]  # the first shard was written before the kill
    pixels = ShardedStore.open(tmp_path / "killed", "pixels", {"k": 1}, ids, shard_size=4)
    calls.clear()
    monkeypatch.setattr(extract, "read_record", dies_on_the_sixth)
    with pytest.raises(KeyboardInterrupt):  # streamed pixels: a half-written file, never a done shard
        fill(split, ex, None, pixels, progress=False)
    monkeypatch.setattr(extract, "read_record", real)
    assert pixels.missing() == [1, 2] and list(pixels.root.glob("00001.pixels.npy.tmp*"))
    assert fill(split, ex, store, pixels, progress=False) == len(ids) - 4
    assert np.array_equal(store.array("features"), clean.array("features"))
    assert not list(pixels.root.glob("*.tmp*"))  # the killed writer's file is gone
    for p, rec in enumerate(split.records):
        assert np.array_equal(pixels.get(p)["pixels"], read_record(rec, candidates_of(rec, 8), size=(32, 32)).numpy())


def test_ranks_split_videos_exactly():
    for n in (0, 1, 5, 12, 13):
        for world in (1, 2, 3, 8):
            parts = [list(Ranks(r, world).part(n)) for r in range(world)]
            assert sum(parts, []) == list(range(n))  # every video once, in order, no padding


def test_a_rerun_decodes_nothing(tmp_path, monkeypatch):
    """With the stores filled, a run of new cells (another budget) decodes no video: features,
    frame logits and pixels come from the stores (only the end-to-end timing runs decode, on
    purpose, and they are switched off here)."""
    from samplerbench import suite as suite_mod
    from samplerbench.data import media
    from samplerbench.tasks.classification import Classification
    from samplerbench.tasks.run import run_suite

    path = write_suite(tmp_path / "tiny.toml")
    path.write_text(path.read_text() + '[[methods]]\nname = "mgsampler"\n')  # it observes pixels
    s = suite_mod.load(path)
    run_suite(s, tmp_path / "results", tmp_path / "cache", progress=False)
    calls = []
    real = media.read_frames
    monkeypatch.setattr(media, "read_frames", lambda *a, **k: calls.append(a) or real(*a, **k))
    monkeypatch.setattr(Classification, "finish", lambda self, run, cells: None)
    again = run_suite(s.narrowed(None, [2], None), tmp_path / "results", tmp_path / "cache", run_id="other",
                      progress=False)
    summary = json.loads((again / "summary.json").read_text())
    assert summary["classification computed"] > 0 and calls == []
    assert list((tmp_path / "cache" / "store").glob("pixels-*/*.done.json"))
    # without a pixel store: the same rows, no pixels on disk, the pixel-observing cells decode
    calls.clear()
    path.write_text(path.read_text().replace("timing_videos = 2", "timing_videos = 2\npixel_store = false"))
    lean = run_suite(suite_mod.load(path), tmp_path / "results", tmp_path / "cache-lean", run_id="lean",
                     progress=False)
    key = ["method", "budget", "seed", "metric"]
    a = pd.read_csv(tmp_path / "results" / f"{s.name}-{s.digest()[:8]}" / "rows.csv").query("kind != 'timing'")
    b = pd.read_csv(lean / "rows.csv").query("kind != 'timing'")
    pd.testing.assert_frame_equal(a.sort_values(key)[key + ["value", "fingerprint"]].reset_index(drop=True),
                                  b.sort_values(key)[key + ["value", "fingerprint"]].reset_index(drop=True))
    assert not list((tmp_path / "cache-lean" / "store").glob("pixels-*")) and calls


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


@pytest.mark.slow
def test_two_gloo_ranks_give_the_single_process_rows_and_resume_after_a_kill(tiny_run, tmp_path):  # noqa: F811
    """``torchrun --nproc-per-node 2`` (gloo, CPU), cold cache, the test split's store in 4-video
    shards: rows (every quality and cost value, fingerprints, video counts) and selection hashes
    equal the single-process run's; a rank killed mid-run and the run started again resumes."""
    _, _, ref_dir = tiny_run
    path = write_suite(tmp_path / "tiny.toml")
    text = path.read_text().replace("timing_videos = 2", "timing_videos = 2\nstore_shard_videos = 4")
    path.write_text(text)
    results, cache = tmp_path / "results", tmp_path / "cache"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "samplerbench", "run", str(path), "--results", str(results), "--cache", str(cache),
           "--run-id", "dist", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    cells = results / "dist" / "cells" / "classification"
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    killed = False
    while p.poll() is None:
        if cells.is_dir() and len(list(cells.glob("*.json"))) >= 2:
            workers = _children(p.pid)
            if workers:
                os.kill(workers[-1], signal.SIGKILL)  # one rank dies; torchrun stops the other
                killed = True
                break
        time.sleep(0.02)
    err = p.communicate(timeout=600)[1].decode()
    assert killed, err[-2000:]
    assert p.returncode != 0
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((results / "dist" / "summary.json").read_text())
    assert summary.get("classification reused", 0) >= 2  # the cells before the kill were kept
    prov = json.loads(next((results / "dist" / "provenance").glob("*.json")).read_text())
    assert prov["ranks"] == 2
    key = ["method", "budget", "seed", "metric"]
    cols = key + ["value", "fingerprint", "n_videos", "n_failed"]
    a = pd.read_csv(ref_dir / "rows.csv").query("kind != 'timing'").sort_values(key).reset_index(drop=True)
    b = pd.read_csv(results / "dist" / "rows.csv").query("kind != 'timing'").sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a[cols], b[cols])
    sa = pd.read_json(ref_dir / "classification_selections.jsonl", lines=True).sort_values(["cell", "video"])
    sb = pd.read_json(results / "dist" / "classification_selections.jsonl", lines=True).sort_values(["cell", "video"])
    assert len(sa) == len(sb) and sa["hash"].tolist() == sb["hash"].tolist()
    assert sb.groupby("cell")["video"].apply(lambda v: v.is_unique).all()  # no padded duplicates
    shards = sorted((cache / "store").glob("features-*/*.done.json"))
    assert len(shards) >= 3  # the test split (12 videos, 3 shards) and the training splits


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="Linux's /proc")
def test_the_memory_probe_reports_its_own_peak_not_its_parents():
    """The memory benchmark's probe runs in a subprocess, whose ``ru_maxrss`` on Linux starts at
    its parent's peak (carried across exec): with 2 GiB held here, that reads over 2 GiB while
    the probe's own peak (``VmHWM``) stays that of a process that imported torch."""
    held = np.ones(1 << 29, dtype=np.float32)  # 2 GiB, touched
    code = ("import resource; from samplerbench.throughput.memory_probe import peak_rss_mib; "
            "print(peak_rss_mib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    own, inherited = map(float, out.stdout.split())
    del held
    assert inherited > 2048  # the trap
    assert 0 < own < 1024
