"""The feature store: per-candidate arrays of one dataset split kept on disk, computed once per
(dataset manifest, encoder and weights, preprocessing, candidate configuration) and read by every
later run, suite and method.

A store is a folder ``<cache>/store/<kind>-<id>/`` whose id hashes its key (``meta.json`` keeps
the key and the split's video ids in manifest order). Videos are cut into shards of ``S`` videos;
shard ``i`` is one ``.npy`` file per array (``features`` (S, T, D), ``logits`` (S, T, C); or
``pixels`` (S, T, 3, H, W) uint8) and a ``<i>.done.json`` written last, atomically, with each
file's sha256 and the shard's failed videos. So a killed extraction loses at most the shards in
flight, a restart fills only the shards without a done file, and ranks of a sharded run fill
disjoint shards of the same store.

Why ``.npy`` shards and not safetensors: both can be memory-mapped, but numpy's ``mmap_mode`` gives
the array itself (no copy) and a row is read at a computed offset without mapping anything, which
keeps a run's resident memory flat (pages of a mapped file count in its RSS); the sha256 in the done
file does the verification safetensors' header would not (it checks no content).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from samplerbench.data.annotations import file_sha256
from samplerbench.store.files import quarantine, write_json

#: bump when the layout changes: every store is then rebuilt
STORE_VERSION = 1


class StoreError(RuntimeError):
    """A shard whose content is not what its done file says (one line, naming the file)."""


@dataclass
class ShardedStore:
    """Per-video arrays of one split under one key, in shards of ``shard_size`` videos."""

    root: Path
    video_ids: list[str]
    shard_size: int = 64
    _done: dict[int, dict] = field(default_factory=dict, repr=False)
    _verified: set[int] = field(default_factory=set, repr=False)
    _layout: dict[tuple[int, str], tuple[np.dtype, tuple[int, ...], int]] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, cache_dir: Path, kind: str, key: dict, video_ids: list[str], shard_size: int = 64) -> ShardedStore:
        """The store of ``kind`` for ``key`` over ``video_ids`` (created empty if new)."""
        ident = {"version": STORE_VERSION, "kind": kind, "key": key, "videos": list(video_ids),
                 "shard_size": shard_size}
        digest = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]
        root = Path(cache_dir) / "store" / f"{kind}-{digest}"
        root.mkdir(parents=True, exist_ok=True)
        if not (root / "meta.json").is_file():
            write_json(root / "meta.json", ident)
        return cls(root, list(video_ids), shard_size)

    @property
    def num_shards(self) -> int:
        return -(-len(self.video_ids) // self.shard_size)

    def shard_of(self, i: int) -> range:
        """The video positions of shard ``i``."""
        return range(i * self.shard_size, min((i + 1) * self.shard_size, len(self.video_ids)))

    def done_path(self, i: int) -> Path:
        return self.root / f"{i:05d}.done.json"

    def file(self, i: int, name: str) -> Path:
        return self.root / f"{i:05d}.{name}.npy"

    def done(self, i: int) -> dict | None:
        """Shard ``i``'s done record (files, failures), or None while it is not written."""
        if i not in self._done:
            try:
                self._done[i] = json.loads(self.done_path(i).read_text())
            except (OSError, json.JSONDecodeError):
                return None
        return self._done[i]

    def missing(self, rank: int = 0, world: int = 1) -> list[int]:
        """The shards of this rank (``i % world == rank``) that are not written yet."""
        return [i for i in range(rank, self.num_shards, world) if self.done(i) is None]

    def write(self, i: int, arrays: dict[str, np.ndarray], failures: dict[str, str]) -> None:
        """Write shard ``i`` whole (each array's first axis = the shard's videos; a failed
        video's rows are zeros): the files first, then the done record."""
        w = self.begin(i)
        for name, a in arrays.items():
            w.put(name, a)
        w.commit(failures)

    def begin(self, i: int) -> ShardWriter:
        """A writer of shard ``i`` whose arrays can be streamed a video at a time."""
        return ShardWriter(self, i)

    def forget(self, i: int) -> None:
        """Drop what this process read of shard ``i``'s done record (it was rewritten)."""
        self._done.pop(i, None)
        self._verified.discard(i)

    def failures(self) -> dict[str, str]:
        """Every written shard's failed videos: id -> one-line error."""
        out: dict[str, str] = {}
        for i in range(self.num_shards):
            d = self.done(i)
            if d is not None:
                out.update(d["failures"])
        return out

    def _damage(self, i: int) -> str | None:
        """What is wrong with written shard ``i`` (a file missing or not matching its sha256, a
        done record of another layout), or None when it is sound."""
        d = self.done(i)
        if d is None:
            return f"{self.done_path(i)}: unreadable done record"
        if not isinstance(d, dict) or not isinstance(d.get("files"), dict) or not isinstance(d.get("failures"), dict):
            return f"{self.done_path(i)}: not a done record"
        for name, sha in d["files"].items():
            path = self.file(i, name)
            if not path.is_file():
                return f"{path}: missing (its done record names it)"
            if file_sha256(path) != sha:
                return f"{path}: content does not match its sha256 in the done record"
        return None

    def _set_aside(self, i: int, why: str) -> None:
        """Move shard ``i``'s files and done record to ``<cache>/quarantine/``: it is missing now."""
        cache = self.root.parent.parent  # <cache>/store/<kind-id>/
        for f in sorted(self.root.glob(f"{i:05d}.*")):
            if f.is_file() and not f.name.endswith(".done.json"):
                quarantine(f, cache, why)
        if self.done_path(i).is_file():
            quarantine(self.done_path(i), cache, why)
        self.forget(i)
        self._layout = {k: v for k, v in self._layout.items() if k[0] != i}

    def heal(self, rank: int = 0, world: int = 1) -> list[int]:
        """Check every written shard of this rank against its done record (once per process) and
        set aside the damaged ones (:meth:`_set_aside`), so that the extraction that follows
        recomputes them in this run. Returns the shards set aside."""
        bad = []
        for i in range(rank, self.num_shards, world):
            if i in self._verified or not self.done_path(i).is_file():
                continue
            why = self._damage(i)
            if why is None:
                self._verified.add(i)
                continue
            self._set_aside(i, why.partition(": ")[2])
            bad.append(i)
        return bad

    def _verify(self, i: int) -> dict:
        """Shard ``i``'s done record after checking each file's sha256 (once per process). A shard
        damaged after this run filled its stores (they are healed first, :meth:`heal`) is set
        aside, and this read fails in one line: the next run recomputes it."""
        d = self.done(i)
        if d is None:
            raise StoreError(f"{self.done_path(i)}: shard {i} is not written (run `samplerbench features` or the suite)")
        if i not in self._verified:
            why = self._damage(i)
            if why is not None:
                self._set_aside(i, why.partition(": ")[2])
                raise StoreError(f"{why}; set aside: the next run recomputes it")
            self._verified.add(i)
        return d

    def _where(self, i: int, name: str) -> tuple[np.dtype, tuple[int, ...], int]:
        """dtype, row shape and data offset of array ``name`` in shard ``i`` (read from its header)."""
        if (i, name) not in self._layout:
            with open(self.file(i, name), "rb") as f:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read(f)
                if fortran:
                    raise StoreError(f"{self.file(i, name)}: Fortran order is not a store layout")
                self._layout[(i, name)] = (dtype, tuple(shape[1:]), f.tell())
        return self._layout[(i, name)]

    def get(self, position: int, names: tuple[str, ...] | None = None) -> dict[str, np.ndarray] | None:
        """The arrays of the video at ``position`` (manifest order), read at their offsets (no
        mapping: memory stays flat however many videos a run reads); None for a failed video."""
        i = position // self.shard_size
        d = self._verify(i)
        if self.video_ids[position] in d["failures"]:
            return None
        out = {}
        for name in names or tuple(d["files"]):
            dtype, shape, offset = self._where(i, name)
            count = int(np.prod(shape, dtype=np.int64))
            row = position - i * self.shard_size
            a = np.fromfile(self.file(i, name), dtype=dtype, count=count, offset=offset + row * count * dtype.itemsize)
            out[name] = a.reshape(shape)
        return out

    def array(self, name: str) -> np.ndarray:
        """The whole split's ``name`` (videos, ...) in manifest order: shards memory-mapped and
        joined (a failed video's rows are zeros). For bulk readers (training on a split)."""
        parts = []
        for i in range(self.num_shards):
            self._verify(i)
            parts.append(np.load(self.file(i, name), mmap_mode="r"))
        return np.concatenate(parts) if len(parts) > 1 else np.asarray(parts[0])


class RowStream:
    """An ``.npy`` file written one leading-axis row at a time (the header first, for the
    final shape), so a shard's pixels never sit in memory whole."""

    def __init__(self, path: Path, rows: int, row_shape: tuple[int, ...], dtype):
        self.path, self.rows, self.dtype = path, rows, np.dtype(dtype)
        self.row_shape = tuple(row_shape)
        self.tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        self.f = open(self.tmp, "wb")  # noqa: SIM115  (closed in close())
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": (rows, *self.row_shape)}
        np.lib.format.write_array_header_2_0(self.f, header)
        self.written = 0

    def append(self, row: np.ndarray | None) -> None:
        """The next row (None: zeros, a failed video)."""
        if row is None:
            row = np.zeros(self.row_shape, self.dtype)
        if tuple(row.shape) != self.row_shape or row.dtype != self.dtype:
            raise ValueError(f"{self.path}: row {self.written} is {row.dtype}{tuple(row.shape)}, "
                             f"not {self.dtype}{self.row_shape}")
        self.f.write(np.ascontiguousarray(row).tobytes())
        self.written += 1

    def close(self) -> str:
        """Finish the file in place; returns its sha256."""
        self.f.close()
        if self.written != self.rows:
            self.tmp.unlink(missing_ok=True)
            raise ValueError(f"{self.path}: {self.written} rows written of {self.rows}")
        os.replace(self.tmp, self.path)
        return file_sha256(self.path)


class ShardWriter:
    """Shard ``i`` of a store being written: whole arrays (:meth:`put`) or streamed rows
    (:meth:`stream`); :meth:`commit` writes the done record last."""

    def __init__(self, store: ShardedStore, i: int):
        self.store, self.i, self.n = store, i, len(store.shard_of(i))
        for stale in store.root.glob(f"{i:05d}.*.tmp*"):  # a killed writer's (a shard has one writer)
            stale.unlink(missing_ok=True)
        self.files: dict[str, str] = {}
        self.streams: dict[str, RowStream] = {}

    def put(self, name: str, a: np.ndarray) -> None:
        if len(a) != self.n:
            raise ValueError(f"{self.store.root}: shard {self.i}: {name} has {len(a)} rows for {self.n} videos")
        rows = self.stream(name, a.shape[1:], a.dtype)
        for row in a:
            rows.append(row)

    def stream(self, name: str, row_shape: tuple[int, ...], dtype) -> RowStream:
        self.streams[name] = RowStream(self.store.file(self.i, name), self.n, row_shape, dtype)
        return self.streams[name]

    def commit(self, failures: dict[str, str]) -> None:
        for name, rows in self.streams.items():
            self.files[name] = rows.close()
        write_json(self.store.done_path(self.i), {"files": self.files, "failures": failures})
        self.store.forget(self.i)
