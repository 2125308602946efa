"""The Task protocol and the one cell loop every task runs through.

A *cell* is one unit of evaluation: a task's method at a budget and seed. A :class:`Task` says
which cells a suite asks for, prepares what its cells share, evaluates one cell into per-video
records and prediction arrays, and scores them (a pure function of what was stored, so a fixed or
added metric is recomputed from the stored predictions without re-running anything). Everything
else is written once, here: the per-method sampler cache, the cell fingerprint and resume,
failure records, atomic writes, progress, and consolidation into rows with the same identifying
columns for every task (:data:`COMMON`).

A cell's *fingerprint* covers everything its numbers depend on: the task's name, version and
configuration, the method's name and parameters, its implementation (:func:`implementation`),
every trained piece it reads (checkpoint keys), the dataset manifests and the candidate
configuration, the budget and the seed. A resumed run recomputes exactly the cells whose
fingerprint changed and reuses the others.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import sys
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import packages_distributions, version
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from samplerbench.metrics.stats import NOT_LEARNED, BootstrapConfig, above_chance
from samplerbench.registry import METHODS
from samplerbench.sampling import Sampler
from samplerbench.store.cells import (
    CellError,
    check_cell,
    load_cell,
    load_predictions,
    write_cell,
    write_record,
)
from samplerbench.store.files import write_csv, write_json
from samplerbench.suite import MethodSpec, Suite
from samplerbench.tasks.dist import Ranks
from samplerbench.tasks.stats import write_statistics

log = logging.getLogger(__name__)

#: The identifying columns of every task's rows file, in this order; task-specific columns follow.
COMMON = ("run_id", "suite", "suite_hash", "task", "method", "label", "params", "budget", "seed", "metric", "value",
          "n_videos", "n_failed", "upper_bound", "fingerprint", "provenance_id", "git_commit", "dataset_hash")


@dataclass(frozen=True)
class Cell:
    """One unit of a task's work. ``method`` is None for a task's own reference cells (the
    reduction task's full set and untrained model); ``columns`` are extra identifying columns of
    its rows (the reduction ratio ``k``, the retrieval ``matched`` label); ``spec`` is whatever
    the task needs to evaluate it (a :class:`~samplerbench.sampling.Budget`, a ratio)."""

    key: str
    method: MethodSpec | None
    budget: str | int
    seed: int
    spec: Any = None
    label: str = ""
    columns: tuple[tuple[str, Any], ...] = ()

    @property
    def display(self) -> str:
        return self.label or (self.method.display if self.method else self.key)


@dataclass
class CellOutput:
    """What evaluating a cell produced: per-video records (selection, cost), the prediction
    arrays the task's :meth:`Task.score` reads, per-video failures, and anything else to keep."""

    videos: list[dict]
    predictions: dict[str, np.ndarray]
    failures: list[dict]
    info: dict = field(default_factory=dict)


@dataclass
class Run:
    """The state one invocation shares between its tasks and cells."""

    suite: Suite
    run_dir: Path
    cache_dir: Path
    device: torch.device
    progress: bool
    prov: dict
    #: what every fingerprint covers besides the cell: manifests, candidates, frame size
    data_identity: dict = field(default_factory=dict)
    #: what learned methods train on in a replicate: ``env_of(seed)`` is that seed's
    #: :class:`samplerbench.features.TrainEnv` (set by a task's setup; None: nothing can learn)
    env_of: Callable[[int], Any] | None = None
    state: dict = field(default_factory=dict)  # shared pieces built by one task and read by another
    samplers: dict[str, Sampler] = field(default_factory=dict)
    trained: dict[str, list[str]] = field(default_factory=dict)  # sampler key -> checkpoint keys
    results: dict[tuple[str, str], dict] = field(default_factory=dict)  # (task, cell key) -> record
    counts: Counter = field(default_factory=Counter)
    data_root: Path | None = None  # where a suite's relative dataset roots live (--data-root)
    limit: int = 0  # the first videos of each split only (--limit: a smoke run)
    ranks: Ranks = field(default_factory=Ranks)  # this process's rank under torchrun
    timing: bool = True  # the timing runs (videos/s, peak memory); off: a quality-only run (--no-timing)
    #: seconds spent in learned methods' ``prepare`` (training or loading), wherever a task asked for them
    prepare_s: float = 0.0
    #: a subset of the suite (``--methods``/``--budgets``/``--seeds``) run into the full suite's
    #: folder: its rows files keep the folder's other stored cells
    narrowed: bool = False

    @property
    def run_id(self) -> str:
        return self.run_dir.name

    def sampler(self, spec: MethodSpec, seed: int) -> Sampler:
        """One instance per configured method for all its cells (per-video memos are shared); a
        learned one is one instance per seed, trained (or loaded) first in that seed's replicate
        (:meth:`replicate`), its record kept in the provenance (:func:`record_trained`)."""
        key = self.sampler_key(spec, seed)
        if key not in self.samplers:
            sampler = METHODS.get(spec.name)(**spec.params)
            sampler.check()
            keys = []
            if sampler.learns:
                if self.env_of is None:
                    raise RuntimeError(f"{spec.display}: learns, but this task gives no training environment")
                t0 = time.perf_counter()
                with torch.inference_mode(False), torch.enable_grad():
                    record = sampler.prepare(self.env_of(seed))
                self.prepare_s += time.perf_counter() - t0
                if record is not None:
                    record_trained(self.prov, "trained", spec.display, seed, record, self.suite.seeds)
                    keys = checkpoint_keys(record)
            self.samplers[key], self.trained[key] = sampler, keys
        return self.samplers[key]

    def sampler_key(self, spec: MethodSpec, seed: int) -> str:
        """Where a method's instance is kept: one for every seed, or one per seed if it learns."""
        return f"{spec.key}@s{seed}" if METHODS.get(spec.name).learns else spec.key

    def trained_record(self, spec: MethodSpec, seed: int) -> dict | None:
        """The training record of a learned method in a seed's replicate (None: it learns nothing)."""
        return self.prov.get("replicates", {}).get(str(seed), {}).get("trained", {}).get(spec.display)


def record_trained(prov: dict, kind: str, name: str, seed: int, record: dict, seeds: list[int]) -> None:
    """Keep a trained piece's record in the provenance: under ``replicates[seed][kind][name]``
    for every seed, and under ``kind[name]`` for the suite's first seed as well (what a reader of
    one replicate, the report's training table, looks up)."""
    prov.setdefault("replicates", {}).setdefault(str(seed), {}).setdefault(kind, {})[name] = record
    if seed == seeds[0]:
        prov.setdefault(kind, {})[name] = record


class Task(ABC):
    """A task: its cells, what they share, how one is evaluated and how it is scored.

    Subclasses set ``name``, ``version`` (bump it when the evaluation changes what a cell
    computes: every cell of the task is then recomputed) and ``rows_file``."""

    name: ClassVar[str]
    version: ClassVar[int] = 1
    rows_file: ClassVar[str]
    #: metrics whose values must be identical between two runs with the same seed
    quality: ClassVar[tuple[str, ...]] = ()
    #: whether a cell's videos can be split across ranks (:meth:`evaluate` then sees this rank's
    #: part and :meth:`merge` joins the parts on rank 0); otherwise rank 0 evaluates it whole
    shardable: ClassVar[bool] = False
    #: quality metrics the task computes on bootstrap resamples of its videos (:meth:`resampled`):
    #: their intervals and paired tests against uniform (``samplerbench.tasks.stats``)
    resampled_metrics: ClassVar[tuple[str, ...]] = ()
    #: quality metrics where less is better (ranks); every other quality metric: more is better
    lower_is_better: ClassVar[tuple[str, ...]] = ()

    def setup(self, run: Run) -> None:  # noqa: B027  (an optional hook)
        """Build what the cells share (datasets, trained readers); record it in ``run.prov``.
        Rank 0 runs it first; the other ranks after, loading what it trained."""

    def extract(self, run: Run) -> None:  # noqa: B027  (an optional hook)
        """Fill the stores the cells read, every rank its share (after :meth:`setup`)."""

    def merge(self, run: Run, cell: Cell, parts: list[CellOutput]) -> CellOutput:
        """One cell's output from its ranks' parts, in rank order (= manifest order): per-video
        records, failures and prediction rows concatenated; a task whose predictions are not
        per-video rows overrides it. Called with the single part in one process, too."""
        if len(parts) == 1:
            return parts[0]
        preds = {}
        for k, v in parts[0].predictions.items():
            arrays = [p.predictions[k] for p in parts]
            preds[k] = np.concatenate(arrays) if v.ndim else v
        return CellOutput([v for p in parts for v in p.videos], preds, [f for p in parts for f in p.failures],
                          parts[0].info)

    @abstractmethod
    def cells(self, run: Run) -> Iterator[Cell]:
        """The cells of the suite, in order. A later cell may depend on earlier ones' results,
        read from ``run.results[(task, key)]`` (the loop fills it before asking for the next)."""

    @abstractmethod
    def evaluate(self, run: Run, cell: Cell, sampler: Sampler | None) -> CellOutput:
        """Select, predict and record every video of one cell."""

    @staticmethod
    @abstractmethod
    def score(videos: list[dict], predictions: dict[str, np.ndarray]) -> dict[str, float]:
        """The cell's metrics from its stored per-video records and predictions alone."""

    def config(self, run: Run) -> dict:
        """The task's configuration that its numbers depend on (part of every fingerprint)."""
        return {}

    def reader_keys(self, run: Run, cell: Cell, sampler: Sampler | None) -> list[str]:
        """Checkpoint keys of the trained pieces that read this cell's selections."""
        return []

    def readers(self, run: Run, cell: Cell, sampler: Sampler | None) -> list[dict]:
        """The training records of the pieces whose learning a cell's numbers rest on: the
        method's own (a learned sampler, SLLM's head); a task adds the reader of its selections."""
        if cell.method is None:
            return []
        own = run.trained_record(cell.method, cell.seed)
        return [own] if own else []

    def finish(self, run: Run, cells: list[tuple[Cell, dict]]) -> None:  # noqa: B027  (an optional hook)
        """After every cell: work that needs them all (timing)."""

    def row_extras(self, cell: Cell, record: dict) -> dict:
        """Task-specific columns of each row of a cell."""
        return {}

    @staticmethod
    def subset(videos: list[dict], predictions: dict[str, np.ndarray],
               keep: set[str]) -> tuple[list[dict], dict[str, np.ndarray]] | None:
        """The records and predictions of the videos in ``keep`` only, so that methods are
        compared on the same videos; None where every cell evaluates the same set (nothing to do)."""
        return None

    @staticmethod
    def aligned(videos: list[dict], predictions: dict[str, np.ndarray],
                order: list[str]) -> tuple[list[dict], dict[str, np.ndarray]]:
        """The cell's records and predictions in ``order`` (video ids), the others dropped, so
        that position i of two cells is the same video (what a paired resample needs). Default:
        predictions are per-video rows; a task storing them otherwise overrides it."""
        pos = {v["video"]: i for i, v in enumerate(videos)}
        keep = np.asarray([pos[v] for v in order], dtype=np.int64)
        n = len(videos)
        preds = {k: (v[keep] if v.ndim and len(v) == n else v) for k, v in predictions.items()}
        return [videos[i] for i in keep], preds

    def resampled(self, videos: list[dict], predictions: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
        """Each of :attr:`resampled_metrics` on each resample of the videos (rows of ``idx``,
        positions): (R,) arrays; row ``arange(n)`` gives :meth:`score`'s values."""
        raise NotImplementedError(f"{self.name} declares no resampled metrics")

    def correct(self, videos: list[dict], predictions: dict[str, np.ndarray]) -> np.ndarray | None:
        """Per-video top-1 correctness (bool), for McNemar's test; None where it has no meaning."""
        return None

    def timing_rows(self, run_dir: Path, cell: Cell, record: dict) -> list[dict]:
        """Timing rows of a cell (metric, value, provenance_id), if the task times cells."""
        return []


#: a cell's ``reader`` column when every piece it rests on is above chance (else NOT_LEARNED)
LEARNED = "learned"


def reader_status(records: list[dict]) -> str:
    """``did not learn`` when a trained piece (or a part of it, such as a composed method's base)
    scored on validation within :func:`~samplerbench.metrics.stats.chance_margin` of chance:
    its cells are no comparison; ``learned`` when every piece with a chance level is above it;
    empty when no piece has one (nothing trained: zero-shot, training-free samplers on a
    pretrained reader without a probe)."""
    judged = []

    def walk(r: Any) -> None:
        if isinstance(r, dict):
            if {"val", "chance", "n_val"} <= set(r):
                judged.append(above_chance(float(r["val"]), float(r["chance"]), int(r["n_val"])))
            for v in r.values():
                walk(v)

    for r in records:
        walk(r)
    if not judged:
        return ""
    return LEARNED if all(judged) else NOT_LEARNED


def checkpoint_keys(record: Any) -> list[str]:
    """Every checkpoint ``key`` in a (nested) training record."""
    if isinstance(record, dict):
        own = [str(record["key"])] if "key" in record else []
        return own + [k for v in record.values() for k in checkpoint_keys(v)]
    return []


@cache
def _module_identity(module: str) -> str:
    """``module`` of this repository or a local file: the hash of its source; of an installed
    plugin distribution: ``name==version``."""
    top = module.partition(".")[0]
    if top != "samplerbench":
        dists = packages_distributions().get(top, [])
        if dists:
            return f"{dists[0]}=={version(dists[0])}"
    src = Path(inspect.getsourcefile(sys.modules[module])).read_bytes()
    return "sha256:" + hashlib.sha256(src).hexdigest()[:16]


def implementation(sampler: Sampler) -> dict[str, str]:
    """The code a sampler runs: its class's module and those of its parts (a composition)."""
    out = {type(sampler).__module__: _module_identity(type(sampler).__module__)}
    for p in sampler.parts():
        out.update(implementation(p))
    return dict(sorted(out.items()))


def fingerprint(task: Task, run: Run, cell: Cell, sampler: Sampler | None, task_config: dict) -> str:
    parts = {
        "task": task.name, "version": task.version, "config": task_config, "data": run.data_identity,
        "method": None if cell.method is None else {"name": cell.method.name, "params": cell.method.params},
        "implementation": implementation(sampler) if sampler is not None else {},
        "trained": (run.trained.get(run.sampler_key(cell.method, cell.seed), []) if cell.method else [])
        + task.reader_keys(run, cell, sampler),
        "budget": cell.budget, "seed": cell.seed, "spec": repr(cell.spec), "columns": cell.columns,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cell_dir(run_dir: Path, task: Task) -> Path:
    return Path(run_dir) / "cells" / task.name


def run_task(task: Task, run: Run) -> list[tuple[Cell, dict]]:
    """Evaluate every cell of ``task`` that is not already stored with the same fingerprint;
    then consolidate its rows. Returns the suite's cells with their records, in order."""
    ranks = run.ranks
    t0 = time.perf_counter()
    with ranks.main_first():
        task.setup(run)
    t_setup = time.perf_counter() - t0
    task.extract(run)
    t_extract = time.perf_counter() - t0 - t_setup
    if ranks.main:
        write_json(run.run_dir / "provenance" / f"{run.prov['provenance_id']}.json", run.prov)
    task_config = task.config(run)
    folder = cell_dir(run.run_dir, task)
    done: list[tuple[Cell, dict]] = []
    bar = tqdm(desc=f"{task.name} {run.run_id}", unit="cell", disable=not (run.progress and ranks.main))
    # learned methods train (or load) on their first cell, or where the task's cells ask for the
    # sampler (retrieval asks while listing its cells): every prepare counts, wherever it ran
    t_train, prepared = 0.0, run.prepare_s
    for cell in task.cells(run):
        t1, p1 = time.perf_counter(), run.prepare_s
        with ranks.main_first():  # what a cell's method trains, rank 0 trains, the others load
            sampler = run.sampler(cell.method, cell.seed) if cell.method is not None else None
            fp = fingerprint(task, run, cell, sampler, task_config)  # a token reader's ViT trains here
        t_train += time.perf_counter() - t1 - (run.prepare_s - p1)
        status = reader_status(task.readers(run, cell, sampler))
        record = load_cell(folder, cell.key, fp)
        if record is None:
            record = _compute(task, run, cell, sampler, fp, folder, status)
            run.counts[f"{task.name} computed"] += 1
        else:  # the same trained pieces (the fingerprint says so): the same verdict, kept in memory
            record = {**record, "reader": status}
            run.counts[f"{task.name} reused"] += 1
        if status == NOT_LEARNED:
            run.counts[f"{task.name} cells whose reader did not learn"] += 1
        if record["failures"]:
            run.counts[f"{task.name} video failures"] += len(record["failures"])
        run.results[(task.name, cell.key)] = record
        done.append((cell, record))
        bar.update()
    bar.close()
    t_train += run.prepare_s - prepared
    t_cells = time.perf_counter() - t0 - t_setup - t_extract
    if ranks.main:
        task.finish(run, done)
    t_finish = time.perf_counter() - t0 - t_setup - t_extract - t_cells
    if ranks.main:
        consolidate(task, run.run_dir, with_stored(task, run.run_dir, done) if run.narrowed else done,
                    BootstrapConfig.of(run.suite.eval))
    ranks.barrier()
    run.prov.setdefault("phases_s", {})[task.name] = {  # where the time went, per task
        "setup (data, trained pieces)": round(t_setup, 2), "extract (feature store)": round(t_extract, 2),
        "train (learned methods)": round(t_train, 2), "cells": round(t_cells - t_train, 2),
        "finish (timing runs)": round(t_finish, 2),
        "consolidate": round(time.perf_counter() - t0 - t_setup - t_extract - t_cells - t_finish, 2)}
    log.info("%s: %d cells, %d computed, %d reused", task.name, len(done), run.counts[f"{task.name} computed"],
             run.counts[f"{task.name} reused"])
    return done


def _compute(task: Task, run: Run, cell: Cell, sampler: Sampler | None, fp: str, folder: Path,
             status: str = "") -> dict:
    """Evaluate one cell (sharded: each rank its part, rank 0 merges and writes; the others then
    read what it wrote) and return its stored record."""
    ranks = run.ranks
    mine = task.evaluate(run, cell, sampler) if task.shardable or ranks.main else None
    parts = ranks.gather(mine) if task.shardable else [mine]
    if ranks.main:
        record = _write(task, run, cell, sampler, fp, folder, task.merge(run, cell, parts), status)
        if ranks.world == 1:
            return record
    ranks.barrier()
    record = load_cell(folder, cell.key, fp)
    if record is None:
        raise RuntimeError(f"{folder / cell.key}.json: rank {ranks.rank} cannot read the cell rank 0 wrote "
                           "(the ranks must share the run folder)")
    return record


def _write(task: Task, run: Run, cell: Cell, sampler: Sampler | None, fp: str, folder: Path,
           out: CellOutput, status: str = "") -> dict:
    record = {
        "cell": cell.key, "task": task.name, "method": cell.method.key if cell.method else cell.key.split("__")[0],
        "method_name": cell.method.name if cell.method else None, "label": cell.display,
        "params": cell.method.params if cell.method else {}, "budget": cell.budget, "seed": cell.seed,
        "columns": dict(cell.columns), "upper_bound": bool(sampler is not None and sampler.upper_bound),
        "ignores_budget": bool(sampler is not None and sampler.ignores_budget),
        "fingerprint": fp, "provenance_id": run.prov["provenance_id"],
        "config": sampler.config() if sampler is not None else {},
        "values": task.score(out.videos, out.predictions), "videos": out.videos, "failures": out.failures,
        "n_videos": len(out.videos), "reader": status, **out.info,
    }
    return write_cell(folder, cell.key, record, out.predictions)


def _provenances(run_dir: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (Path(run_dir) / "provenance").glob("*.json")}


def _compared(task: Task, folder: Path, cells: list[tuple[Cell, dict]]) -> tuple[set[str] | None, dict]:
    """The videos every cell evaluated, and each cell's values on them: a method that failed on
    a video takes it out of every method's comparison (rows say how many were excluded)."""
    evaluated = [{v["video"] for v in rec["videos"]} for _, rec in cells]
    if not evaluated or all(e == evaluated[0] for e in evaluated):
        return None, {}
    common = set.intersection(*evaluated)
    values = {}
    for (cell, rec), own in zip(cells, evaluated, strict=True):
        if own == common:
            continue
        sub = task.subset(rec["videos"], load_predictions(folder, rec), common)
        if sub is None:  # the task evaluates every cell on the same set
            return None, {}
        values[cell.key] = task.score(*sub) if sub[0] else {}
    return common, values


def consolidate(task: Task, run_dir: Path, cells: list[tuple[Cell, dict]],
                bootstrap: BootstrapConfig | None = None) -> pd.DataFrame:
    """The task's rows file (tidy: one row per cell and metric, :data:`COMMON` columns first)
    and its per-video selections (``<task>_selections.jsonl``) from the cells' records, in the
    suite's order; the run's ``failures.csv`` gains this task's failed videos. Quality and cost
    are on the videos every cell of the task evaluated (``n_videos``); ``n_excluded`` counts a
    cell's own videos left out because another method failed on them."""
    provs = _provenances(run_dir)
    common, restricted = _compared(task, cell_dir(run_dir, task), cells)
    rows, failures = [], []
    sel_path = Path(run_dir) / f"{task.name}_selections.jsonl"
    tmp = sel_path.with_name(sel_path.name + f".tmp{os.getpid()}")
    with open(tmp, "w") as sel_out:
        for cell, rec in cells:
            prov = provs.get(rec["provenance_id"], {})
            n = rec["n_videos"] if common is None else len(common)
            base = {"run_id": prov.get("run_id", Path(run_dir).name), "suite": prov.get("suite"),
                    "suite_hash": prov.get("suite_hash"), "task": task.name, "method": rec["method"],
                    "label": cell.display, "params": json.dumps(rec.get("params", {}), sort_keys=True),
                    "budget": cell.budget, "seed": cell.seed, "n_videos": n,
                    "n_failed": len(rec["failures"]), "upper_bound": rec["upper_bound"],
                    "fingerprint": rec["fingerprint"], "provenance_id": rec["provenance_id"],
                    "git_commit": prov.get("git_commit"), "dataset_hash": prov.get("manifest_hash"),
                    "n_excluded": rec["n_videos"] - n, "dataset": prov.get("dataset"), "split": prov.get("split"),
                    "git_dirty": prov.get("git_dirty"), "device": prov.get("hardware", {}).get("device"),
                    "reader": rec.get("reader", ""),
                    **dict(cell.columns), **task.row_extras(cell, rec)}
            for metric, value in restricted.get(cell.key, rec["values"]).items():
                if isinstance(value, list):  # distributions (frames_hist) stay in the cell file
                    continue
                kind = "quality" if metric in task.quality else "cost"
                rows.append({**base, "metric": metric, "value": value, "kind": kind})
            for t in task.timing_rows(run_dir, cell, rec):
                rows.append({**base, **t, "kind": "timing"})
            for v in rec["videos"]:
                sel_out.write(json.dumps({"cell": cell.key, **v}) + "\n")
            failures += [{"task": task.name, "cell": cell.key, **f} for f in rec["failures"]]
    tmp.replace(sel_path)
    df = pd.DataFrame(rows)
    if len(df):
        df = df[[*COMMON, *(c for c in df.columns if c not in COMMON)]]
    write_csv(df, Path(run_dir) / task.rows_file)
    _merge_failures(Path(run_dir) / "failures.csv", task.name, failures)
    write_statistics(task, run_dir, cell_dir(run_dir, task), cells, bootstrap or BootstrapConfig())
    return df


def _merge_failures(path: Path, task: str, failures: list[dict]) -> None:
    """``failures.csv`` holds every task's failed videos: replace this task's."""
    cols = ["task", "cell", "video", "error"]
    old = pd.read_csv(path) if path.is_file() and path.stat().st_size > 0 else pd.DataFrame(columns=cols)
    if "task" not in old.columns:
        old = pd.DataFrame(columns=cols)
    new = pd.concat([old[old["task"] != task], pd.DataFrame(failures, columns=cols)], ignore_index=True)
    write_csv(new[cols], path)


def rescore(task: Task, run_dir: Path) -> int:
    """Recompute every stored cell's metrics from its predictions with today's metric functions
    and rewrite the cell files and the rows file (no selection, no model, no re-run). Returns the
    number of cells rescored."""
    folder = cell_dir(run_dir, task)
    records = []
    for path in sorted(folder.glob("*.json")):
        rec = check_cell(folder, path.stem)  # a damaged cell: one line naming it (rescoring it would bless it)
        rec["values"] = task.score(rec["videos"], load_predictions(folder, rec))
        records.append(write_record(folder, path.stem, rec))
    if not records:
        return 0
    order = _stored_order(run_dir, task)
    if order:  # the suite's grid of the last run; cells of an earlier grid stay on disk, unused
        records = [r for r in records if r["cell"] in order]
    records.sort(key=lambda r: order.get(r["cell"], len(order)))
    consolidate(task, run_dir, [(cell_of(r), r) for r in records])
    return len(records)


def cell_of(record: dict) -> Cell:
    """The cell a stored record was computed for (enough to consolidate it again)."""
    r = record
    spec = MethodSpec(r["method_name"] or r["method"], r.get("params", {}), r["label"]) if r["method_name"] else None
    return Cell(r["cell"], spec, r["budget"], r["seed"], label=r["label"], columns=tuple(r.get("columns", {}).items()))


def with_stored(task: Task, run_dir: Path, done: list[tuple[Cell, dict]]) -> list[tuple[Cell, dict]]:
    """A narrowed run's cells (``--methods``/``--budgets``/``--seeds``) among the others its run
    folder's rows listed before, each stored one that passes its checks kept in its place: a
    narrowed run updates the run's rows and never shrinks them. Cells new to the folder follow."""
    folder = cell_dir(run_dir, task)
    mine = {c.key: (c, r) for c, r in done}
    merged = []
    for key in _stored_order(run_dir, task):
        if key in mine:
            merged.append(mine.pop(key))
            continue
        try:
            record = check_cell(folder, key)
        except (CellError, OSError):  # gone or damaged since: the full run recomputes it
            continue
        merged.append((cell_of(record), record))
    return merged + [cr for cr in done if cr[0].key in mine]


def _stored_order(run_dir: Path, task: Task) -> dict[str, int]:
    """The cells' order in the existing rows file (the suite's), to keep it when rescoring."""
    path = Path(run_dir) / f"{task.name}_selections.jsonl"
    order: dict[str, int] = {}
    if path.is_file():
        with open(path) as f:
            for line in f:
                order.setdefault(json.loads(line)["cell"], len(order))
    return order
