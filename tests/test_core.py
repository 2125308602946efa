"""The evaluation core: the package's layers, declared sampler abilities, suite validation,
checkpoint healing, stale dataset folders, and a plugin sampler through the cell loop."""

from __future__ import annotations

import ast
import json
import logging
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from samplerbench.registry import METHODS
from samplerbench.sampling import AbilityError, Budget, Sampler, Selection, VideoView

PACKAGE = Path(__file__).resolve().parent.parent
ROOTS = {"samplerbench": PACKAGE / "benchmarks", "samplerbench.methods": PACKAGE / "methods",
         "samplerbench.reports": PACKAGE / "reports"}

#: The package's layers in the order data moves; a module imports only from its own layer or
#: those before it (README, "Layout"). Names are module prefixes under ``samplerbench.``.
LAYERS = [
    ["__init__", "registry", "seeding", "devices", "suite"],
    ["data"],
    ["kernels"],
    ["sampling"],
    ["metrics"],
    ["store"],  # atomic files, quarantine, cells, provenance: below training, whose checkpoints use them
    ["training"],
    ["models"],
    ["cost"],
    ["features"],
    ["tasks"],
    ["reports"],
    ["cli", "__main__"],
    ["methods"],
]


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg, root in ROOTS.items():
        for f in root.rglob("*.py"):
            if "throughput" in f.parts:
                continue
            rel = f.relative_to(root).with_suffix("")
            parts = list(rel.parts[:-1]) if rel.name == "__init__" else list(rel.parts)
            mods[".".join([pkg, *parts])] = f
    return mods


def _layer(module: str) -> int:
    name = module.removeprefix("samplerbench").lstrip(".") or "__init__"
    head = name.split(".")[0]
    for i, names in enumerate(LAYERS):
        if head in names:
            return i
    raise AssertionError(f"{module}: in no layer of the test's LAYERS (add it)")


def _imports(module: str, path: Path, mods: dict[str, Path]) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (path.name == "__init__.py")]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names = [mod] + [f"{mod}.{a.name}" for a in node.names]
        for n in names:
            while n and n not in mods:
                n = n.rpartition(".")[0]
            if n and n != module and not mods[n].name == "__init__.py":
                out.add(n)
    return out


def test_no_import_cycle_and_no_module_reaches_up_a_layer():
    mods = _modules()
    graph = {m: _imports(m, f, mods) for m, f in mods.items()}
    upward = [f"{m} (layer {_layer(m)}) imports {d} (layer {_layer(d)})" for m, deps in graph.items()
              for d in deps if _layer(d) > _layer(m)]
    assert not upward, "\n".join(upward)
    # a cycle needs an edge within a layer too: depth-first search over the whole graph
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for d in graph[m]:
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path, m, d]))
            if d not in state:
                visit(d, [*path, m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])


def test_tasks_and_methods_dispatch_on_declarations_not_hasattr():
    for root in (PACKAGE / "benchmarks" / "tasks", PACKAGE / "methods"):
        for f in root.rglob("*.py"):
            src = f.read_text()
            assert "hasattr(" not in src and "getattr(" not in src, f


# -- declared abilities -------------------------------------------------------------------------


def test_a_sampler_that_observes_label_must_be_an_upper_bound():
    with pytest.raises(AbilityError, match="observes 'label' but is not declared upper_bound"):
        @METHODS.register("test-peeker")
        class Peeker(Sampler):
            observes = frozenset({"label"})

            def select(self, view, budget, rng):
                return Selection(np.flatnonzero(view.label())[:1])
    assert "test-peeker" not in METHODS


def test_contradictory_declarations_fail_at_definition():
    with pytest.raises(AbilityError, match="learns = True but it does not define prepare"):
        class NoPrepare(Sampler):
            learns = True
    with pytest.raises(AbilityError, match="defines prepare"):
        class UndeclaredLearner(Sampler):
            def prepare(self, env):
                return {}
    with pytest.raises(AbilityError, match="reader = 'head' needs head_logits"):
        class NoHead(Sampler):
            reader = "head"
    with pytest.raises(AbilityError, match="reader must be one of"):
        class Odd(Sampler):
            reader = "pixels"
    with pytest.raises(AbilityError, match="not among"):
        class Telepath(Sampler):
            observes = frozenset({"thoughts"})


def test_reading_an_undeclared_observation_is_refused_by_name():
    class Sneaky(Sampler):
        observes = frozenset({"pixels"})

        def select(self, view, budget, rng):
            return Selection(np.argsort(-view.frame_probs()[:, 0])[:1])

    s = Sneaky()
    view = VideoView("v7", 10, np.arange(4), allowed=s.observes,
                     providers={"frame_probs": lambda: np.ones((4, 3))})
    with pytest.raises(PermissionError, match=r"video v7: the sampler did not declare that it observes 'frame_probs'"):
        s.select(view, Budget("count", 1), np.random.default_rng(0))


def test_a_composition_inherits_the_upper_bound_mark():
    plain, on_oracle = METHODS.get("sllm")(), METHODS.get("sllm")(base="oracle")
    assert not plain.upper_bound and on_oracle.upper_bound and "label" in on_oracle.observes
    on_oracle.check()  # marked: consistent
    on_oracle.upper_bound = False  # a composition that lost the mark is refused at instantiation
    with pytest.raises(AbilityError, match="observes the labels"):
        on_oracle.check()


def test_builtin_methods_declare_what_the_tasks_dispatch_on():
    learners = {n for n in METHODS.names() if METHODS.get(n).learns}
    assert learners == {"sosampler", "sllm", "mmsampler"}
    assert {n for n in METHODS.names() if METHODS.get(n).reader == "tokens"} == {"kcenter", "tokens-uniform"}
    assert METHODS.get("sllm").reader == "head" and METHODS.get("mmsampler").adaptive
    assert [n for n in METHODS.names() if METHODS.get(n).upper_bound] == ["oracle"]


# -- suite validation before any work ------------------------------------------------------------


def _suite(tmp_path: Path, body: str, name="bad") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(textwrap.dedent(f"""
        name = "{name}"
        [dataset]
        name = "synth-events"
        params = {{ seed = 1, splits = {{ train = 4, val = 2, test = 2 }} }}
    """) + textwrap.dedent(body))
    return path


@pytest.mark.parametrize("body,expect", [
    ('[[methods]]\nname = "unifrom"\n', "methods[0] (unifrom): unknown method 'unifrom'"),
    ('[eval]\nbudgets = [1, 40]\n[[methods]]\nname = "uniform"\n', "eval.budgets: 40 is outside 1..32"),
    ('[eval]\ncandidates = 0\n[[methods]]\nname = "uniform"\n', "eval.candidates must be an integer >= 1, not 0"),
    ('[[methods]]\nname = "evfr-fps"\nparams = { metrik = "cosine" }\n', "methods[0] (evfr-fps-"),
    ('[[methods]]\nname = "evfr-afs"\nparams = { index = "nope" }\n', "methods[0] (evfr-afs-"),
    ('[train]\nepochz = 3\n[[methods]]\nname = "uniform"\n', "train: unknown key(s) ['epochz']"),
    ('[eval]\nseeds = []\n[[methods]]\nname = "uniform"\n', "eval.seeds must be a non-empty list"),
    ('[[methods]]\nname = "uniform"\n[retrieval]\nv2t = "clip"\n[[retrieval.methods]]\nname = "uniform"\n',
     "retrieval.v2t must be one of ['clip4clip', 'all-captions'], not 'clip'"),
])
def test_suite_problems_are_one_line_each_before_any_work(tmp_path, body, expect):
    from samplerbench import suite as suite_mod
    from samplerbench.tasks.run import SuiteError, run_suite

    path = _suite(tmp_path, body)
    with pytest.raises(SuiteError) as e:
        run_suite(suite_mod.load(path), tmp_path / "results", tmp_path / "cache", progress=False)
    lines = str(e.value).splitlines()
    assert any(expect in line for line in lines), lines
    assert all(line.startswith(f"{path}: ") for line in lines)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "results").exists()  # nothing built or trained


def test_every_problem_of_a_suite_is_listed_and_the_cli_exits_2(tmp_path, capsys):
    from samplerbench.cli import main

    path = _suite(tmp_path, '[eval]\ncandidates = 8\nbudgets = [4, 9]\n[[methods]]\nname = "nope"\n'
                            '[[methods]]\nname = "uniform"\nparams = { n = 3 }\n')
    path.write_text(path.read_text().replace('name = "synth-events"', 'name = "synth-event"'))
    assert main(["run", str(path), "--cache", str(tmp_path / "cache"), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4, err
    assert all(line.startswith(f"samplerbench: error: {path}: ") for line in err)
    assert "dataset.name: unknown dataset 'synth-event'" in err[0]
    assert not (tmp_path / "cache").exists()


def test_reduction_suites_refuse_learned_methods_up_front(tmp_path):
    from samplerbench import suite as suite_mod
    from samplerbench.tasks.run import validate

    path = _suite(tmp_path, 'task = "reduction"\n[[methods]]\nname = "sosampler"\n')
    text = path.read_text()
    path.write_text('task = "reduction"\n' + text.replace('task = "reduction"\n', ""))
    problems = validate(suite_mod.load(path))
    assert any("training-free samplers" in p for p in problems), problems


# -- checkpoints: one atomic file, healed when corrupt ---------------------------------------------


def _fit_linear(cache: Path, calls: list):
    from samplerbench.training.fit import cached_fit

    def train(m):
        calls.append(1)
        with torch.no_grad():
            m.weight.add_(1.0)
        return {"note": "trained"}

    return cached_fit("lin", [1], lambda: torch.nn.Linear(3, 2), train, cache)


@pytest.mark.parametrize("damage", ["truncated", "random-bytes", "old-layout", "altered-weights", "empty"])
def test_a_damaged_checkpoint_is_reported_by_name_and_retrained(tmp_path, caplog, damage):
    from samplerbench.training import checkpoints

    calls = []
    model, rec = _fit_linear(tmp_path, calls)
    path = Path(rec["checkpoint"])
    want = model.weight.clone()
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "random-bytes":
        path.write_bytes(np.random.default_rng(0).bytes(len(data)))
    elif damage == "old-layout":  # weights alone, as versions before 3 saved them (record in a sidecar)
        torch.save(model.state_dict(), path)
    elif damage == "altered-weights":
        blob = torch.load(path, weights_only=True)
        blob["state"]["weight"] = blob["state"]["weight"] + 1
        torch.save(blob, path)
    else:
        path.write_bytes(b"")
    with pytest.raises(checkpoints.CheckpointError, match=str(path)):
        checkpoints.load(path)
    with caplog.at_level(logging.WARNING):
        again, rec2 = _fit_linear(tmp_path, calls)
    assert calls == [1, 1] and rec2["cached"] is False
    assert any(str(path) in r.getMessage() and "retraining" in r.getMessage() for r in caplog.records)
    assert torch.equal(again.weight, want)  # the same weights as the first training
    third, rec3 = _fit_linear(tmp_path, calls)
    assert calls == [1, 1] and rec3["cached"] is True and rec3["note"] == "trained"


def test_checkpoint_is_one_file_with_its_record():
    from samplerbench.training import checkpoints

    state = {"w": torch.arange(6.0).view(2, 3), "n": torch.tensor(3)}
    assert checkpoints.state_hash(state) == checkpoints.state_hash({k: v.clone() for k, v in state.items()})
    assert checkpoints.state_hash(state) != checkpoints.state_hash({**state, "n": torch.tensor(4)})


# -- stale partial dataset folders ----------------------------------------------------------------


def test_stale_partial_folders_of_dead_processes_are_removed(tmp_path):
    from samplerbench.data.synth import remove_stale_partials

    root = tmp_path / "synth-events-abc"
    dead = tmp_path / "synth-events-abc.partial-999999999"
    live = tmp_path / f"synth-events-abc.partial-{os.getpid()}"
    other = tmp_path / "synth-events-xyz.partial-999999999"
    for d in (dead, live, other):
        (d / "videos").mkdir(parents=True)
    assert remove_stale_partials(root) == [dead]
    assert not dead.exists() and live.exists() and other.exists()


# -- a plugin sampler through the loop: editing its module recomputes its cells only -----------------


PLUGIN = '''
"""A plugin method for the tests."""
from dataclasses import dataclass

import numpy as np

from samplerbench.registry import METHODS
from samplerbench.sampling import Sampler, Selection


@METHODS.register("{name}")
@dataclass
class Plugin(Sampler):
    name = "{name}"

    def select(self, view, budget, rng):
        n = budget.frames(view.num_candidates)
        return Selection(np.arange(n){tail})
'''


@pytest.mark.slow
def test_editing_a_method_module_recomputes_that_methods_cells_and_no_other(tmp_path, monkeypatch):
    import importlib
    import sys

    from samplerbench import suite as suite_mod
    from samplerbench.tasks import core
    from samplerbench.tasks.run import run_suite
    from tests.test_runner import write_suite

    monkeypatch.syspath_prepend(str(tmp_path))
    for mod, name in (("sb_plugin_a", "plug-a"), ("sb_plugin_b", "plug-b")):
        (tmp_path / f"{mod}.py").write_text(PLUGIN.format(name=name, tail=""))
        importlib.import_module(mod)
    path = write_suite(tmp_path / "plug.toml", name="plug")
    text = path.read_text().split("[[methods]]")[0].replace("seeds = [0, 1]", "seeds = [0]")
    path.write_text(text + '[[methods]]\nname = "plug-a"\n[[methods]]\nname = "plug-b"\n[[methods]]\nname = "uniform"\n')
    s = suite_mod.load(path)
    run_dir = run_suite(s, tmp_path / "results", tmp_path / "cache", progress=False)

    def summary():
        return json.loads((run_dir / "summary.json").read_text())

    assert summary()["classification computed"] == 6
    # a change that does not alter the numbers still changes the code's identity: recomputed
    (tmp_path / "sb_plugin_a.py").write_text(PLUGIN.format(name="plug-a", tail=", scores=None"))
    importlib.reload(sys.modules["sb_plugin_a"])
    core._module_identity.cache_clear()
    run_suite(s, tmp_path / "results", tmp_path / "cache", progress=False)
    assert summary()["classification computed"] == 2 and summary()["classification reused"] == 4
    fps = {p.stem: json.loads(p.read_text())["fingerprint"] for p in (run_dir / "cells" / "classification").glob("*.json")}
    assert len(set(fps.values())) == 6


# -- faithful numbers: cost and non-finite predictions -------------------------------------------


class _StubCost:
    """Per frame: encoder 100 FLOPs; head 7 FLOPs per video."""

    def encoder_head(self, n):
        from samplerbench.cost.flops import FlopCount

        return FlopCount(100.0 * n), FlopCount(7.0)


def test_the_encoder_is_charged_once_per_candidate_it_runs_on():
    """Hand-worked: T = 6 candidates, N = 2 selected. A sampler that observed the features (the
    encoder on all 6, charged to it: 600) pays no encoder on its selection; one that did not
    pays the encoder on its 2 frames (200)."""
    from samplerbench.tasks.frames import FrameContext

    ctx = FrameContext.__new__(FrameContext)
    ctx.cost = _StubCost()
    seen = VideoView("v", 6, np.arange(6), allowed=frozenset({"features"}), providers={"features": lambda: np.ones((6, 2))},
                     provider_flops={"features": 600.0})
    seen.features()
    blind = VideoView("v", 6, np.arange(6), allowed=frozenset({"pixels"}), providers={"pixels": lambda: None})
    blind.pixels()
    assert seen.charged_flops == 600.0 and ctx.encoder_flops(seen, 2).flops == 0.0
    assert blind.charged_flops == 0.0 and ctx.encoder_flops(blind, 2).flops == 200.0


NAN_HEAD = '''
from dataclasses import dataclass

import numpy as np
import torch

from samplerbench.registry import METHODS
from samplerbench.sampling import Sampler, Selection


@METHODS.register("nan-head")
@dataclass
class NanHead(Sampler):
    """Uniform frames read by a head that returns NaN on some videos."""
    name = "nan-head"
    reader = "head"

    def select(self, view, budget, rng):
        return Selection(np.arange(budget.frames(view.num_candidates)))

    def head_logits(self, feats):
        logits = feats.mean(1)[:, :4]
        return logits * float("nan") if int(feats.abs().sum() * 1000) % 2 else logits

    def head_flops(self, k):
        return 1.0
'''


@pytest.mark.slow
def test_non_finite_predictions_are_recorded_failures_and_costs_follow_the_rule(tmp_path, monkeypatch):
    import importlib

    import pandas as pd

    from samplerbench import suite as suite_mod
    from samplerbench.tasks.run import run_suite
    from tests.test_runner import write_suite

    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "sb_nan_head.py").write_text(NAN_HEAD)
    importlib.import_module("sb_nan_head")
    path = write_suite(tmp_path / "nan.toml", name="nan")
    text = path.read_text().split("[[methods]]")[0].replace("seeds = [0, 1]", "seeds = [0]")
    path.write_text(text + "".join(f'[[methods]]\nname = "{m}"\n' for m in ("nan-head", "uniform", "oracle", "evfr-fps")))
    run_dir = run_suite(suite_mod.load(path), tmp_path / "results", tmp_path / "cache", progress=False)
    rows = pd.read_csv(run_dir / "rows.csv").query("kind != 'timing'")
    nan = rows[rows.method == "nan-head"]
    assert (nan["n_failed"] > 0).all() and (nan["n_videos"] > 0).all()
    assert np.isfinite(nan["value"]).all()
    fails = pd.read_csv(run_dir / "failures.csv")
    assert fails.query("cell.str.startswith('nan-head')", engine="python")["error"].str.contains("non-finite class scores").all()
    v = rows.set_index(["method", "budget", "metric"])["value"]
    t = 8  # the tiny suite's candidates
    enc1, head1 = v[("uniform", 1, "gflops_encoder")], v[("uniform", 1, "gflops_head")]
    assert v[("uniform", 4, "gflops_encoder")] == pytest.approx(4 * enc1)
    # the oracle ran the classifier on every candidate (charged to it): no second encoder pass
    assert v[("oracle", 4, "gflops_encoder")] == 0
    assert v[("oracle", 4, "gflops_sampler")] == pytest.approx(t * (enc1 + head1))
    # EVFR's FPS observed every candidate's features: the encoder on T is its cost, once
    assert v[("evfr-fps", 4, "gflops_encoder")] == 0 and v[("evfr-fps", 4, "gflops_sampler")] > t * enc1
    # every method is scored on the videos every cell of the table evaluated: any video nan-head
    # failed on (at any budget) leaves every method's numbers
    bad = set(fails[fails["cell"].str.startswith("nan-head")]["video"])
    failed = len(bad)
    assert rows["n_videos"].nunique() == 1 and rows["n_videos"].iloc[0] == 12 - failed
    assert (rows.query("method == 'uniform'")["n_excluded"] == failed).all()
    from sklearn.metrics import accuracy_score

    from samplerbench.store.cells import load_predictions

    folder = run_dir / "cells" / "classification"
    rec = json.loads((folder / "uniform__n4__s0.json").read_text())
    pred = load_predictions(folder, rec)
    keep = [i for i, x in enumerate(rec["videos"]) if x["video"] not in bad]
    assert len(keep) == len(rec["videos"]) - failed
    want = accuracy_score(pred["labels"][keep].argmax(1), pred["probs"][keep].argmax(1))
    assert v[("uniform", 4, "top1")] == pytest.approx(want)
    assert rec["values"]["top1"] == pytest.approx(accuracy_score(pred["labels"].argmax(1), pred["probs"].argmax(1)))


def test_only_an_upper_bounds_view_holds_the_labels():
    """The label guard: the harness builds a ``label`` provider into the view of an upper bound
    only, so no other sampler can reach the labels, even by the view's private fields."""
    from types import SimpleNamespace

    from samplerbench.tasks.frames import FrameContext, VideoCache

    class Cost(_StubCost):
        def per_frame_classifier_flops(self):
            return 107.0

    ctx = FrameContext.__new__(FrameContext)
    ctx.cost, ctx.split, ctx.frame_size = Cost(), SimpleNamespace(num_classes=3, multilabel=False), (8, 8)
    ctx.classifier_record = {"key": "reader"}  # the replicate's reader (keys per-video memos of its features)
    rec = SimpleNamespace(video_id="v", num_frames=10, labels=[2])
    vc = VideoCache(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.ones(4, 5), np.zeros((4, 3)), np.arange(4))
    for name, sees in (("uniform", False), ("evfr-fps", False), ("oracle", True)):
        view = ctx.view(rec, vc, METHODS.get(name)())
        assert ("label" in view._providers) is sees, name
    oracle = ctx.view(rec, vc, METHODS.get("oracle")())
    assert oracle.label().tolist() == [0, 0, 1] and oracle.frame_probs().shape == (4, 3)
    assert oracle.charged_flops == 4 * 107.0  # frame_probs: the classifier on every candidate


def test_rescoring_a_version_2_cell_derives_probabilities_from_its_logits():
    from samplerbench.metrics.classification import softmax
    from samplerbench.tasks.classification import Classification

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(20, 4)) * 3
    labels = np.eye(4, dtype=np.int64)[rng.integers(0, 4, 20)]
    videos = [{"video": f"v{i}", "frames": [1], "events": [[0, 3]], "n": 1, "gflops_sampler": 0.0,
               "gflops_encoder": 0.1, "gflops_head": 0.0} for i in range(20)]
    old = Classification.score(videos, {"scores": logits, "labels": labels, "multilabel": np.array(False)})
    new = Classification.score(videos, {"probs": softmax(logits), "labels": labels, "multilabel": np.array(False)})
    assert old == new
