"""nox sessions. All of them share one virtual environment (.nox/shared): the torch build is
about 5.5 GB, too much to install once per session. It is (re)installed only when
pyproject.toml or constraints.txt change.

  nox -s bench            the default suite, then its report (nox -s bench -- --quick: smoke suite;
                          -- --suite NAME: another suite, e.g. evfr-reduction)
  nox -s tests            the test suite (nox -s tests -- -m "not slow" to skip the end-to-end tests)
  nox -s lint             ruff
  nox -s throughput       pytest-benchmark throughput benchmarks, then the gate against
                          results/baselines/throughput.json (-- --update-baseline records this
                          machine's section, keeping the other machines')
  nox -s quality          the quality gate: the quick suite from scratch, against
                          results/baselines/quality.json (-- --update-baseline records this CPU
                          platform's section, keeping the others')
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).parent
VENV = ROOT / ".nox" / "shared"
BIN = VENV / ("Scripts" if sys.platform == "win32" else "bin")

nox.options.sessions = ["bench"]


def system_packages(session: nox.Session) -> None:
    """Debian packages the tests use, installed when missing and this is root on a Debian-like
    machine (CI): ``ffmpeg`` (FFmpeg's shared libraries, for torchcodec, the faster decode
    backend) and ``chromium`` (the browser test of the HTML report). Without them everything
    still runs: decoding falls back to PyAV, and the torchcodec and browser tests skip."""
    import ctypes.util
    import shutil

    import nox.command

    missing = [pkg for pkg, present in (("ffmpeg", ctypes.util.find_library("avcodec")),
                                        ("chromium", shutil.which("chromium"))) if not present]
    if not missing or not shutil.which("apt-get") or os.geteuid() != 0:
        return
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    try:
        session.run("apt-get", "update", "-qq", external=True, env=env)
        session.run("apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing, external=True, env=env)
    except nox.command.CommandFailed:
        session.warn(f"could not install {missing}: the tests that need them skip")


def shared_env(session: nox.Session) -> dict:
    """Create/refresh the shared venv; return the environment that puts it first on PATH."""
    system_packages(session)
    stamp = VENV / ".samplerbench-stamp"
    want = hashlib.sha256(b"".join((ROOT / f).read_bytes() for f in ("pyproject.toml", "constraints.txt"))).hexdigest()
    if not (stamp.is_file() and stamp.read_text() == want):
        if not (BIN / "python").exists():
            session.run(sys.executable, "-m", "venv", str(VENV), external=True)
        install(session)
        stamp.write_text(want)
    return {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "VIRTUAL_ENV": str(VENV),
            "PYTHONDONTWRITEBYTECODE": ""}  # empty: unset for Python, so imports write their .pyc


def install(session: nox.Session) -> None:
    """Install the project and its pins into the shared venv: with uv when it installs (the same
    versions from the same indexes as pip; 27 s here with an empty uv cache, where pip took 85 s
    for the 5.5 GB of torch's wheels, which it unpacks one file at a time), else with pip.

    Neither byte-compiles at install: pip compiled all 12,400 modules of the venv, one at a time
    (67 s here), where a run imports 3,000; the sessions write each module's .pyc at its first
    import instead (PYTHONDONTWRITEBYTECODE cleared in :func:`shared_env`: this machine sets it,
    and without .pyc every process, and the tests start many, compiles torch again: 20 s an
    import, 7 s with)."""
    import nox.command

    want = ["-c", str(ROOT / "constraints.txt"), "-e", f"{ROOT}[test]"]
    python = str(BIN / "python")
    try:
        session.run(python, "-m", "pip", "install", "--quiet", "uv", external=True)
        conf = pip_config(python)
        session.run(str(BIN / "uv"), "pip", "install", "--quiet", "--python", python, *uv_sources(conf), *want,
                    external=True, env=uv_env(conf))
        return
    except nox.command.CommandFailed:
        session.warn("uv could not install the venv; installing with pip")
    session.run(python, "-m", "pip", "install", "--quiet", "--no-compile", *want, external=True)


def pip_config(python: str) -> dict[str, list[str]]:
    """pip's settings from its config files and PIP_* variables (``pip config list``), by key
    (``find-links``, ``extra-index-url``, ...), each a list of values; a PIP_* variable wins over
    the files, as in pip."""
    import subprocess

    out = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False).stdout
    conf: dict[str, list[str]] = {}
    from_env: set[str] = set()
    for line in out.splitlines():  # global.find-links='/opt/wheels', :env:.extra-index-url='a b'
        name, eq, value = line.partition("=")
        key = name.rpartition(".")[2]
        if eq and key not in from_env:  # a PIP_* variable overrides the files, as in pip
            conf[key] = value.strip().strip("'\"").split()
            if name.startswith(":env:"):
                from_env.add(key)
    return conf


def uv_sources(conf: dict[str, list[str]]) -> list[str]:
    """uv's options for the indexes, wheel folders and constraints pip is configured with, so that
    uv finds what pip finds (on this machine torch's wheels come from a local index, which uv does
    not read unless told), and picks as pip does: the best version across every index."""
    args = ["--index-strategy", "unsafe-best-match"]
    for key, flag in (("index-url", "--index-url"), ("extra-index-url", "--extra-index-url"),
                      ("find-links", "--find-links"), ("constraint", "--constraint")):
        for value in conf.get(key, []):
            args += [flag, value]
    return args


def uv_env(conf: dict[str, list[str]]) -> dict[str, str]:
    """pip's certificate bundle for uv, when pip is configured with one (a proxy's own CA)."""
    cert = conf.get("cert")
    return {"SSL_CERT_FILE": cert[0]} if cert and "SSL_CERT_FILE" not in os.environ else {}


@nox.session(venv_backend="none")
def bench(session: nox.Session) -> None:
    """Run the default suite (or --quick) and render its report into reports/out/<run-id>/."""
    env = shared_env(session)
    args = list(session.posargs)
    suite = "default"
    if "--quick" in args:
        args.remove("--quick")
        suite = "quick"
    if "--suite" in args:  # any built-in suite by name, or a TOML file: -- --suite evfr-reduction
        i = args.index("--suite")
        suite = args[i + 1]
        del args[i:i + 2]
    session.run(str(BIN / "samplerbench"), "run", suite, "--report", *args, env=env, external=True)


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    env = shared_env(session)
    session.run(str(BIN / "python"), "-m", "pytest", *session.posargs, env=env, external=True)


@nox.session(venv_backend="none")
def throughput(session: nox.Session) -> None:
    """Run the throughput benchmarks (raw JSON kept in results/throughput/) and gate them.

    A regression must survive two re-runs of the flagged benchmarks (the gate takes each one's
    best attempt): on this VM a few benchmarks are bimodal with unchanged code (the farthest
    point ones read +50% in two attempts of four); --update-baseline runs the suite three times
    and records the medians."""
    import json
    import time

    # glibc's allocator fixed: by default its mmap threshold moves with what the process freed
    # before, so a benchmark's large temporaries page-fault or not by the suite's history (MGSampler
    # on 32 frames: 2.5 ms alone in a process, 0.67 ms with these, 0.4-0.9 ms inside the suite)
    env = {**shared_env(session), "MALLOC_MMAP_THRESHOLD_": str(64 << 20), "MALLOC_TRIM_THRESHOLD_": str(256 << 20)}
    args = list(session.posargs)
    update = "--update-baseline" in args
    if update:
        args.remove("--update-baseline")
    folder = ROOT / "results" / "throughput"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())

    def bench(name: str, *select: str) -> Path:
        out = folder / f"{stamp}-{name}.json"
        session.run(str(BIN / "python"), "-m", "pytest", *(select or ["benchmarks/throughput"]), "-q",
                    "-p", "no:cacheprovider", f"--benchmark-json={out}", "--benchmark-disable-gc",
                    "--benchmark-sort=name", "--benchmark-columns=min,median,rounds", *args, env=env, external=True)
        return out

    gate = [str(BIN / "samplerbench"), "gate"]
    if update:
        runs = [bench(f"baseline{i}") for i in range(3)]
        session.run(*gate, *map(str, runs), "--update-baseline", env=env, external=True)
        return
    attempts = [bench("run")]
    for confirm in range(1, 3):
        last = confirm == 2
        session.run(*gate, *map(str, attempts), env=env, external=True, success_codes=[0, 1])
        verdicts = json.loads(attempts[-1].with_suffix(".gate.json").read_text())["verdicts"]
        flagged = [v["name"] for v in verdicts if v["status"] == "regression"]
        if not flagged:
            return
        # the run-wide drift flagged: re-run everything; else only the flagged benchmarks
        names = [] if any(not n.startswith("test_") for n in flagged) else flagged
        session.log(f"re-running {len(names) or 'all'} flagged benchmark(s) to confirm ({confirm} of 2): {flagged}")
        attempts.append(bench(f"confirm{confirm}", *(_node(n) for n in names)))
        if last:
            session.run(*gate, *map(str, attempts), env=env, external=True)


def _node(name: str) -> str:
    """A benchmark's pytest node id: the file under benchmarks/throughput that defines it (the
    peers' benchmarks live beside test_throughput.py; re-running them by that file found nothing)."""
    base = name.split("[")[0]
    for path in sorted((ROOT / "benchmarks" / "throughput").glob("test_*.py")):
        if f"def {base}(" in path.read_text():
            return f"{path.relative_to(ROOT)}::{name}"
    raise ValueError(f"benchmark {name}: no file under benchmarks/throughput defines {base}")


@nox.session(venv_backend="none")
def quality(session: nox.Session) -> None:
    """The quality gate: the quick suite, quality metrics only (no timing runs), from scratch (a
    fresh results folder and an empty cache: nothing trained or computed before is reused, so a
    change to training code shows), compared with results/baselines/quality.json.
    ``-- --update-baseline`` records the run as the new baseline after an intended change."""
    import tempfile
    import time

    env = shared_env(session)
    out = ROOT / "results" / "quality" / time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="samplerbench-quality-cache-") as cache:
        # two threads on any machine: torch's reductions split by thread count, and the baseline
        # (recorded on the 2-core CI machine) must be reproducible bit for bit
        run = [str(BIN / "samplerbench"), "run", "quick", "--results", str(out), "--cache", cache, "--no-timing",
               "--threads", "2", "--quiet"]
        session.run(*run, env=env, external=True)
        (run_dir,) = [d for d in out.iterdir() if d.is_dir()]
        # a narrowed run into the full run's folder must leave every rows file as it was
        tables = sorted(run_dir.glob("*.csv")) + sorted(run_dir.glob("*_selections.jsonl"))
        before = {p.name: p.read_bytes() for p in tables}
        session.run(*run, "--methods", "uniform", "--budgets", "4", env=env, external=True)
        changed = [name for name, data in before.items() if (run_dir / name).read_bytes() != data]
        if changed:
            session.error(f"a narrowed run (--methods uniform --budgets 4) changed {changed} of {run_dir}")
        session.log(f"a narrowed run left the {len(before)} rows, statistics and selection files unchanged")
    extra = [a for a in ("--update-baseline", "--drop-other-platforms") if a in session.posargs]
    session.run(str(BIN / "samplerbench"), "quality", str(run_dir), *extra, env=env, external=True)


@nox.session(venv_backend="none")
def lint(session: nox.Session) -> None:
    env = shared_env(session)
    session.run(str(BIN / "ruff"), "check", "benchmarks", "methods", "reports", "tests", "noxfile.py",
                env=env, external=True)
