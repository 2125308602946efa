"""The embedded dataset: deterministic, event ground truth consistent, loader errors name file:line."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from samplerbench.data.annotations import AnnotationError, parse_list
from samplerbench.data.synth import CLASSES, SynthConfig, load_split, render_video
from samplerbench.data.video import read_frames


def test_render_is_deterministic_and_event_is_visible(tiny_cfg):
    a, ev_a = render_video(tiny_cfg, "train/x")
    b, ev_b = render_video(tiny_cfg, "train/x")
    assert np.array_equal(a, b) and ev_a == ev_b
    (label, s, e), = ev_a
    assert 0 <= label < len(CLASSES) and tiny_cfg.min_event <= e - s <= tiny_cfg.max_event
    quiet = SynthConfig(**{**tiny_cfg.__dict__, "noise_std": 0.0})
    frames, ((_, s, e),) = render_video(quiet, "train/x")
    assert frames.shape[1:] == (32, 32, 3)


def test_multilabel_events_are_disjoint_and_distinct():
    cfg = SynthConfig(multilabel=True, size=32, splits={"test": 1})
    for i in range(30):
        _, evs = render_video(cfg, f"v{i}")
        assert 1 <= len(evs) <= 3
        labels = [lab for lab, _, _ in evs]
        assert len(set(labels)) == len(labels)
        spans = sorted((s, e) for _, s, e in evs)
        assert all(e1 < s2 for (_, e1), (s2, _) in zip(spans, spans[1:], strict=False))


def test_generated_split_reads_back(tiny_root, tiny_cfg):
    split = load_split(tiny_root, "test")
    assert len(split) == tiny_cfg.splits["test"] and len(split.manifest_hash) == 64
    rec = split.records[0]
    assert rec.events and rec.labels == (rec.events[0].label,)
    frames = read_frames(rec.path, [0, rec.num_frames - 1])
    assert frames.shape == (2, 3, 32, 32)
    manifest = json.loads((tiny_root / "manifest.json").read_text())
    assert manifest["splits"]["test"]["sha256"] == split.manifest_hash


def test_same_seed_same_manifest(tmp_path, tiny_root, tiny_cfg):
    from samplerbench.data.synth import generate

    again = generate(SynthConfig(**{**tiny_cfg.__dict__, "splits": dict(tiny_cfg.splits)}), tmp_path / "again",
                     workers=1, progress=False)
    assert load_split(again, "test").manifest_hash == load_split(tiny_root, "test").manifest_hash


@pytest.mark.parametrize("line,msg", [
    ("a.mp4 10", "expected 'path num_frames label"),
    ("a.mp4 ten 1", "num_frames must be integers"),
    ("a.mp4 0 1", "num_frames must be positive"),
    ("a.mp4 10 99", "label 99 out of range 0..9"),
])
def test_bad_annotation_names_file_and_line(tmp_path, line, msg):
    f = tmp_path / "list.txt"
    f.write_text("ok.mp4 10 1\n" + line + "\n")
    with pytest.raises(AnnotationError, match=rf"list.txt:2: {msg}"):
        parse_list(f, tmp_path, num_classes=10)


def _stat(pid: int) -> list[str]:
    """A process's /proc stat fields after its name (state, ppid, ...); empty when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return []


def _alive(pid: int) -> bool:
    """Running, not a zombie."""
    return _stat(pid)[:1] not in ([], ["Z"])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:  # gone meanwhile
        return ""


def _children(pid: int) -> dict[int, str]:
    """Live child processes of ``pid``: pid -> command line."""
    kids = [int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit()]
    return {k: _cmdline(k) for k in kids if _alive(k) and _stat(k)[1:2] == [str(pid)]}


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc (Linux)")
@pytest.mark.parametrize("after_s", [0, 3], ids=["while-they-start", "while-they-render"])
def test_the_generation_workers_exit_when_the_run_is_killed(tmp_path, after_s):
    """A run SIGKILLed while it generates the dataset takes its pool's workers with it: they were
    left blocked on the call queue for good (about 550 MB each; two after every CI run), also
    when it died while they were still starting (they took the new parent for theirs)."""
    import signal
    import subprocess
    import sys
    import time

    script = ("from samplerbench.data.synth import SynthConfig, generate\n"
              f"generate(SynthConfig(splits={{'train': 5000}}), {str(tmp_path / 'ds')!r}, workers=2, progress=False)\n")
    p = subprocess.Popen([sys.executable, "-c", script])
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2 and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            workers = [pid for pid, cmd in _children(p.pid).items() if "--multiprocessing-fork" in cmd]
        assert len(workers) == 2, "the pool's two workers never started"
        time.sleep(after_s)  # 0: still importing; 3: rendering their first videos
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        deadline = time.monotonic() + 60
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [w for w in workers if _alive(w)], "generation workers outlived the killed run"
    finally:
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)
