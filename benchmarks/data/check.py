"""``samplerbench data check``: what a long sweep would find in the data, found first.

Per split: videos, classes and labels, missing and unreadable videos (probing every file, and
decoding its first and last frame unless ``decode=False``), durations and frame rates, the
manifest hash. Problems go to ``problems.csv`` (split, video, path, reason); the verdict says
whether the data can be evaluated at all.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from samplerbench.data.annotations import AnnotationError, VideoSplit
from samplerbench.data.media import read_record
from samplerbench.data.video import VideoDecodeError
from samplerbench.registry import DATASETS


@dataclass
class SplitReport:
    split: str
    videos: int = 0
    readable: int = 0
    classes: int = 0
    labelled_classes: int = 0
    labels: int = 0
    missing: int = 0
    unreadable: int = 0
    manifest_hash: str = ""
    durations: dict = field(default_factory=dict)
    fps: dict = field(default_factory=dict)
    error: str = ""


def _histogram(values: list[float], bins: int = 8) -> dict:
    if not values:
        return {}
    counts, edges = np.histogram(np.asarray(values, dtype=float), bins=bins)
    return {"min": float(min(values)), "median": float(np.median(values)), "max": float(max(values)),
            "bins": [[round(float(a), 3), round(float(b), 3), int(c)] for a, b, c in zip(edges[:-1], edges[1:], counts, strict=True)]}


def check_split(split: VideoSplit, decode: bool = True) -> tuple[SplitReport, list[tuple[str, str, str]]]:
    """The report of a loaded split and its problem rows (video, path, reason)."""
    problems = [(p, p, "missing: listed but not on disk (skipped)") for p in split.meta.get("missing", [])]
    records = []
    for r in split.records:
        if not r.error and decode:
            try:
                read_record(r, [0, r.num_frames - 1], size=(32, 32))
            except VideoDecodeError as e:
                r = replace(r, error=str(e).splitlines()[0])
        records.append(r)
        if r.error:
            kind = "missing" if not r.path.exists() else "unreadable"
            problems.append((r.video_id, str(r.path), f"{kind}: {r.error}"))
    good = [r for r in records if not r.error]
    labels = Counter(x for r in good for x in r.labels)
    rep = SplitReport(
        split.split, videos=len(records), readable=len(good), classes=split.num_classes, labelled_classes=len(labels),
        labels=sum(labels.values()), missing=len(split.meta.get("missing", [])) + sum(
            1 for r in records if r.error and not r.path.exists()),
        unreadable=sum(1 for r in records if r.error and r.path.exists()), manifest_hash=split.manifest_hash,
        durations=_histogram([r.index.duration for r in good if r.index is not None]
                             + [r.num_frames / r.fps for r in good if r.index is None and r.fps]),
        fps=_histogram([r.fps for r in good if r.fps]))
    return rep, problems


def check_dataset(dataset: dict, cache_dir: Path, out_dir: Path, data_root: Path | None = None, decode: bool = True,
                  limit: int = 0) -> tuple[list[SplitReport], str]:
    """Check a suite's ``[dataset]`` (its test, train and val splits); writes ``problems.csv``
    and ``summary.json`` into ``out_dir``. Returns the reports and a one-line verdict, which
    starts with ``FAIL`` when the data cannot be evaluated."""
    build = DATASETS.get(dataset["name"])
    params = dict(dataset.get("params", {}))
    default = {"split": "test", "train_split": "train", "val_split": "val"}
    reports, rows, fatal = [], [], []
    for key, name in default.items():
        split_name = dataset.get(key, name)
        try:
            split = build(cache_dir, split_name, progress=False, data_root_dir=data_root, limit=limit, **params)
        except (AnnotationError, OSError, KeyError) as e:
            msg = str(e.args[0] if isinstance(e, KeyError) and e.args else e).splitlines()[0]
            reports.append(SplitReport(split_name, error=msg))
            fatal.append(msg)
            continue
        rep, problems = check_split(split, decode)
        reports.append(rep)
        rows += [(split_name, *p) for p in problems]
        if rep.readable == 0:
            fatal.append(f"{split_name}: no readable video")
        elif (key == "train_split" and rep.labelled_classes < 2 and split.num_classes >= 2
              and "instances_data" not in split.meta):  # instance datasets: categories are in the masks
            fatal.append(f"{split_name}: fewer than 2 classes have a readable video")
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "problems.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["split", "video", "path", "reason"])
        w.writerows(rows)
    (out_dir / "summary.json").write_text(json.dumps([r.__dict__ for r in reports], indent=1))
    n_bad = len(rows)
    if fatal:
        verdict = f"FAIL: {dataset['name']}: {fatal[0]}" + (f" (and {len(fatal) - 1} more)" if len(fatal) > 1 else "")
    else:
        verdict = (f"OK: {dataset['name']}: " + ", ".join(f"{r.split} {r.videos} videos" for r in reports)
                   + f"; {n_bad} problem video(s) listed in {out_dir / 'problems.csv'}")
    return reports, verdict


def format_report(reports: list[SplitReport]) -> str:
    """The per-split table and histograms, as text."""
    lines = []
    for r in reports:
        if r.error:
            lines.append(f"[{r.split}] error: {r.error}")
            continue
        lines.append(f"[{r.split}] {r.videos} videos, {r.classes} classes ({r.labelled_classes} with videos), "
                     f"{r.labels} labels, {r.missing} missing, {r.unreadable} unreadable, manifest {r.manifest_hash[:16]}")
        for name, h in (("duration (s)", r.durations), ("fps", r.fps)):
            if h:
                lines.append(f"  {name}: min {h['min']:.2f} median {h['median']:.2f} max {h['max']:.2f}")
                peak = max(c for _, _, c in h["bins"]) or 1
                for a, b, c in h["bins"]:
                    lines.append(f"    {a:9.2f} - {b:9.2f} | {'#' * round(30 * c / peak):<30} {c}")
    return "\n".join(lines)
