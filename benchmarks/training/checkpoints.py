"""Checkpoints cached on disk under a hash of everything they depend on.

Saved atomically (tmp + rename) with a JSON sidecar of the key's inputs and the training record;
loaded with ``torch.load(weights_only=True)``: a cached file is data, never code.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch


def key_of(*parts) -> str:
    """A stable hash of JSON-able parts (configs, manifest hashes, seeds)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def save(path: Path, state: dict, meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))


def load(path: Path) -> tuple[dict, dict]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return state, meta
