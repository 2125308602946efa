"""``synth-events``: the embedded, offline dataset, generated from a seed.

Each video (48-96 frames, 64x64, 25 fps) is mostly redundant: a slowly drifting textured
background, sensor noise and distractor objects (discs, ellipses) that drift through long
stretches of every class. One short event (8-16 frames, about 15% of the video, at a random
time) decides the class: one of 5 shapes crossing the frame horizontally or vertically, drawn
with a fading motion trail, in a random colour (so no colour channel gives the class away).
Frame choice matters: a frame outside the event carries no class information.

The multi-label variant ``synth-events-ml`` has 1-3 events of distinct classes in disjoint
windows. Videos are written once as H.264 mp4 through PyAV, with MMAction2 list files, an
events JSON (which frames carry each event) and a manifest whose hash identifies each split.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from samplerbench.data.annotations import VideoSplit, attach_events, file_sha256, parse_list
from samplerbench.data.facts import FactsCache, probe_records
from samplerbench.data.parallel import exit_with_parent, pid_alive
from samplerbench.data.video import write_video
from samplerbench.registry import DATASETS
from samplerbench.seeding import derive_seed

log = logging.getLogger(__name__)

SHAPES = ("square", "triangle", "plus", "ring", "diamond")
AXES = ("horizontal", "vertical")
CLASSES = [f"{s}-{a}" for s in SHAPES for a in AXES]
PALETTE = np.array(
    [[230, 60, 50], [50, 200, 80], [60, 90, 230], [235, 210, 50], [210, 70, 210], [60, 215, 215], [245, 245, 245]],
    dtype=np.float32,
)


@dataclass(frozen=True)
class SynthConfig:
    """Everything the generated files depend on (its hash names the cache folder)."""

    seed: int = 0
    size: int = 64
    min_frames: int = 48
    max_frames: int = 96
    fps: int = 25
    event_frac: float = 0.15
    min_event: int = 8
    max_event: int = 16
    num_distractors: tuple[int, int] = (2, 3)
    noise_std: float = 5.0
    multilabel: bool = False
    max_events: int = 3
    splits: dict = field(default_factory=lambda: {"train": 800, "val": 100, "test": 300})
    gop: int = 12
    version: int = 3  # bump when the renderer or the file layout changes

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def _shape_mask(kind: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    ax, ay = np.abs(dx), np.abs(dy)
    if kind == "square":
        return np.maximum(ax, ay) <= r * 0.85
    if kind == "diamond":
        return ax + ay <= r * 1.15
    if kind == "triangle":  # apex up
        return (dy <= r * 0.8) & (dy >= -r) & (ax <= (dy + r) * 0.62)
    if kind == "plus":
        return ((ax <= r * 0.33) & (ay <= r)) | ((ay <= r * 0.33) & (ax <= r))
    if kind == "ring":
        d = np.hypot(dx, dy)
        return (d <= r) & (d >= r * 0.5)
    if kind == "disc":
        return np.hypot(dx, dy) <= r
    if kind == "ellipse":
        return (dx / (r * 1.4)) ** 2 + (dy / (r * 0.7)) ** 2 <= 1
    raise ValueError(kind)


def _background_params(rng: np.random.Generator) -> dict:
    """The random draws of the background: drift velocity and k = 6 waves."""
    v = rng.uniform(0.2, 0.5) * rng.choice([-1, 1], size=2)
    k = 6
    freq = rng.uniform(0.02, 0.09, size=(k, 2)) * rng.choice([-1, 1], size=(k, 2))
    phase = rng.uniform(0, 2 * np.pi, size=k)
    amp = rng.normal(0, 1, size=(k, 3)) * np.array([1.0, 0.35, 0.35])  # luminance, then two tints
    return {"v": v, "freq": freq, "phase": phase, "amp": amp}


def _background(params: dict, size: int, n: int) -> np.ndarray:
    """A smooth colour texture (a few random low-frequency waves), larger than the frame and
    cropped along a slow drift: (n, S, S, 3)."""
    v, freq, phase, amp = params["v"], params["freq"], params["phase"], params["amp"]
    k = len(phase)
    margin = int(np.ceil(np.abs(v).max() * n)) + 1
    big = size + 2 * margin
    yy, xx = np.mgrid[0:big, 0:big].astype(np.float32)
    # Elementwise float64 only: a BLAS matmul here rounds differently with memory alignment and
    # thread count, and x264 turns one flipped pixel into a different file.
    yy, xx = yy.astype(np.float64), xx.astype(np.float64)
    chan = [np.zeros((big, big)) for _ in range(3)]  # luminance, tint a, tint b
    for j in range(k):
        wave = np.sin(xx * freq[j, 0] + yy * freq[j, 1] + phase[j])
        for c in range(3):
            chan[c] += wave * amp[j, c]
    lum, ta, tb = chan
    tex = np.stack([lum + ta, lum - ta + tb, lum - tb], axis=-1)
    tex = (110 + 12 * tex).astype(np.float32)
    frames = np.empty((n, size, size, 3), dtype=np.float32)
    for t in range(n):
        oy, ox = np.rint(margin + v * t).astype(int)
        frames[t] = tex[oy : oy + size, ox : ox + size]
    return frames


def _event_windows(rng: np.random.Generator, cfg: SynthConfig, n: int, k: int) -> list[tuple[int, int]]:
    """k disjoint [start, end) windows of about event_frac * n frames each."""
    windows: list[tuple[int, int]] = []
    for _ in range(200):
        if len(windows) == k:
            break
        length = int(np.clip(round(cfg.event_frac * n) + rng.integers(-1, 2), cfg.min_event, cfg.max_event))
        s = int(rng.integers(0, n - length + 1))
        if all(s >= e + 1 or s + length + 1 <= b for b, e in windows):
            windows.append((s, s + length))
    return sorted(windows)


@dataclass(frozen=True)
class SceneObject:
    """One drawn object: a distractor (``label`` -1, kind disc/ellipse, drifting, no trail) or
    an event (``label`` its class, a shape crossing along one axis with a motion trail)."""

    kind: str
    label: int
    start: int
    end: int
    radius: float
    colour: int  # index into PALETTE
    origin: tuple[float, float]
    velocity: tuple[float, float]  # distractors: (vx, vy) per frame; events: (step, across)


@dataclass(frozen=True)
class Scene:
    """Everything random about one video, drawn before any pixel is painted."""

    num_frames: int
    background: dict
    distractors: tuple[SceneObject, ...]
    events: tuple[SceneObject, ...]


def plan_scene(cfg: SynthConfig, key: str) -> tuple[Scene, np.random.Generator]:
    """Draw a video's scene from its key; returns the generator too (the renderer draws the
    sensor noise from it last). Cheap: captions are written from the plan, without rendering."""
    rng = np.random.Generator(np.random.PCG64(derive_seed("synth", cfg.digest(), key)))
    S = cfg.size
    sc = S / 64.0
    n = int(rng.integers(cfg.min_frames, cfg.max_frames + 1))
    background = _background_params(rng)
    # Distractors: present in every class, for long stretches, drifting slowly, no trail.
    distractors = []
    for _ in range(int(rng.integers(cfg.num_distractors[0], cfg.num_distractors[1] + 1))):
        kind = ("disc", "ellipse")[int(rng.integers(2))]
        r = rng.uniform(4.5, 7.5) * sc
        length = int(rng.integers(int(0.5 * n), n + 1))
        s = int(rng.integers(0, n - length + 1))
        p0 = rng.uniform(r, S - r, size=2)
        v = rng.uniform(-0.6, 0.6, size=2) * sc
        colour = int(rng.integers(len(PALETTE)))
        distractors.append(SceneObject(kind, -1, s, s + length, float(r), colour, tuple(p0), tuple(v)))
    # Events: a shape crossing the frame along one axis with a two-ghost motion trail.
    k = int(rng.integers(1, cfg.max_events + 1)) if cfg.multilabel else 1
    windows = _event_windows(rng, cfg, n, k)
    labels = rng.permutation(len(CLASSES))[: len(windows)]
    events = []
    for (s, e), label in zip(windows, labels, strict=True):
        r = rng.uniform(6.0, 8.0) * sc
        dist = rng.uniform(24, 36) * sc
        step = dist / (e - s) * rng.choice([-1, 1])
        along0 = S / 2 - step * (e - s) / 2
        across = rng.uniform(r + 2, S - r - 2)
        colour = int(rng.integers(len(PALETTE)))
        events.append(SceneObject(SHAPES[label // 2], int(label), s, e, float(r), colour, (float(along0), 0.0),
                                  (float(step), float(across))))
    return Scene(n, background, tuple(distractors), tuple(events)), rng


@dataclass(frozen=True)
class Stamp:
    """One object painted on one frame: the boolean ``mask`` over rows y0:y1 and columns x0:x1
    (the shape clipped to a box around its centre), its colour and opacity. ``obj`` numbers the
    scene's objects, distractors first, then events."""

    t: int
    obj: int
    y0: int
    y1: int
    x0: int
    x1: int
    mask: np.ndarray
    colour: int
    alpha: float


def stamps(scene: Scene, size: int):
    """Every paint operation of a scene, in painting order (later ones cover earlier ones): the
    renderer paints them and the instance masks (:mod:`.instances`) are read from them, so the
    two cannot disagree."""
    S = size
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)

    def stamp(t, obj, kind, cx, cy, r, colour, alpha):
        y0, y1 = max(0, int(cy - r - 1)), min(S, int(cy + r + 2))
        x0, x1 = max(0, int(cx - r - 1)), min(S, int(cx + r + 2))
        if y0 >= y1 or x0 >= x1:
            return None
        m = _shape_mask(kind, xx[y0:y1, x0:x1] - cx, yy[y0:y1, x0:x1] - cy, r)
        return Stamp(t, obj, y0, y1, x0, x1, m, colour, alpha)

    for i, d in enumerate(scene.distractors):
        p0, v = np.asarray(d.origin), np.asarray(d.velocity)
        for t in range(d.start, d.end):
            cx, cy = np.clip(p0 + v * (t - d.start), d.radius, S - d.radius)
            if (s := stamp(t, i, d.kind, cx, cy, d.radius, d.colour, 0.9)) is not None:
                yield s
    for j, ev in enumerate(scene.events):
        step, across = ev.velocity
        axis = ev.label % 2
        for t in range(ev.start, ev.end):
            for ghost, alpha in ((2, 0.3), (1, 0.55), (0, 1.0)):  # a fading motion trail, then the body
                along = ev.origin[0] + step * (t - ev.start - 1.5 * ghost)
                cx, cy = (along, across) if axis == 0 else (across, along)
                if (s := stamp(t, len(scene.distractors) + j, ev.kind, cx, cy, ev.radius, ev.colour, alpha)) is not None:
                    yield s


def render_video(cfg: SynthConfig, key: str) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Render one video from its key. Returns uint8 frames (n, S, S, 3) and [(label, start, end)]."""
    scene, rng = plan_scene(cfg, key)
    frames = _background(scene.background, cfg.size, scene.num_frames)
    for s in stamps(scene, cfg.size):
        patch = frames[s.t, s.y0:s.y1, s.x0:s.x1]
        patch[s.mask] = (1 - s.alpha) * patch[s.mask] + s.alpha * PALETTE[s.colour]
    frames += rng.standard_normal(size=frames.shape, dtype=np.float32) * np.float32(cfg.noise_std)
    np.clip(frames, 0, 255, out=frames)
    events = [(ev.label, ev.start, ev.end) for ev in scene.events]
    return (frames + 0.5).astype(np.uint8), events


def _make_one(args) -> tuple[str, int, list]:
    cfg, split, i, out_dir = args
    vid = f"{split}/{split}_{i:05d}"
    frames, events = render_video(cfg, vid)
    write_video(Path(out_dir) / "videos" / f"{vid}.mp4", frames, fps=cfg.fps, gop=cfg.gop)
    return vid, len(frames), events


def remove_stale_partials(root: Path) -> list[Path]:
    """Remove ``<root>.partial-<pid>`` folders left by a generation that was killed (its process
    is gone); a live process's folder stays. Returns what was removed."""
    removed = []
    for p in Path(root).parent.glob(Path(root).name + ".partial-*"):
        pid = p.name.rpartition("-")[2]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def generate(cfg: SynthConfig, root: Path, workers: int | None = None, progress: bool = True) -> Path:
    """Write the dataset into ``root`` (once: an existing complete folder is reused)."""
    root = Path(root)
    if (root / "manifest.json").is_file():
        return root
    remove_stale_partials(root)
    tmp = root.with_name(root.name + f".partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    jobs = [(cfg, split, i, tmp) for split, count in cfg.splits.items() for i in range(count)]
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=exit_with_parent, initargs=(os.getpid(),)) as pool:
            it = pool.map(_make_one, jobs, chunksize=8)
            results = list(_progress(it, len(jobs), f"generating {root.name}", progress))
    else:
        results = [_make_one(j) for j in _progress(jobs, len(jobs), f"generating {root.name}", progress)]
    manifest = {"dataset": "synth-events-ml" if cfg.multilabel else "synth-events", "config": asdict(cfg),
                "classes": CLASSES, "splits": {}}
    for split in cfg.splits:
        rows = [(v, n, ev) for v, n, ev in results if v.startswith(split + "/")]
        lines = [f"{v}.mp4 {n} " + " ".join(str(lab) for lab, _, _ in ev) for v, n, ev in rows]
        (tmp / f"{split}_list.txt").write_text("\n".join(lines) + "\n")
        (tmp / f"{split}_events.json").write_text(json.dumps({v: ev for v, _, ev in rows}, sort_keys=True))
        h = hashlib.sha256()
        for name in (f"{split}_list.txt", f"{split}_events.json"):
            h.update(file_sha256(tmp / name).encode())
        for v, _, _ in rows:
            h.update(file_sha256(tmp / "videos" / f"{v}.mp4").encode())
        manifest["splits"][split] = {"list": f"{split}_list.txt", "events": f"{split}_events.json",
                                     "videos": len(rows), "sha256": h.hexdigest()}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    if root.exists():  # another process finished first
        shutil.rmtree(tmp)
        return root
    os.replace(tmp, root)
    return root


def _progress(it, total, desc, enabled):
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, total=total, desc=desc, unit="video", mininterval=1.0)


def load_split(root: Path, split: str, cache: FactsCache | None = None, limit: int = 0) -> VideoSplit:
    """Read a split of a generated (or any same-layout) dataset through the generic loader.

    The manifest hash is recomputed from the files on every load (the generator's scheme: the
    list's, the events' and every video's content hash), so a folder whose files changed never
    keeps the hash, and the cached models, of what was generated."""
    root = Path(root)
    manifest = json.loads((root / "manifest.json").read_text())
    if split not in manifest["splits"]:
        raise KeyError(f"{root}/manifest.json: no split '{split}' (have {sorted(manifest['splits'])})")
    info = manifest["splits"][split]
    classes = manifest["classes"]
    records = parse_list(root / info["list"], root / "videos", num_classes=len(classes), fmt="video-frames",
                         multilabel=bool(manifest["config"]["multilabel"]))
    records = attach_events(records, root / info["events"])
    h = hashlib.sha256()
    for name in (info["list"], info["events"]):
        h.update(file_sha256(root / name).encode())
    for r in records:
        h.update((file_sha256(r.path) if r.path.is_file() else "missing").encode())
    digest = h.hexdigest()
    if digest != info["sha256"]:
        log.warning("%s: %s split: files differ from what was generated (hash %s, generated %s)", root, split,
                    digest[:12], info["sha256"][:12])
    if limit:
        records = records[:limit]
        digest = hashlib.sha256(f"{digest}\0limit={limit}".encode()).hexdigest()
    records = probe_records(records, cache or FactsCache())
    return VideoSplit(manifest["dataset"], split, records, classes,
                      multilabel=bool(manifest["config"]["multilabel"]), manifest_hash=digest,
                      meta={"root": str(root), "config": manifest["config"]})


def _build(multilabel: bool):
    def build(cache_dir: str | Path, split: str, progress: bool = True, data_root_dir=None, limit: int = 0,
              **params) -> VideoSplit:
        if "splits" in params:
            params["splits"] = dict(params["splits"])
        if "num_distractors" in params:
            params["num_distractors"] = tuple(params["num_distractors"])
        cfg = SynthConfig(multilabel=multilabel, **params)
        name = ("synth-events-ml" if multilabel else "synth-events") + "-" + cfg.digest()
        root = generate(cfg, Path(cache_dir) / "datasets" / name, progress=progress)
        return load_split(root, split, FactsCache(Path(cache_dir) / "video-facts.jsonl"), limit)

    return build


DATASETS.register("synth-events", params=SynthConfig)(_build(False))
DATASETS.register("synth-events-ml", params=SynthConfig)(_build(True))
