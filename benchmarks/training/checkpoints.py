"""Checkpoints cached on disk under a hash of everything they depend on.

A checkpoint is one file, written atomically (tmp + rename): the weights, the training record
(JSON) and the weights' content hash together, so a kill can never leave weights without their
record or a record without its weights. It is loaded with ``torch.load(weights_only=True)``: a
cached file is data, never code. A file that cannot be read, is of another layout, or whose
weights do not match their hash is reported with its path and retrained (:func:`load_or_none`).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from pathlib import Path

import torch

from samplerbench.store.files import quarantine, write_json

log = logging.getLogger(__name__)

#: Part of every key: bump it when the checkpoint layout or the training loop changes what a key
#: means, so that no older file is mixed with newer ones. 3: one file with record and hash, one fit.
CACHE_VERSION = 3
FORMAT = "samplerbench-checkpoint"


class CheckpointError(ValueError):
    """A cached checkpoint that cannot be used (names the file and what is wrong)."""


def content_key(*parts) -> str:
    """A stable hash of JSON-able parts (configs, manifest hashes, seeds): what the weights
    depend on. It seeds the initialisation, so a cache version bump never changes weights."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def key_of(*parts) -> str:
    """The file key: :func:`content_key` of the parts and the cache version."""
    return content_key(CACHE_VERSION, *parts)


def state_hash(state: dict[str, torch.Tensor]) -> str:
    """sha256 over each tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


#: training-record keys that are wall-clock times: kept in the timing file beside the checkpoint
TIMING_KEYS = ("wall_s", "fit_wall_s", "train_wall_s")


def split_timing(meta: dict) -> tuple[dict, dict]:
    """(the record without wall-clock times, at any depth; those times by their path)."""
    times: dict[str, float] = {}

    def strip(d: dict, prefix: str) -> dict:
        out = {}
        for k, v in d.items():
            if k in TIMING_KEYS:
                times[prefix + k] = v
            elif isinstance(v, dict):
                out[k] = strip(v, f"{prefix}{k}.")
            else:
                out[k] = v
        return out

    return strip(meta, ""), times


def timing_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + ".timing.json")


def save(path: Path, state: dict, meta: dict) -> None:
    """Weights, record and hash as one file, atomically; the record's wall-clock times in the
    timing file beside it. Serialised in memory first: ``torch.save`` to a path names its archive
    after the (temporary, per-process) file name, which made identical weights differ in bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in state.items()}  # loads on any machine, GPU or not
    meta, times = split_timing(meta)
    blob = {"format": FORMAT, "version": CACHE_VERSION, "state": state, "sha256": state_hash(state),
            "meta": json.dumps(meta, sort_keys=True, default=str)}
    buf = io.BytesIO()
    torch.save(blob, buf)
    write_json(timing_path(path), times)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)


def load(path: Path) -> tuple[dict, dict]:
    """The weights and the training record of a checkpoint; :class:`CheckpointError` if the file
    is truncated, of another layout, or its weights do not match their hash."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, random bytes, not a torch file
        why = (str(e).splitlines() or [""])[0][:120]
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(e).__name__}: {why})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT or not {"state", "sha256", "meta"} <= set(blob):
        raise CheckpointError(f"{path}: not a samplerbench checkpoint of version {CACHE_VERSION} (an older layout?)")
    if state_hash(blob["state"]) != blob["sha256"]:
        raise CheckpointError(f"{path}: the weights do not match their content hash (altered or corrupt)")
    try:
        meta = json.loads(blob["meta"])
    except (TypeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable training record ({e})") from None
    try:  # the wall-clock times, when their file is there (they identify nothing)
        meta = {**json.loads(timing_path(path).read_text()), **meta}
    except (OSError, ValueError):
        pass
    return blob["state"], meta


def set_aside(path: Path, why: str) -> None:
    """Move an unusable checkpoint (and its timing file) to ``<cache>/quarantine/models/``, with
    a one-line warning: the caller retrains it."""
    path = Path(path)
    root = path.parent.parent  # <cache>/models/<file>
    quarantine(path, root, why, then="retraining it")
    if timing_path(path).is_file():
        os.replace(timing_path(path), root / "quarantine" / "models" / timing_path(path).name)


def load_or_none(path: Path) -> tuple[dict, dict] | None:
    """:func:`load`, or None when the file is missing or unusable; an unusable file is set aside
    (:func:`set_aside`), so that the caller retrains it."""
    if not path.is_file():
        return None
    try:
        return load(path)
    except CheckpointError as e:
        set_aside(path, str(e).partition(": ")[2])
        return None
