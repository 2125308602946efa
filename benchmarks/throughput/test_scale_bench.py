"""Scale benchmarks: filling the feature store with decode workers against the single-process
decode-then-encode loop (timed side by side in the same run), and a run's peak memory at 1x and
4x the videos (each in a fresh process)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import torch

VIDEOS = 16  # the memory benchmark's split (1x; 4x are copies of it)
EXTRACT_VIDEOS = 64  # extraction: enough that the workers' start (about 0.2 s) is not what is measured
#: issue 20's target is 1.6x on 2 cores; this machine gives 1.3-2.0x (its steal time moves both
#: sides), so the assertion guards the design (a worker that only decoded gave 1.13-1.19x) and
#: extra_info has the ratio
EXTRACT_FLOOR = 1.3
#: features encoded from the stored pixels against decoding again (measured 1.5-1.9x on 800
#: videos here); the floor guards the design: a path that still decoded would be about 1.0x
STORED_FLOOR = 1.2


def _split(tmp_path_factory, n: int, name: str):
    from samplerbench.data.synth import SynthConfig, generate, load_split

    root = generate(SynthConfig(seed=12, splits={"test": n}), tmp_path_factory.mktemp(name) / "d", workers=1,
                    progress=False)
    return root, load_split(root, "test")


@pytest.fixture(scope="module")
def scale_split(tmp_path_factory):
    return _split(tmp_path_factory, VIDEOS, "scale")


def test_extraction(normalised, benchmark, tmp_path_factory, device, tmp_path):
    """The feature store of 64 videos (T = 32, 64x64) filled by the extraction workers (on CPU
    each decodes and encodes its videos, one per core); ``extra_info`` has its videos/s and
    that of the plain single-process loop (decode a video, encode it with every core's thread,
    next), measured alternately in this run, and their ratio (at least ``EXTRACT_FLOOR`` on 2 or more cores)."""
    from samplerbench.data.candidates import candidates_of
    from samplerbench.data.media import read_record
    from samplerbench.features.extract import Extraction, default_workers, fill
    from samplerbench.features.store import ShardedStore
    from samplerbench.kernels.threads import cores, threads
    from samplerbench.models.encoders import FrameClassifier, ModelConfig

    _, split = _split(tmp_path_factory, EXTRACT_VIDEOS, "extract")
    torch.manual_seed(0)
    model = FrameClassifier(ModelConfig(), 10).to(device).eval()
    workers = default_workers(device)
    ex = Extraction(32, (64, 64), None, model.features, device=device, workers=workers)
    ids = [r.video_id for r in split.records]
    fresh = iter(range(1_000_000))

    def extract():
        store = ShardedStore.open(tmp_path / f"s{next(fresh)}", "features", {}, ids)
        return fill(split, ex, store, progress=False)

    @torch.inference_mode()
    def loop(records=split.records):
        with threads(cores()):  # the loop's best: every core for the encoder (FFmpeg picks its own)
            for r in records:
                model.features(read_record(r, candidates_of(r, 32), size=(64, 64)).to(device)).cpu()

    loop(split.records[:2])  # warm-up: the decoder's libraries (then inherited by the workers)
    side = {"loop": [], "store": []}
    for _ in range(3):  # alternated, so both see the same moments of the machine
        for name, fn in (("loop", loop), ("store", extract)):
            t0 = time.perf_counter()
            fn()
            side[name].append(time.perf_counter() - t0)
    assert normalised(extract, reference="pipeline") == EXTRACT_VIDEOS
    loop_s, store_s = min(side["loop"]), min(side["store"])  # each side's best: what the machine allows
    speedup = loop_s / store_s
    benchmark.extra_info.update(workers=workers, cores=cores(), videos_per_s=EXTRACT_VIDEOS / store_s,
                                loop_videos_per_s=EXTRACT_VIDEOS / loop_s, speedup_vs_loop=speedup)
    print(f"\nextraction: {EXTRACT_VIDEOS / store_s:.1f} videos/s with {workers} worker(s), "
          f"loop {EXTRACT_VIDEOS / loop_s:.1f} videos/s ({cores()} threads): {speedup:.2f}x")
    if device.type == "cpu" and cores() >= 2:
        assert speedup >= EXTRACT_FLOOR, side


def test_features_from_stored_pixels_vs_decoding(normalised, benchmark, tmp_path_factory, device, tmp_path):
    """Another encoder's features of 64 videos (T = 32, 64x64) whose candidates are in the pixel
    store (a retrained reader, a second encoder): encoded from the stored pixels against decoded
    again, both in the extraction workers, alternated in this run; ``extra_info`` has both
    videos/s and their ratio (at least ``STORED_FLOOR`` on CPU: the decode is what is saved)."""
    from samplerbench.features.extract import Extraction, default_workers, fill
    from samplerbench.features.store import ShardedStore
    from samplerbench.models.encoders import FrameClassifier, ModelConfig

    _, split = _split(tmp_path_factory, EXTRACT_VIDEOS, "stored")
    torch.manual_seed(0)
    model = FrameClassifier(ModelConfig(), 10).to(device).eval()
    ex = Extraction(32, (64, 64), None, model.features, device=device, workers=default_workers(device))
    ids = [r.video_id for r in split.records]
    pixels = ShardedStore.open(tmp_path / "pixels", "pixels", {}, ids)
    fill(split, ex, None, pixels, progress=False)
    fresh = iter(range(1_000_000))

    def features(px):
        return fill(split, ex, ShardedStore.open(tmp_path / f"f{next(fresh)}", "features", {}, ids), px, progress=False)

    side = {"decode": [], "stored": []}
    for _ in range(3):  # alternated, so both see the same moments of the machine
        for name, px in (("decode", None), ("stored", pixels)):
            t0 = time.perf_counter()
            assert features(px) == (EXTRACT_VIDEOS if px is None else 0)  # videos decoded
            side[name].append(time.perf_counter() - t0)
    normalised(features, pixels, reference="pipeline")
    decode_s, stored_s = min(side["decode"]), min(side["stored"])
    benchmark.extra_info.update(videos_per_s=EXTRACT_VIDEOS / stored_s, decode_videos_per_s=EXTRACT_VIDEOS / decode_s,
                                speedup_vs_decode=decode_s / stored_s, workers=ex.workers)
    print(f"\nfeatures from stored pixels: {EXTRACT_VIDEOS / stored_s:.1f} videos/s, decoded again "
          f"{EXTRACT_VIDEOS / decode_s:.1f}: {decode_s / stored_s:.2f}x")
    if device.type == "cpu":
        assert decode_s / stored_s >= STORED_FLOOR, side


def _probe(root, copies: int, work) -> dict:
    out = subprocess.run([sys.executable, "-m", "samplerbench.throughput.memory_probe", str(root), str(copies),
                          str(work)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_peak_memory_flat(benchmark, references, scale_split, tmp_path):
    """A run's peak RSS over 4x the videos is at most 1.2x of its peak over 1x (extraction and two
    cells, uniform and the pixel-observing mgsampler, at 160x160): the stores keep nothing per
    video in memory. Each size runs in a fresh process."""
    root, _ = scale_split
    t0 = time.perf_counter()
    references.pipeline()
    ref_s = time.perf_counter() - t0
    probes = {}

    def both():
        probes["1x"] = _probe(root, 1, tmp_path / "one")
        probes["4x"] = _probe(root, 4, tmp_path / "four")

    benchmark.pedantic(both, rounds=1, iterations=1)
    ratio = probes["4x"]["peak_rss_mib"] / probes["1x"]["peak_rss_mib"]
    # its target is the memory ratio, asserted below; its time (two fresh processes, each a small
    # run) over one reference call spread 717-2002 across unchanged runs on the AMD EPYC of
    # 2026-12-02, too wide for any tolerance: reported by the gate, not gated
    benchmark.extra_info.update(reference="pipeline", reference_min_s=ref_s, time_gated=False,
                                normalised=benchmark.stats.stats.min / ref_s, peak_rss_mib_1x=probes["1x"]["peak_rss_mib"],
                                peak_rss_mib_4x=probes["4x"]["peak_rss_mib"], rss_ratio_4x=ratio,
                                videos_1x=probes["1x"]["videos"], videos_4x=probes["4x"]["videos"])
    print(f"\npeak RSS: {probes['1x']['peak_rss_mib']:.0f} MiB at {probes['1x']['videos']} videos, "
          f"{probes['4x']['peak_rss_mib']:.0f} MiB at {probes['4x']['videos']}: {ratio:.3f}x")
    assert ratio <= 1.2, probes
