"""Results that do not depend on what the cache held, caches and run folders that heal in one run,
and environment faults reported in one line: the damage battery."""

from __future__ import annotations

import errno
import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from samplerbench import suite as suite_mod
from samplerbench.data.parallel import in_order
from samplerbench.store.cells import load_cell, write_cell
from samplerbench.store.files import clean_tmp
from samplerbench.tasks.run import run_suite
from samplerbench.training import checkpoints
from samplerbench.training.fit import FitConfig, cached_fit, fit
from tests.conftest import TINY, tiny_suite_head

# --------------------------------------------------------------------------- the global RNG


class _Items(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, k):
        return k


def test_making_items_in_worker_processes_draws_nothing_from_the_global_rng():
    """A DataLoader draws its workers' base seed from torch's global RNG unless given its own
    generator; a store filled inside a training then shifted the training's dropout."""
    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    assert list(in_order(_Items(), workers=2)) == [0, 1, 2, 3]
    assert torch.equal(torch.rand(4), expected)


# --------------------------------------------------------------------------- checkpoints


class _Net(nn.Module):
    def __init__(self, width: int = 4):
        super().__init__()
        self.a, self.drop, self.b = nn.Linear(3, width), nn.Dropout(0.5), nn.Linear(width, 1)

    def forward(self, x):
        return self.b(self.drop(self.a(x)))


def _train(model: nn.Module) -> dict:
    x = torch.linspace(-1, 1, 48).view(16, 3)
    y = x.sum(1, keepdim=True)
    return fit(model, FitConfig(epochs=2, batch=4, lr=1e-2), 16,
               lambda m, ids, *_: ((m(x[torch.from_numpy(ids)]) - y[torch.from_numpy(ids)]) ** 2).mean(),
               None, "net", progress=False)


def _fit(cache: Path, width: int = 4, key: str = "k"):
    return cached_fit("net", [key, width], lambda: _Net(width), _train, cache)


def _checkpoint(cache: Path) -> Path:
    (path,) = (cache / "models").glob("*.pt")
    return path


def test_two_identical_trainings_write_byte_identical_checkpoints_with_their_times_beside(tmp_path):
    _, rec_a = _fit(tmp_path / "a")
    _, rec_b = _fit(tmp_path / "b")
    a, b = _checkpoint(tmp_path / "a"), _checkpoint(tmp_path / "b")
    assert a.read_bytes() == b.read_bytes()
    times = json.loads(checkpoints.timing_path(a).read_text())
    assert set(times) == {"wall_s", "fit_wall_s"} and times["wall_s"] >= times["fit_wall_s"] > 0
    _, again = _fit(tmp_path / "a")  # loaded: the record has its times back
    assert again["cached"] and again["wall_s"] == times["wall_s"] and rec_a["history"] == again["history"]


@pytest.mark.parametrize("wrong", ["other model", "other key's weights", "flipped byte", "truncated"])
def test_a_checkpoint_that_fails_its_checks_is_set_aside_and_retrained_in_the_same_run(tmp_path, caplog, wrong):
    """A well-formed checkpoint of another model or another key (the state dict is sound, its own
    hash matches), a flipped byte or a truncated file: one warning naming it, the file moved to
    ``quarantine/``, the weights retrained to those of a cold training."""
    cold, _ = _fit(tmp_path / "cold")
    _fit(tmp_path / "cache")
    path = _checkpoint(tmp_path / "cache")
    if wrong == "other model":
        _fit(tmp_path / "other", width=7)
        shutil.copy(_checkpoint(tmp_path / "other"), path)
    elif wrong == "other key's weights":
        _fit(tmp_path / "other", key="another")
        shutil.copy(_checkpoint(tmp_path / "other"), path)
    elif wrong == "flipped byte":  # in the weights themselves (a flip in the zip's padding changes nothing)
        raw = bytearray(path.read_bytes())
        at = bytes(raw).index(cold.state_dict()["a.weight"].numpy().tobytes())
        raw[at + 5] ^= 0x10
        path.write_bytes(bytes(raw))
    else:
        path.write_bytes(path.read_bytes()[:200])
    damaged = path.read_bytes()
    with caplog.at_level(logging.WARNING):
        model, record = _fit(tmp_path / "cache")
    assert not record["cached"]
    assert all(torch.equal(a, b) for a, b in zip(cold.state_dict().values(), model.state_dict().values(), strict=True))
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and str(path) in warned[0] and "\n" not in warned[0] and "quarantine" in warned[0]
    (kept,) = (tmp_path / "cache" / "quarantine" / "models").glob("*.pt")
    assert kept.read_bytes() == damaged


# --------------------------------------------------------------------------- cells


def _cell(folder: Path, key="c") -> dict:
    preds = {"probs": np.eye(3)[[0, 2, 1]], "labels": np.eye(3)}
    return write_cell(folder, key, {"cell": key, "fingerprint": "fp", "values": {"top1": 1 / 3}, "videos": []}, preds)


@pytest.mark.parametrize("part", ["npz byte", "json byte", "json value", "npz truncated", "npz missing"])
def test_a_damaged_cell_is_set_aside_and_recomputed(tmp_path, caplog, part):
    folder = tmp_path / "run" / "cells" / "classification"
    _cell(folder)
    assert load_cell(folder, "c", "fp")["values"]["top1"] == pytest.approx(1 / 3)
    npz, rec = folder / "c.npz", folder / "c.json"
    if part == "npz byte":
        raw = bytearray(npz.read_bytes())
        raw[len(raw) // 2] ^= 1
        npz.write_bytes(bytes(raw))
    elif part == "json byte":
        rec.write_bytes(rec.read_bytes()[:-3] + b"#}")
    elif part == "json value":  # still valid JSON: only the record's own hash sees it
        rec.write_text(rec.read_text().replace('"top1": 0.333', '"top1": 0.933'))
    elif part == "npz truncated":
        npz.write_bytes(npz.read_bytes()[:20])
    else:
        npz.unlink()
    with caplog.at_level(logging.WARNING):
        assert load_cell(folder, "c", "fp") is None
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned and all("\n" not in w and "quarantine" in w for w in warned)
    assert not rec.exists() and not npz.exists()  # recomputed by the caller; the damaged files kept aside
    assert (tmp_path / "run" / "quarantine" / "cells" / "classification" / "c.json").is_file()


def test_clean_tmp_removes_dead_writers_files_and_keeps_live_ones(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    (tmp_path / "a").mkdir()
    stale = [tmp_path / f"rows.csv.tmp{dead}", tmp_path / "a" / f"strips.npz.tmp{dead}.npz",
             tmp_path / f"x.json.tmp{os.getpid()}"]
    live = tmp_path / f"y.json.tmp{os.getppid()}"
    keep = [live, tmp_path / "rows.csv", tmp_path / "quarantine" / f"z.tmp{dead}"]
    for f in stale + keep:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("x")
    assert clean_tmp(tmp_path) == 3
    assert not any(f.exists() for f in stale) and all(f.exists() for f in keep)


# --------------------------------------------------------------------------- whole runs

RUN_METHODS = ("sosampler", "tokens-uniform", "uniform")


def _write_suite(path: Path) -> Path:
    """A tiny suite with a learned sampler that trains on the train and val stores (SOSampler,
    three epochs, so that a shifted RNG shows from the second), a token ViT and a baseline."""
    path.write_text(tiny_suite_head("heal") + textwrap.dedent("""
        [train]
        epochs = 1
        batch_videos = 8
        pretrain_steps = 20
        pretrain_batch = 16
        [token_model]
        epochs = 2
        width = 32
        depth = 1
        heads = 2
        batch = 8
        [eval]
        candidates = 8
        budgets = [2]
        seeds = [0]
        store_shard_videos = 4
        [[methods]]
        name = "sosampler"
        params = { epochs = 3, batch = 8 }
        [[methods]]
        name = "tokens-uniform"
        [[methods]]
        name = "uniform"
    """))
    return path


def _outcome(run_dir: Path, cache: Path) -> dict:
    """What must not depend on the cache's history: rows, selections, and every trained piece's
    weights and training history."""
    key = ["method", "budget", "seed", "metric"]
    rows = pd.read_csv(run_dir / "rows.csv").sort_values(key).reset_index(drop=True)
    sel = pd.read_json(run_dir / "classification_selections.jsonl", lines=True).sort_values(["cell", "video"])
    weights = {}
    for path in sorted((cache / "models").glob("*.pt")):
        state, meta = checkpoints.load(path)
        weights[path.name] = (checkpoints.state_hash(state), json.dumps(meta.get("history"), sort_keys=True))
    return {"rows": rows[key + ["value", "fingerprint", "n_videos"]].to_dict("list"),
            "selections": sel["hash"].tolist(), "weights": weights}


def _splits_stores(cache: Path, kind: str) -> dict[int, list[Path]]:
    """The stores of ``kind`` by their split's number of videos."""
    out: dict[int, list[Path]] = {}
    for root in (cache / "store").glob(f"{kind}-*"):
        out.setdefault(len(json.loads((root / "meta.json").read_text())["videos"]), []).append(root)
    return out


@pytest.fixture(scope="module")
def cold(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cold")
    s = suite_mod.load(_write_suite(tmp / "heal.toml"))
    run_dir = run_suite(s, tmp / "results", tmp / "cache", progress=False, timing=False)
    return s, tmp, run_dir, _outcome(run_dir, tmp / "cache")


#: what a user (or a crash) removes: the reader's checkpoint, the learned methods' checkpoints,
#: one feature shard of each split, one pixel shard of each split, one cell
ARTEFACTS = ("reader checkpoint", "learned checkpoints", "feature shard", "pixel shard", "cell")


def _remove(cache: Path, run_dir: Path, what: str) -> None:
    models = cache / "models"
    if what == "reader checkpoint":
        for f in models.glob("classifier-*"):
            f.unlink()
    elif what == "learned checkpoints":
        for f in models.iterdir():
            if not f.name.startswith("classifier-"):
                f.unlink()
    elif what in ("feature shard", "pixel shard"):  # the done record: the shard counts as missing
        for roots in _splits_stores(cache, what.split()[0] + "s").values():
            for root in roots:
                (root / "00001.done.json").unlink()
    else:
        cells = sorted((run_dir / "cells" / "classification").glob("*.json"))
        cells[0].unlink()


@pytest.mark.slow
def test_rows_selections_and_weights_do_not_depend_on_what_the_cache_held(cold, tmp_path):
    """Every combination of removed artefacts (checkpoints, feature and pixel shards of every
    split, a cell): the run that heals them ends with the cold run's rows, selections and weights
    (and training histories, epoch by epoch)."""
    s, tmp, run_dir, want = cold
    assert {len(v) for v in _splits_stores(tmp / "cache", "features").values()} == {1}
    assert set(_splits_stores(tmp / "cache", "pixels")) == {TINY["splits"][k] for k in ("train", "val", "test")}
    for n in range(1, len(ARTEFACTS) + 1):
        for combo in itertools.combinations(ARTEFACTS, n):
            work = tmp_path / "-".join(a.split()[0] for a in combo)
            shutil.copytree(tmp / "cache", work / "cache")
            shutil.copytree(run_dir.parent, work / "results")
            again = work / "results" / run_dir.name
            for what in combo:
                _remove(work / "cache", again, what)
            run_suite(s, work / "results", work / "cache", progress=False, timing=False)
            got = _outcome(again, work / "cache")
            for part in ("rows", "selections", "weights"):
                assert got[part] == want[part], f"{combo}: {part} differ from the cold run's"
            shutil.rmtree(work)


def _flip(path: Path, at: float = 0.75) -> None:
    raw = bytearray(path.read_bytes())
    raw[int(len(raw) * at)] ^= 0x01
    path.write_bytes(bytes(raw))


DAMAGE = ("pixel shard byte", "feature shard byte", "cell npz byte", "cell json value", "reader checkpoint of another model",
          "learned checkpoint truncated")


def _damage(cache: Path, run_dir: Path, what: str) -> Path:
    """Damage one file the way a disk or a careless copy does; returns it."""
    if what in ("pixel shard byte", "feature shard byte"):
        kind = what.split()[0] + "s"
        (root,) = _splits_stores(cache, kind)[TINY["splits"]["train" if kind == "pixels" else "test"]]
        path = root / f"00001.{kind[:-1] if kind == 'pixels' else 'features'}.npy"
        if kind == "pixels":
            path = root / "00001.pixels.npy"
        _flip(path)
    elif what.startswith("cell"):
        cells = sorted((run_dir / "cells" / "classification").glob("*.json"))
        path = cells[1] if what == "cell json value" else cells[2].with_suffix(".npz")
        if what == "cell json value":
            rec = json.loads(path.read_text())
            rec["values"]["top1"] = 1.0 - rec["values"]["top1"]
            path.write_text(json.dumps(rec))  # valid JSON, the right shape: only its hash tells
        else:
            _flip(path)
    elif what == "reader checkpoint of another model":
        (path,) = (cache / "models").glob("classifier-*.pt")
        (other,) = (cache / "models").glob("sosampler-*.pt")
        shutil.copy(other, path)
    else:
        (path,) = (cache / "models").glob("sosampler-*.pt")
        path.write_bytes(path.read_bytes()[:1000])
    return path


@pytest.mark.slow
@pytest.mark.parametrize("damage", [*DAMAGE, "all at once"])
def test_damaged_files_are_named_set_aside_and_recomputed_in_one_run(cold, tmp_path, caplog, damage):
    """A flipped byte in a pixel or feature shard or a cell, a cell record with another value, a
    checkpoint of another model, a truncated one: one warning line each naming the file, the file
    moved to ``quarantine/``, and this one run ends with the cold run's rows, selections and weights."""
    s, tmp, run_dir, want = cold
    shutil.copytree(tmp / "cache", tmp_path / "cache")
    shutil.copytree(run_dir.parent, tmp_path / "results")
    again = tmp_path / "results" / run_dir.name
    damaged = [_damage(tmp_path / "cache", again, d) for d in (DAMAGE if damage == "all at once" else (damage,))]
    with caplog.at_level(logging.WARNING):
        run_suite(s, tmp_path / "results", tmp_path / "cache", progress=False, timing=False)
    got = _outcome(again, tmp_path / "cache")
    for part in ("rows", "selections", "weights"):
        assert got[part] == want[part], f"{damage}: {part} differ from the cold run's"
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "quarantine" in r.getMessage()]
    assert all("\n" not in w for w in warned)
    for path in damaged:
        assert sum(str(path) in w.split(";")[0] for w in warned) == 1, (path, warned)
        root = tmp_path / "cache" if tmp_path / "cache" in path.parents else again
        assert (root / "quarantine" / path.relative_to(root)).is_file()


@pytest.mark.slow
def test_a_narrowed_run_never_shrinks_the_runs_rows(cold, tmp_path):
    """The full suite, then a --methods/--budgets subset into the same folder: every rows file,
    the intervals and the failures stay as the full run wrote them."""
    from samplerbench.cli import main as cli

    s, tmp, run_dir, _ = cold
    shutil.copytree(run_dir.parent, tmp_path / "results")
    again = tmp_path / "results" / run_dir.name
    before = {f: (again / f).read_bytes() for f in ("rows.csv", "classification_selections.jsonl", "classification_intervals.csv",
                                                    "classification_tests.csv", "failures.csv")
              if (again / f).is_file()}
    assert {"rows.csv", "classification_intervals.csv", "classification_tests.csv"} <= set(before)
    args = ["run", s.source, "--results", str(tmp_path / "results"), "--cache", str(tmp / "cache"), "-q", "--no-timing"]
    assert cli([*args, "--methods", "uniform", "--budgets", "2"]) == 0
    for f, data in before.items():
        assert (again / f).read_bytes() == data, f"{f} changed"
    # a subset that is not stored yet: its rows join the others (none drops out)
    assert cli([*args, "--methods", "uniform", "--budgets", "1"]) == 0
    rows = pd.read_csv(again / "rows.csv")
    old = pd.read_csv(pd.io.common.BytesIO(before["rows.csv"]))
    assert set(zip(old.method, old.budget, strict=True)) < set(zip(rows.method, rows.budget, strict=True))
    assert ("uniform", 1) in set(zip(rows.method, rows.budget, strict=True))


# --------------------------------------------------------------------------- environment faults


def _cli(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "samplerbench.cli", *args], capture_output=True, text=True, **kw)


def _no_tmp(*folders: Path) -> bool:
    return not [f for d in folders if d.is_dir() for f in d.rglob("*.tmp*") if "quarantine" not in f.parts]


@pytest.mark.slow
def test_a_full_disk_mid_run_is_one_line_leaves_nothing_half_written_and_the_next_run_completes(
        cold, tmp_path, capsys, monkeypatch):
    """The disk fills while the run writes its cells (simulated in process: the write puts half its
    bytes down, then fails with ENOSPC, as a full disk does): one line naming the file and the
    fault, a non-zero exit, no temporary file; the next run completes with the cold run's rows."""
    from samplerbench.cli import main as cli

    s, tmp, run_dir, want = cold
    shutil.copytree(tmp / "cache", tmp_path / "cache")
    results = tmp_path / "results"
    real_bytes, real_text = Path.write_bytes, Path.write_text
    writes = []

    def filling(real):
        def write(self, data, *a, **kw):
            if results in self.parents:
                writes.append(self)
                if len(writes) >= 4:  # the disk is full from the fourth write on
                    real(self, data[: len(data) // 2], *a, **kw)
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
            return real(self, data, *a, **kw)
        return write

    monkeypatch.setattr(Path, "write_bytes", filling(real_bytes))
    monkeypatch.setattr(Path, "write_text", filling(real_text))
    args = ["run", s.source, "--results", str(results), "--cache", str(tmp_path / "cache"), "-q", "--no-timing"]
    assert cli(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(writes[-1]) in err[0] and os.strerror(errno.ENOSPC) in err[0], err
    assert _no_tmp(results, tmp_path / "cache")
    monkeypatch.undo()
    assert cli(args) == 0
    assert _outcome(results / run_dir.name, tmp_path / "cache") == want


@pytest.mark.parametrize("fault", [errno.EROFS, errno.ENOSPC, errno.EACCES])
def test_an_unwritable_results_folder_fails_before_any_work_in_one_line(cold, tmp_path, capsys, monkeypatch, fault):
    """A read-only, full or forbidden results folder (simulated: the machine runs as root, which
    writes anywhere) is found by the probe before any data is read; nothing is left behind."""
    from samplerbench.cli import main as cli
    from samplerbench.tasks import run as run_mod

    s, tmp, _, _ = cold
    results = tmp_path / "results"
    real = Path.write_bytes

    def refuse(self, data):
        if results in self.parents:
            raise OSError(fault, os.strerror(fault), str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", refuse)
    monkeypatch.setattr(run_mod, "FrameContext", None, raising=False)  # no data may be read
    assert cli(["run", s.source, "--results", str(results), "--cache", str(tmp / "cache"), "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(results) in err[0] and os.strerror(fault) in err[0]
    assert not list(results.glob("*")) and _no_tmp(results)


def test_a_cache_on_a_missing_volume_is_one_line(cold, tmp_path, capsys):
    from samplerbench.cli import main as cli

    s, *_ = cold
    cache = tmp_path / "not-mounted" / "cache"
    assert cli(["run", s.source, "--results", str(tmp_path / "r"), "--cache", str(cache), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(cache.parent) in err[0] and "not mounted" in err[0]
    assert not cache.parent.exists() and not (tmp_path / "r").exists()


@pytest.mark.slow
def test_a_killed_writers_temporary_files_are_swept_at_start(cold, tmp_path):
    s, tmp, run_dir, want = cold
    shutil.copytree(tmp / "cache", tmp_path / "cache")
    shutil.copytree(run_dir.parent, tmp_path / "results")
    again = tmp_path / "results" / run_dir.name
    stale = [again / "rows.csv.tmp999999999", again / "cells" / "classification" / "x.json.tmp999999999",
             tmp_path / "cache" / "models" / "classifier-x.pt.tmp999999999"]
    for f in stale:
        f.write_text("half")
    run_suite(s, tmp_path / "results", tmp_path / "cache", progress=False, timing=False)
    assert not any(f.exists() for f in stale) and _no_tmp(again, tmp_path / "cache")
    assert _outcome(again, tmp_path / "cache") == want
