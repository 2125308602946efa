"""Where a module's tensors live, so that callers move their inputs there instead of assuming
the CPU (every model of a run sits on the run's ``--device``)."""

from __future__ import annotations

import torch
from torch import nn


def device_of(module: nn.Module) -> torch.device:
    """The device of a module's first parameter (or buffer); the CPU for a module with neither."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def rng_devices(device: torch.device) -> list:
    """What ``torch.random.fork_rng(devices=...)`` saves and restores for a run on ``device``:
    the CUDA device's generator too (dropout draws from it there), nothing else."""
    return [device] if torch.device(device).type == "cuda" else []
