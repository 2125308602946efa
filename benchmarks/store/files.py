"""Atomic writes for a run's files: a temporary file beside the target, then ``os.replace``, so
a run killed mid-write leaves the previous file or the new one, never half of one. Damaged files
are set aside in a ``quarantine/`` folder (never deleted), and a killed writer's temporary files
are swept (:func:`clean_tmp`)."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

from samplerbench.data.parallel import pid_alive


def jsonable(o):
    """``json.dumps``'s ``default``: numpy scalars and arrays as plain numbers and lists, else str."""
    if isinstance(o, np.integer | np.floating):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def write_json(path: Path, obj) -> None:
    """``obj`` as JSON at ``path`` (numpy scalars and arrays as plain numbers and lists)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, default=jsonable))
    os.replace(tmp, path)


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """``df`` as CSV at ``path``, without the index."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


log = logging.getLogger(__name__)

#: a temporary file of the atomic writers: ``<name>.tmp<pid>`` (``.npz`` may follow)
_TMP = re.compile(r"\.tmp(\d+)(\.npz)?$")


def quarantine(path: Path, root: Path, why: str, then: str = "recomputing it") -> Path:
    """Move a damaged ``path`` (below ``root``) to ``root/quarantine/<its relative path>``, with a
    time stamp when one is already there; warn in one line naming it and ``why``. Returns the new
    place. The caller then recomputes the file (``then`` says so in the warning): the damaged copy
    stays for a post-mortem."""
    path, root = Path(path), Path(root)
    try:
        rel = path.resolve().relative_to(root.resolve())
    except ValueError:
        rel = Path(path.name)
    dest = root / "quarantine" / rel
    if dest.exists():
        dest = dest.with_name(f"{dest.name}.{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, dest)
    log.warning("%s: %s; moved to %s, %s", path, why, dest, then)
    return dest


def clean_tmp(folder: Path) -> int:
    """Remove the temporary files that a killed or failed writer left below ``folder`` (outside
    ``quarantine/``): those of processes no longer alive, and this process's own (it calls this
    at start and exit), so another run or rank writing beside it keeps its files. Returns how many."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    n = 0
    for f in folder.rglob("*.tmp*"):
        m = _TMP.search(f.name)
        if not m or not f.is_file() or "quarantine" in f.relative_to(folder).parts:
            continue
        pid = int(m.group(1))
        if pid == os.getpid() or not pid_alive(pid):  # ours (called at start and exit) or a dead writer's
            f.unlink(missing_ok=True)
            n += 1
    return n
