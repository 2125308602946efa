"""A cell on disk: ``<key>.npz`` (its prediction arrays) and ``<key>.json`` (its record: values,
per-video selections, failures, fingerprint, and the predictions file's hash).

The arrays are written first and the record last, each atomically, so a run killed at any point
leaves either a complete cell or one that is recomputed; a record whose fingerprint differs, or
whose predictions file is missing or altered, counts as not done."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np

from samplerbench.store.files import write_json


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_cell(folder: Path, key: str, record: dict, predictions: dict[str, np.ndarray]) -> None:
    """Store a cell's predictions, then its record (which names the predictions and their hash)."""
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez_compressed(buf, **predictions)
    data = buf.getvalue()
    path = folder / f"{key}.npz"
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    record["predictions"] = {"file": path.name, "sha256": _sha256(data), "arrays": sorted(predictions)}
    write_json(folder / f"{key}.json", record)


def load_cell(folder: Path, key: str, fingerprint: str) -> dict | None:
    """The stored record of a finished cell with this fingerprint, else None (to recompute)."""
    path = folder / f"{key}.json"
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    pred = folder / record.get("predictions", {}).get("file", f"{key}.npz")
    if record.get("fingerprint") != fingerprint or not pred.is_file():
        return None
    return record


def load_predictions(folder: Path, record: dict) -> dict[str, np.ndarray]:
    """A cell's prediction arrays, checked against the hash its record holds."""
    meta = record["predictions"]
    path = Path(folder) / meta["file"]
    data = path.read_bytes()
    if _sha256(data) != meta["sha256"]:
        raise ValueError(f"{path}: predictions do not match the hash in {path.with_suffix('.json').name}")
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
