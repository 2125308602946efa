"""Suites: a TOML file naming the dataset, model, budgets, seeds and methods of a run.

The suite hash is taken over the parsed content (canonical JSON), so comments and formatting
do not change it; it names the default run id, so re-running a suite resumes its run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import tomllib

SUITES_DIR = Path(__file__).parent / "suites"
TASKS = ("classification", "reduction")


@dataclass(frozen=True)
class MethodSpec:
    name: str
    params: dict = field(default_factory=dict)
    label: str | None = None

    @property
    def key(self) -> str:
        """Unique name of this configured method (name, plus a hash when it has parameters)."""
        if not self.params:
            return self.name
        return f"{self.name}-{hashlib.sha256(json.dumps(self.params, sort_keys=True).encode()).hexdigest()[:6]}"

    @property
    def display(self) -> str:
        return self.label or self.key


@dataclass(frozen=True)
class RetrievalSpec:
    """A method of a suite's retrieval task and its frame count: ``adaptive`` (the method
    decides), ``all`` (every candidate), an integer, or ``match`` (one cell per adaptive method
    of the task, at the mean count it kept; ``match_only`` narrows that to some labels)."""

    method: MethodSpec
    budget: str | int = "match"
    match_only: tuple[str, ...] = ()


@dataclass(frozen=True)
class Suite:
    name: str
    dataset: dict
    model: dict
    train: dict
    eval: dict
    methods: tuple[MethodSpec, ...]
    description: str = ""
    source: str = ""
    token_model: dict = field(default_factory=dict)  # TokenModelConfig overrides for token samplers
    retrieval: dict = field(default_factory=dict)  # [retrieval]: captions_per_video, seeds, model (overrides)
    retrieval_methods: tuple[RetrievalSpec, ...] = ()
    #: ``classification`` (methods x budgets, plus the optional [retrieval] task) or
    #: ``reduction`` (EVFR's selection-for-training experiment, configured by [reduction])
    task: str = "classification"
    reduction: dict = field(default_factory=dict)
    #: the paper's published numbers for rows of this suite (``[reference]``: source, rows)
    reference: dict = field(default_factory=dict)
    #: a paper suite's configuration (``[paper]``): ``preset``, the cost preset
    #: (``samplerbench cost``) whose modules the run instantiates, ``method``, the label of the
    #: paper's method, and ``deviations``, each way the suite differs from the paper (reported)
    paper: dict = field(default_factory=dict)

    @property
    def budgets(self) -> list[int]:
        return list(self.eval.get("budgets", [1, 2, 4, 8, 16]))

    @property
    def seeds(self) -> list[int]:
        return list(self.eval.get("seeds", [0]))

    def narrowed(self, methods: list[str] | None = None, budgets: list[int] | None = None,
                 seeds: list[int] | None = None) -> Suite:
        """The suite restricted to some methods (by name, label or key; in every task), budgets
        and seeds: a smoke run or a steered sweep. Unknown methods raise, naming the choices."""
        out = self
        if methods:
            def keep(spec: MethodSpec) -> bool:
                return bool({spec.name, spec.display, spec.key} & set(methods))

            known = {n for s in (*self.methods, *(r.method for r in self.retrieval_methods))
                     for n in (s.name, s.display, s.key)}
            unknown = [m for m in methods if m not in known]
            if unknown:
                raise ValueError(f"{self.source or self.name}: --methods {unknown} not in the suite "
                                 f"(have {sorted(known)})")
            out = replace(out, methods=tuple(m for m in self.methods if keep(m)),
                          retrieval_methods=tuple(r for r in self.retrieval_methods if keep(r.method)))
        if budgets:
            out = replace(out, eval={**out.eval, "budgets": list(budgets)})
        if seeds:
            out = replace(out, eval={**out.eval, "seeds": list(seeds)},
                          retrieval={**out.retrieval, "seeds": list(seeds)} if out.retrieval else out.retrieval)
        return out

    def digest(self) -> str:
        d = asdict(self)
        d.pop("source")
        if d["task"] == "classification" and not d["reduction"]:  # fields added later: old hashes stay
            del d["task"], d["reduction"]
        if not d["reference"]:
            del d["reference"]
        if not d["paper"]:
            del d["paper"]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


#: what identifies a ``[[reference.rows]]`` entry; its other keys are metrics
REFERENCE_KEYS = {"task", "label", "budget"}
REFERENCE_TASKS = ("classification", "retrieval", "reduction")


def reference_problems(reference: dict, where: str) -> list[str]:
    """One line per malformed entry of a suite's ``[reference]``."""
    out = []
    if reference and not reference.get("source"):
        out.append(f"{where}: reference.source is missing (the paper and table the numbers come from)")
    videos = reference.get("videos") if reference else None
    if videos is not None and (not isinstance(videos, int) or videos < 1):
        out.append(f"{where}: reference.videos must be the paper's number of evaluated videos, not {videos!r}")
    for i, row in enumerate(reference.get("rows", [])):
        if "label" not in row:
            out.append(f"{where}: reference.rows[{i}] has no label")
        if row.get("task", "classification") not in REFERENCE_TASKS:
            out.append(f"{where}: reference.rows[{i}].task must be one of {', '.join(REFERENCE_TASKS)}")
        bad = [k for k, v in row.items() if k not in REFERENCE_KEYS and not isinstance(v, (int, float))]
        if bad:
            out.append(f"{where}: reference.rows[{i}]: {bad[0]} is not a number")
    return out


def available() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.toml"))


def load(name_or_path: str | Path) -> Suite:
    """A built-in suite by name (``default``, ``quick``) or a TOML file by path."""
    path = Path(name_or_path)
    if not path.is_file():
        path = SUITES_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            raise FileNotFoundError(f"{name_or_path}: no such suite file (built-in suites: {', '.join(available())})")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: invalid TOML ({e})") from None
    missing = [k for k in ("name", "dataset", "methods") if k not in raw]
    if missing:
        raise ValueError(f"{path}: missing {', '.join(missing)}")
    methods = []
    for i, m in enumerate(raw["methods"]):
        if "name" not in m:
            raise ValueError(f"{path}: methods[{i}] has no name")
        methods.append(MethodSpec(m["name"], dict(m.get("params", {})), m.get("label")))
    keys = [m.key for m in methods]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{path}: the same method configuration is listed twice: {keys}")
    retrieval = dict(raw.get("retrieval", {}))
    rspecs = []
    for i, m in enumerate(retrieval.pop("methods", [])):
        if "name" not in m:
            raise ValueError(f"{path}: retrieval.methods[{i}] has no name")
        budget = m.get("budget", "match")
        if not (isinstance(budget, int) and budget > 0) and budget not in ("adaptive", "all", "match"):
            raise ValueError(f"{path}: retrieval.methods[{i}].budget must be adaptive, all, match or a positive "
                             f"integer, not {budget!r}")
        rspecs.append(RetrievalSpec(MethodSpec(m["name"], dict(m.get("params", {})), m.get("label")), budget,
                                    tuple(m.get("match", ()))))
    labels = [r.method.display for r in rspecs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"{path}: retrieval methods need distinct labels: {labels}")
    task = raw.get("task", "classification")
    if task not in TASKS:
        raise ValueError(f"{path}: task must be one of {TASKS}, not {task!r}")
    return Suite(name=raw["name"], dataset=raw["dataset"], model=raw.get("model", {}), train=raw.get("train", {}),
                 eval=raw.get("eval", {}), methods=tuple(methods), description=raw.get("description", ""),
                 source=str(path), token_model=raw.get("token_model", {}), retrieval=retrieval,
                 retrieval_methods=tuple(rspecs), task=task, reduction=dict(raw.get("reduction", {})),
                 reference=dict(raw.get("reference", {})), paper=dict(raw.get("paper", {})))
