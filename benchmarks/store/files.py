"""Atomic writes for a run's files: a temporary file beside the target, then ``os.replace``, so
a run killed mid-write leaves the previous file or the new one, never half of one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd


def _jsonable(o):
    if isinstance(o, np.integer | np.floating):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def write_json(path: Path, obj) -> None:
    """``obj`` as JSON at ``path`` (numpy scalars and arrays as plain numbers and lists)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, default=_jsonable))
    os.replace(tmp, path)


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """``df`` as CSV at ``path``, without the index."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)
