"""Where a module's tensors live, so that callers move their inputs there instead of assuming
the CPU (every model of a run sits on the run's ``--device``); and which CPU platform a run's
floating point came from (the gates keep a baseline per platform)."""

from __future__ import annotations

import platform
from pathlib import Path

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


def cpu_platform() -> dict:
    """What, beyond the code and the package versions, decides a CPU run's floating-point results:
    the CPU's vendor, family and model (MKL and oneDNN pick their kernels by them) and torch's
    vectorised kernel set. Machines that differ here train different models from the same seed,
    so the quality and throughput baselines are kept per platform (``samplerbench.tasks.quality``)."""
    keys = {"vendor_id": "vendor", "model name": "cpu", "cpu family": "family", "model": "model"}
    found: dict = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break  # the first processor's block is enough: a VM's cores are alike
            name, _, value = line.partition(":")
            if name.strip() in keys:
                found[keys[name.strip()]] = value.strip()
    except OSError:
        found = {"cpu": platform.processor() or platform.machine()}
    return {**found, "capability": torch.backends.cpu.get_cpu_capability()}


def describe_platform(record: dict | None) -> str:
    """A platform record in one line, field order-free (a baseline file stores its keys sorted)."""
    if record is None:
        return "unknown"
    return ", ".join(f"{k}={v}" for k, v in sorted(record.items())) or "any"


def platform_matches(recorded: dict, platform: dict | None) -> bool:
    """A baseline section recorded on ``recorded`` applies to ``platform`` when every field it
    names is the same (a section naming none, from before platforms were recorded: any)."""
    return platform is not None and all(platform.get(k) == v for k, v in recorded.items())


def own_section(sections: list[dict], platform: dict | None) -> dict | None:
    """The section (a dict with a ``platform`` record) that applies to ``platform``: the most
    specific of those that match, or None."""
    found = [s for s in sections if platform_matches(s["platform"], platform)]
    return max(found, key=lambda s: len(s["platform"])) if found else None
