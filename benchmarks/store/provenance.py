"""Where a result came from: code version, packages, hardware, seeds, data and config hashes.

Recorded once per invocation of the runner (a resumed run keeps each invocation's record) and
referenced from every result row by ``provenance_id``; the key fields are copied into the rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from samplerbench.devices import cpu_platform

PACKAGES = ("samplerbench", "torch", "torchvision", "av", "numpy", "pandas", "fvcore", "seaborn", "matplotlib",
            "pycocotools", "torchcodec", "threadpoolctl")


def _git(*args: str, cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(cwd: Path | None = None) -> dict:
    """Commit and dirty flag of the checkout holding this package (None outside git)."""
    cwd = cwd or Path(__file__).resolve().parent
    commit = _git("rev-parse", "HEAD", cwd=cwd)
    status = _git("status", "--porcelain", "--untracked-files=no", cwd=cwd)
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: str) -> dict:
    import torch

    from samplerbench.data.video import resolve_backend
    from samplerbench.kernels.threads import thread_counts

    info = {"device": device, "cpu": _cpu_model(), "cpu_platform": cpu_platform(), "cpu_cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "threads": thread_counts(),
            "decode_backend": resolve_backend(), "platform": platform.platform(),
            "python": sys.version.split()[0], "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), gpu_count=torch.cuda.device_count())
        try:
            drv = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10)
            info["driver"] = drv.stdout.strip().splitlines()[0] if drv.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired, IndexError):
            info["driver"] = None
    return info


def packages() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def collect(**extra) -> dict:
    """The provenance record of this invocation; ``extra`` adds seeds, hashes and the like."""
    rec = {"time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": sys.argv,
           **git_state(), "packages": packages(), "hardware": hardware(extra.pop("device", "cpu")), **extra}
    rec["provenance_id"] = hashlib.sha256(json.dumps(rec, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return rec
