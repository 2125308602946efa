"""Peak resident memory of a run's evaluation over ``COPIES`` x the videos of a split, in a fresh
process: ``python -m samplerbench.throughput.memory_probe ROOT COPIES WORKDIR`` prints JSON.

The split is the test split of a generated dataset at ``ROOT``, each video listed ``COPIES``
times under new ids (so 4x the videos costs no generation); at 160x160 and T = 32 a video's
candidates are 2.4 MB, so a run that held every test video's pixels (the runner before the
feature store) grows by that per video. The cells read features and pixels from the stores.
"""

from __future__ import annotations

import hashlib
import json
import resource
import sys
from dataclasses import replace
from pathlib import Path

import torch

SIZE = (160, 160)
CANDIDATES = 32


def main(root: Path, copies: int, work: Path) -> dict:
    from samplerbench.cost.flops import PipelineCost
    from samplerbench.data.synth import load_split
    from samplerbench.features.extract import Extraction, SplitStores
    from samplerbench.models.encoders import FrameClassifier, ModelConfig
    from samplerbench.registry import METHODS
    from samplerbench.suite import MethodSpec, Suite
    from samplerbench.tasks.classification import Classification
    from samplerbench.tasks.core import Cell, Run
    from samplerbench.tasks.frames import FrameContext

    torch.set_num_threads(1)
    base = load_split(root, "test")
    records = [replace(r, video_id=f"{r.video_id}~{k}") for k in range(copies) for r in base.records]
    split = replace(base, records=records,
                    manifest_hash=hashlib.sha256(f"{base.manifest_hash}x{copies}".encode()).hexdigest())
    torch.manual_seed(0)
    model = FrameClassifier(ModelConfig(width=8, dim=32), len(base.classes)).eval()
    cpu = torch.device("cpu")
    suite = Suite("memory", {}, {}, {}, {"candidates": CANDIDATES}, (MethodSpec("uniform"), MethodSpec("mgsampler")))
    stores = SplitStores(work, Extraction(CANDIDATES, SIZE, None, model.features, workers=0), {"memory": 1},
                         want_pixels=True, progress=False)
    ctx = FrameContext(suite, split, split, split, model, {"key": "memory"}, PipelineCost(model, (3, *SIZE)), cpu,
                       SIZE, CANDIDATES, work, None, {}, progress=False, stores=stores)
    ctx.extract()
    run = Run(suite, work, work, cpu, False, {}, state={("frames", 0): ctx})  # the context of replicate (seed) 0
    task = Classification()
    for spec in suite.methods:
        out = task.evaluate(run, Cell(f"{spec.name}__n8__s0", spec, 8, 0), METHODS.get(spec.name)())
        if len(out.videos) != len(records):
            raise RuntimeError(f"{spec.name}: {len(out.videos)} of {len(records)} videos evaluated")
    return {"videos": len(records), "peak_rss_mib": peak_rss_mib()}


def peak_rss_mib() -> float:
    """This process's own peak resident memory: Linux's ``VmHWM`` (the high-water mark of the
    process's own memory map). Not ``ru_maxrss``: Linux carries into it, at ``exec``, the peak
    of the memory map the process replaced, and a subprocess is forked (or vforked) from its
    parent, so the probe reported the pytest process's peak (2.1 GB at 1x and 4x alike, in the
    throughput session) instead of its own. ``ru_maxrss`` elsewhere (no /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))))
