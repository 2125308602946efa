"""Scale benchmarks: filling the feature store with decode workers against the single-process
decode-then-encode loop (timed side by side in the same run), and a run's peak memory at 1x and
4x the videos (each in a fresh process)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

VIDEOS = 16


@pytest.fixture(scope="module")
def scale_split(tmp_path_factory):
    from samplerbench.data.synth import SynthConfig, generate, load_split

    root = generate(SynthConfig(seed=12, splits={"test": VIDEOS}), tmp_path_factory.mktemp("scale") / "d", workers=1,
                    progress=False)
    return root, load_split(root, "test")


def test_extraction(normalised, benchmark, scale_split, device, tmp_path):
    """The feature store of 16 videos (T = 32, 64x64), decoded in worker processes while the
    main process encodes; ``extra_info`` has videos/s of it and of the plain loop (decode a
    video, encode it, next) measured alternately in this run, and their ratio."""
    from samplerbench.data.candidates import candidates_of
    from samplerbench.data.media import read_record
    from samplerbench.features.extract import Extraction, default_workers, fill
    from samplerbench.features.store import ShardedStore
    from samplerbench.models.encoders import FrameClassifier, ModelConfig

    _, split = scale_split
    torch.manual_seed(0)
    model = FrameClassifier(ModelConfig(), 10).to(device).eval()
    workers = default_workers()
    ex = Extraction(32, (64, 64), None, model.features, device=device, workers=workers)
    ids = [r.video_id for r in split.records]
    fresh = iter(range(1_000_000))

    def extract():
        store = ShardedStore.open(tmp_path / f"s{next(fresh)}", "features", {}, ids)
        return fill(split, ex, store, progress=False)

    @torch.inference_mode()
    def loop():
        for r in split.records:
            model.features(read_record(r, candidates_of(r, 32), size=(64, 64)).to(device)).cpu()

    side = {"loop": [], "store": []}
    for _ in range(5):  # alternated, so both see the same moments of the machine
        for name, fn in (("loop", loop), ("store", extract)):
            t0 = time.perf_counter()
            fn()
            side[name].append(time.perf_counter() - t0)
    assert normalised(extract, reference="pipeline") == VIDEOS
    loop_s, store_s = float(np.median(side["loop"])), float(np.median(side["store"]))
    benchmark.extra_info.update(workers=workers, videos_per_s=VIDEOS / store_s, loop_videos_per_s=VIDEOS / loop_s,
                                speedup_vs_loop=loop_s / store_s)
    print(f"\nextraction: {VIDEOS / store_s:.1f} videos/s with {workers} decode worker(s), "
          f"loop {VIDEOS / loop_s:.1f} videos/s: {loop_s / store_s:.2f}x ({torch.get_num_threads()} torch thread(s))")


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
    benchmark.extra_info.update(reference="pipeline", reference_min_s=ref_s,
                                normalised=benchmark.stats.stats.min / ref_s, peak_rss_mib_1x=probes["1x"]["peak_rss_mib"],
                                peak_rss_mib_4x=probes["4x"]["peak_rss_mib"], rss_ratio_4x=ratio,
                                videos_1x=probes["1x"]["videos"], videos_4x=probes["4x"]["videos"])
    print(f"\npeak RSS: {probes['1x']['peak_rss_mib']:.0f} MiB at {probes['1x']['videos']} videos, "
          f"{probes['4x']['peak_rss_mib']:.0f} MiB at {probes['4x']['videos']}: {ratio:.3f}x")
    assert ratio <= 1.2, probes
