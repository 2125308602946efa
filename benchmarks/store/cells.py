"""A cell on disk: ``<key>.npz`` (its prediction arrays) and ``<key>.json`` (its record: values,
per-video selections, failures, fingerprint, the predictions file's hash and its own hash).

The arrays are written first and the record last, each atomically, so a run killed at any point
leaves either a complete cell or one that is recomputed. A record whose fingerprint differs is
recomputed; a record or predictions file that fails its hash (a flipped byte, a truncation) is
set aside in the run's ``quarantine/`` with a one-line warning and recomputed in the same run."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np

from samplerbench.store.files import jsonable, quarantine, write_json


class CellError(ValueError):
    """A stored cell that fails its checks (names the file and what is wrong)."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _record_hash(record: dict) -> str:
    """sha256 of the record's canonical JSON, without its own hash."""
    body = {k: v for k, v in record.items() if k != "record_sha256"}
    return _sha256(json.dumps(body, sort_keys=True, default=str).encode())


def write_cell(folder: Path, key: str, record: dict, predictions: dict[str, np.ndarray]) -> dict:
    """Store a cell's predictions, then its record (which names the predictions and their hash,
    and carries its own hash); returns the record as stored (what a later run reads back)."""
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez_compressed(buf, **predictions)
    data = buf.getvalue()
    path = folder / f"{key}.npz"
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    record["predictions"] = {"file": path.name, "sha256": _sha256(data), "arrays": sorted(predictions)}
    # a round trip through JSON first: the hash is of what a reader will parse (numpy scalars as numbers)
    record = json.loads(json.dumps(record, default=jsonable))
    return write_record(folder, key, record)


def write_record(folder: Path, key: str, record: dict) -> dict:
    """(Re)write a cell's record with its hash (a rescore changes its values); returns it."""
    record = {k: v for k, v in record.items() if k != "record_sha256"}
    record["record_sha256"] = _record_hash(record)
    write_json(Path(folder) / f"{key}.json", record)
    return record


def check_cell(folder: Path, key: str) -> dict:
    """The stored record of cell ``key`` after checking it and its predictions file against their
    hashes; :class:`CellError` naming the damaged file otherwise."""
    path = Path(folder) / f"{key}.json"
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CellError(f"{path}: unreadable cell record ({type(e).__name__})") from None
    if not isinstance(record, dict):
        raise CellError(f"{path}: not a cell record")
    if "record_sha256" in record and _record_hash(record) != record["record_sha256"]:
        raise CellError(f"{path}: the record does not match its hash (altered or corrupt)")
    meta = record.get("predictions")
    if not isinstance(meta, dict) or "file" not in meta or "sha256" not in meta:
        raise CellError(f"{path}: the record names no predictions file")
    pred = Path(folder) / meta["file"]
    if not pred.is_file():
        raise CellError(f"{pred}: the predictions file is missing")
    if _sha256(pred.read_bytes()) != meta["sha256"]:
        raise CellError(f"{pred}: predictions do not match the hash in {path.name}")
    return record


def load_cell(folder: Path, key: str, fingerprint: str) -> dict | None:
    """The stored record of a finished cell with this fingerprint, else None (to recompute). A
    cell that fails its checks is moved to the run folder's ``quarantine/`` (``folder`` is
    ``<run>/cells/<task>``) with a one-line warning, and None returned."""
    path = Path(folder) / f"{key}.json"
    if not path.is_file():
        return None
    try:
        record = check_cell(folder, key)
    except CellError as e:
        root = Path(folder).parent.parent
        why = str(e).partition(": ")[2]
        for f in (path, Path(folder) / f"{key}.npz"):
            if f.is_file():
                quarantine(f, root, why)
        return None
    if record.get("fingerprint") != fingerprint:
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
