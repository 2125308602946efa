"""Sharded runs on ``torchrun``: which rank this process is, the exact part of a split it owns,
and the few collectives the cell loop needs (a barrier, gathering a cell's parts on rank 0).

Videos are split into contiguous blocks, ``rank * n // world`` to ``(rank + 1) * n // world``:
every video exactly once, no padded duplicates (``DistributedSampler`` repeats videos to even out
the ranks, which would count them twice), and rank order = manifest order, so the gathered parts
concatenate to what one process computes. Ranks share the run and cache folders (one node, or a
shared file system): rank 0 trains first and writes, the others then load what it wrote.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls, device: torch.device) -> Ranks:
        """This process's rank under torchrun (``WORLD_SIZE`` > 1), joining the process group
        (gloo on CPU, NCCL on CUDA); one rank of one otherwise."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        if not dist.is_initialized():
            timeout = datetime.timedelta(seconds=float(os.environ.get("SAMPLERBENCH_DIST_TIMEOUT_S", 6 * 3600)))
            backend = "nccl" if device.type == "cuda" else "gloo"  # rank 0 may train for hours before a barrier
            dist.init_process_group(backend, timeout=timeout)
        return cls(dist.get_rank(), dist.get_world_size())

    @property
    def main(self) -> bool:
        return self.rank == 0

    def part(self, n: int) -> range:
        """This rank's block of ``n`` items."""
        return range(self.rank * n // self.world, (self.rank + 1) * n // self.world)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def gather(self, obj) -> list | None:
        """Every rank's ``obj`` in rank order on rank 0 (None on the others)."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world if self.main else None
        dist.gather_object(obj, out, dst=0)
        return out

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (training, writing caches); the others run it after, and
        find what it wrote."""
        if not self.main:
            self.barrier()
        yield
        if self.main:
            self.barrier()
