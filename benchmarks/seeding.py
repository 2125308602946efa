"""Per-(seed, video, method) random generators: the only source of randomness in a run.

The key is hashed (BLAKE2b), so generators for different videos or methods are independent
and a result never depends on the order in which cells run or on the global RNG.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def derive_seed(*parts: object) -> int:
    """A 63-bit integer seed from any printable parts, stable across processes and platforms."""
    h = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little") & ((1 << 63) - 1)


def generator(seed: int, video_id: str, method: str) -> np.random.Generator:
    """The numpy generator a sampler receives for one video."""
    return np.random.Generator(np.random.PCG64(derive_seed(seed, video_id, method)))


def torch_generator(*parts: object) -> torch.Generator:
    """A CPU torch generator for the same kind of key (training data order, init)."""
    g = torch.Generator()
    g.manual_seed(derive_seed(*parts))
    return g


def replicate_seed(base: int, replicate: int) -> int:
    """The training seed of a configured ``base`` seed in replicate ``replicate`` (a suite's
    ``[eval] seeds`` entry): every learned piece trains once per replicate, so that a seed's
    cells carry the variance of training as well as of selection. A 31-bit integer (it is
    written in training records and fed to ``torch.manual_seed``)."""
    return derive_seed("replicate", base, replicate) & 0x7FFFFFFF
