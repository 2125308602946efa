"""Run a suite: validate it whole before any work, then run each of its tasks through the one
cell loop into ``results/<run-id>/``.

A run folder holds ``cells/<task>/<cell>.{json,npz}`` (one record and its predictions per cell),
``timing/<cell>.json``, ``provenance/<id>.json``, and per task a rows file (``rows.csv``,
``retrieval_rows.csv``, ``reduction_rows.csv``) and ``<task>_selections.jsonl``; ``failures.csv``
lists every task's failed videos. A killed run resumes; a re-run recomputes exactly the cells
whose fingerprint changed.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
from pathlib import Path

import torch

from samplerbench.cost.papers import PRESETS
from samplerbench.metrics.ranking import V2T
from samplerbench.models.classifier import TrainConfig
from samplerbench.models.encoders import ModelConfig
from samplerbench.models.tokens import TokenModelConfig
from samplerbench.registry import DATASETS, METHODS
from samplerbench.store import provenance
from samplerbench.store.files import clean_tmp, write_json
from samplerbench.suite import MethodSpec, Suite, reference_problems
from samplerbench.tasks.classification import Classification
from samplerbench.tasks.core import Run, Task, rescore, run_task
from samplerbench.tasks.dist import Ranks
from samplerbench.tasks.frames import default_cache_dir
from samplerbench.tasks.reduction import Reduction, ReductionConfig
from samplerbench.tasks.retrieval import Retrieval

log = logging.getLogger(__name__)

#: Every task by name (a new task is one module under tasks/ and one entry here).
TASKS: dict[str, type[Task]] = {t.name: t for t in (Classification, Retrieval, Reduction)}


class SuiteError(ValueError):
    """A suite that cannot run: one line per problem, each naming the suite file and key."""


def tasks_of(suite: Suite) -> list[Task]:
    if suite.task == "reduction":
        return [Reduction()]
    return [Classification()] + ([Retrieval()] if suite.retrieval_methods else [])


def _method_problems(where: str, spec: MethodSpec, learns_ok: bool = True) -> list[str]:
    if spec.name not in METHODS:
        return [f"{where}: unknown method {spec.name!r} (registered: {', '.join(METHODS.names())})"]
    try:
        sampler = METHODS.get(spec.name)(**spec.params)
        sampler.check()
    except Exception as e:  # unknown parameter, bad value, contradictory abilities
        return [f"{where}: {spec.name} with params {spec.params}: {type(e).__name__}: {e}"]
    if not learns_ok and sampler.learns:
        return [f"{where}: {spec.display} trains for classification; the reduction task takes training-free samplers"]
    return []


def _config_problems(where: str, cls, raw: dict) -> list[str]:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        return [f"{where}: unknown key(s) {unknown} (known: {sorted(names)})"]
    try:
        cls(**raw)
    except (TypeError, ValueError) as e:
        return [f"{where}: {e}"]
    return []


PAPER_KEYS = {"preset", "method", "deviations"}


def paper_problems(suite: Suite, where: str) -> list[str]:
    """One line per malformed entry of a suite's ``[paper]``: its cost preset, its method's
    label, its deviations."""
    paper = suite.paper
    if not paper:
        return []
    out = [f"{where}: paper.{k}: unknown key (known: {sorted(PAPER_KEYS)})" for k in sorted(set(paper) - PAPER_KEYS)]
    if "preset" in paper and paper["preset"] not in PRESETS:
        out.append(f"{where}: paper.preset must name a cost preset ({', '.join(PRESETS)}), not {paper.get('preset')!r}")
    labels = {m.display for m in (*suite.methods, *(r.method for r in suite.retrieval_methods))}
    if paper.get("method") not in labels:
        out.append(f"{where}: paper.method must be the label of the paper's method ({sorted(labels)}), "
                   f"not {paper.get('method')!r}")
    devs = paper.get("deviations", [])
    if not isinstance(devs, list) or not all(isinstance(d, str) and d for d in devs):
        out.append(f"{where}: paper.deviations must be a list of sentences, one per deviation")
    return out


def validate(suite: Suite) -> list[str]:
    """Every problem of a suite that would stop or silently distort a run, one line each:
    unknown methods, datasets or keys, bad parameters, budgets outside 1..T, no candidates."""
    src = suite.source or suite.name
    problems: list[str] = []
    ds = suite.dataset
    if "name" not in ds:
        problems.append(f"{src}: dataset.name is missing")
    elif ds["name"] not in DATASETS:
        problems.append(f"{src}: dataset.name: unknown dataset {ds['name']!r} (registered: {', '.join(DATASETS.names())})")
    else:
        params_cls = DATASETS.meta(ds["name"]).get("params")
        if params_cls is not None:
            problems += _config_problems(f"{src}: dataset.params", params_cls,
                                         {k: v for k, v in ds.get("params", {}).items() if k != "multilabel"})
    problems += _config_problems(f"{src}: model", ModelConfig, suite.model)
    problems += _config_problems(f"{src}: train", TrainConfig, suite.train)
    problems += _config_problems(f"{src}: token_model", TokenModelConfig, {**suite.token_model})
    t = suite.eval.get("candidates", 32)
    if not isinstance(t, int) or t < 1:
        problems.append(f"{src}: eval.candidates must be an integer >= 1, not {t!r}")
        t = None
    for b in suite.eval.get("budgets", []):
        if not isinstance(b, int) or b < 1 or (t is not None and b > t):
            problems.append(f"{src}: eval.budgets: {b!r} is outside 1..{t if t is not None else 'T'} (the candidates)")
    if not suite.seeds or not all(isinstance(s, int) for s in suite.seeds):
        problems.append(f"{src}: eval.seeds must be a non-empty list of integers, not {suite.seeds!r}")
    for i, spec in enumerate(suite.methods):
        problems += _method_problems(f"{src}: methods[{i}] ({spec.display})", spec,
                                     learns_ok=suite.task != "reduction")
    for i, r in enumerate(suite.retrieval_methods):
        problems += _method_problems(f"{src}: retrieval.methods[{i}] ({r.method.display})", r.method)
        if isinstance(r.budget, int) and t is not None and r.budget > t:
            problems.append(f"{src}: retrieval.methods[{i}].budget {r.budget} is above the {t} candidates")
    v2t = suite.retrieval.get("v2t", V2T[0]) if suite.retrieval else V2T[0]
    if v2t not in V2T:
        problems.append(f"{src}: retrieval.v2t must be one of {list(V2T)}, not {v2t!r}")
    problems += reference_problems(suite.reference, src)
    problems += paper_problems(suite, src)
    if suite.task == "reduction":
        try:
            ReductionConfig.of(suite)
        except (TypeError, ValueError) as e:
            problems.append(f"{src}: reduction: {e}")
    return problems


def run_suite(suite: Suite, results_dir: Path, cache_dir: Path | None = None, run_id: str | None = None,
              device: str = "cpu", progress: bool = True, data_root: Path | None = None, limit: int = 0,
              timing: bool = True, narrowed: bool = False) -> Path:
    """Evaluate a suite into ``results_dir/<run-id>``; cells stored with the same fingerprint are
    reused. Raises :class:`SuiteError` before any work when the suite cannot run. ``data_root``:
    where relative dataset roots live; ``limit``: the first videos of each split (its own run id);
    ``timing=False``: no timing runs (the quality metrics only; a later run with timing adds them);
    ``narrowed``: the suite is a subset of the one whose folder ``run_id`` names (its rows keep
    the folder's other cells)."""
    problems = validate(suite)
    if problems:
        raise SuiteError("\n".join(problems))
    cache_given = cache_dir is not None
    cache_dir = Path(cache_dir or default_cache_dir())
    run_id = run_id or f"{suite.name}-{suite.digest()[:8]}" + (f"-limit{limit}" if limit else "")
    run_dir = Path(results_dir) / run_id
    new_folder = not run_dir.exists()
    try:
        return _run_suite(suite, run_dir, cache_dir, cache_given, device, progress, data_root, limit, timing, narrowed)
    except BaseException:
        if new_folder:  # a failed start leaves no results folder behind
            _remove_if_empty(run_dir)
        raise
    finally:  # what this process left half-written (a full disk, an error)
        clean_tmp(run_dir)
        clean_tmp(cache_dir)


def writable(folder: Path, what: str, parent_must_exist: bool = False) -> None:
    """Create ``folder`` if needed and check that a file can be written there, before any work:
    an ``OSError`` naming the folder otherwise (read-only, no permission, no space). With
    ``parent_must_exist``, a folder whose parent is missing (a volume that is not mounted) is an
    error too, rather than created on whatever disk holds that path."""
    folder = Path(folder)
    if parent_must_exist and not folder.exists() and not folder.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, f"the {what}'s parent folder does not exist (a volume not mounted?)",
                                str(folder.parent))
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".write-probe.tmp{os.getpid()}"
    try:
        probe.write_bytes(b"x" * 4096)
    finally:
        probe.unlink(missing_ok=True)


def _remove_if_empty(folder: Path) -> None:
    """Remove ``folder`` and its empty subfolders, if nothing but empty folders is in it."""
    if not folder.is_dir() or any(p.is_file() for p in folder.rglob("*")):
        return
    for p in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        p.rmdir()
    folder.rmdir()


def _run_suite(suite: Suite, run_dir: Path, cache_dir: Path, cache_given: bool, device: str, progress: bool,
               data_root: Path | None, limit: int, timing: bool, narrowed: bool) -> Path:
    run_id = run_dir.name
    writable(cache_dir, "cache folder", parent_must_exist=cache_given)
    writable(run_dir, "results folder")
    clean_tmp(run_dir)  # a killed run's leftovers (processes no longer alive)
    clean_tmp(cache_dir)
    dev = torch.device(device)
    ranks = Ranks.from_env(dev)
    if ranks.world > 1 and dev.type == "cuda":  # one GPU per rank (torchrun's LOCAL_RANK)
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", ranks.rank)))
        torch.cuda.set_device(dev)
    torch.use_deterministic_algorithms(dev.type == "cpu", warn_only=True)
    prov = provenance.collect(device=str(dev), suite=suite.name, suite_hash=suite.digest(), suite_file=suite.source,
                              run_id=run_id, seeds=suite.seeds, task=suite.task)
    if suite.reference:
        prov["reference"] = suite.reference
    if suite.paper:  # the paper's configuration and the suite's deviations, for the report's captions
        prov["paper"] = suite.paper
    if ranks.world > 1:
        prov["ranks"] = ranks.world
    run = Run(suite, run_dir, cache_dir, dev, progress, prov, data_root=data_root, limit=limit, ranks=ranks,
              timing=timing, narrowed=narrowed)
    for task in tasks_of(suite):
        run_task(task, run)
    if not ranks.main:  # rank 0 writes the run's provenance and summary
        return run_dir
    ctx = run.state.get("frames")
    if ctx is not None and ctx.cost.unsupported():
        prov["fvcore_unsupported_ops"] = ctx.cost.unsupported()
    prov["summary"] = dict(sorted(run.counts.items()))
    write_json(run_dir / "provenance" / f"{prov['provenance_id']}.json", prov)
    write_json(run_dir / "summary.json", {"provenance_id": prov["provenance_id"], **prov["summary"],
                                          "phases_s": prov.get("phases_s", {})})
    log.info("%s: %s", run_id, ", ".join(f"{k} {v}" for k, v in prov["summary"].items()))
    return run_dir


def rescore_run(run_dir: Path) -> dict[str, int]:
    """Recompute every task's metrics in a run folder from its stored predictions."""
    return {name: rescore(cls(), Path(run_dir)) for name, cls in TASKS.items()
            if (Path(run_dir) / "cells" / name).is_dir()}


def extract_suite(suite: Suite, cache_dir: Path | None = None, device: str = "cpu", progress: bool = True,
                  data_root: Path | None = None, limit: int = 0) -> dict[str, dict]:
    """Fill the feature store (and the pixel store, when a method observes pixels) of a suite's
    test, train and val splits ahead of a sweep, each split's shards spread over the ranks; a
    trained reader is trained (or loaded) first, since its encoder makes the features. Returns,
    per split, the store folders, the videos and the failed ones."""
    from samplerbench.tasks.frames import FrameContext

    problems = validate(suite)
    if problems:
        raise SuiteError("\n".join(problems))
    cache_dir = Path(cache_dir or default_cache_dir())
    dev = torch.device(device)
    ranks = Ranks.from_env(dev)
    torch.use_deterministic_algorithms(dev.type == "cpu", warn_only=True)
    prov = provenance.collect(device=str(dev), suite=suite.name, suite_hash=suite.digest(), suite_file=suite.source,
                              run_id="features", seeds=suite.seeds, task=suite.task)
    run = Run(suite, cache_dir / "store", cache_dir, dev, progress, prov, data_root=data_root, limit=limit, ranks=ranks)
    with ranks.main_first():  # every replicate's reader (trained once per seed where it trains)
        contexts = FrameContext.every(run)
    out = {}
    for ctx in contexts:
        for split in (ctx.split, ctx.train, ctx.val):
            decoded = ctx.stores.ensure(split, sharded=True)
            feats, pixels = ctx.stores.stores(split)
            entry = out.setdefault(split.split, {"videos": len(split.records), "decoded": 0, "failed": 0,
                                                 "features": [], "pixels": str(pixels.root) if pixels is not None else None})
            entry["decoded"] += decoded
            entry["failed"] = max(entry["failed"], len(feats.failures()))
            if str(feats.root) not in entry["features"]:
                entry["features"].append(str(feats.root))
    return out
