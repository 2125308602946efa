"""The run's device without a GPU: a tiny suite with every learned method, classification and
retrieval, run on PyTorch's lazy tensor device (:mod:`tests.lazy_device`), which refuses any op
that mixes its tensors with CPU tensors, as CUDA does. Trained on that device from an empty
cache, every piece must train there and no video fail; read on the CPU with those pieces, the
suite must give the same selections and numbers. (``tests/test_cuda.py`` is the same check on a
real GPU, when there is one.)
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from samplerbench import suite as suite_mod
from samplerbench.tasks.run import run_suite
from tests.conftest import tiny_suite_head

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
KEY = ["task", "method", "budget", "seed", "metric"]


def write_suite(path: Path) -> Path:
    path.write_text(tiny_suite_head("tiny-device") + textwrap.dedent("""
        [train]
        epochs = 1
        batch_videos = 8
        pretrain_steps = 20
        pretrain_batch = 16
        [token_model]
        epochs = 1
        [eval]
        candidates = 8
        budgets = [4]
        seeds = [0]
        timing_videos = 2
        timing = { batch = 2, warmup = 1, min_time = 0.05 }
        [[methods]]
        name = "uniform"
        [[methods]]
        name = "oracle"
        [[methods]]
        name = "evfr-afs"
        params = { index = "feature" }
        [[methods]]
        name = "kcenter"
        [[methods]]
        name = "tokens-uniform"
        [[methods]]
        name = "sosampler"
        params = { epochs = 1 }
        [[methods]]
        name = "sllm"
        params = { epochs = 1 }
        [retrieval]
        captions_per_video = 2
        model = { epochs = 1 }
        [[retrieval.methods]]
        name = "mmsampler"
        params = { epochs = 1 }
        [[retrieval.methods]]
        name = "uniform"
        budget = "match"
    """))
    return path


def on_lazy(suite: Path, cache: Path, results: Path, run_id: str) -> Path:
    """The suite run on the lazy device in its own process (the backend's patches stay there)."""
    p = subprocess.run([sys.executable, "-m", "tests.lazy_device", str(suite), str(cache), str(results), run_id],
                       cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    return results / run_id


def rows(run_dir: Path) -> pd.DataFrame:
    return pd.concat([pd.read_csv(run_dir / f) for f in ("rows.csv", "retrieval_rows.csv")]).set_index(KEY)


def no_failures(run_dir: Path) -> None:
    failures = pd.read_csv(run_dir / "failures.csv")
    assert failures.empty, failures["error"].head().tolist()


def trained_devices(run_dir: Path) -> dict[str, str]:
    """Every trained piece's record in the run's provenance -> the device it trained on."""
    prov = json.loads(next((run_dir / "provenance").glob("*.json")).read_text())
    records = {"classifier": prov["classifier"], "retrieval model": prov["retrieval_model"],
               **{f"token ViT {k}": r for k, r in prov["token_models"].items()}}
    records.update({k.split("-")[0]: r for k, r in prov["trained"].items()})  # "sllm-<params hash>" -> "sllm"
    return {k: "cached" if r.get("cached") else r.get("device") for k, r in records.items()}


def test_every_piece_trains_on_a_second_device_and_reads_there_as_on_the_cpu(tmp_path):
    """From an empty cache on the lazy device: every piece trains there and no video fails. Then
    a CPU run with those pieces: the same selections (every hash) and every quality and cost
    value, within float rounding (TorchScript may fuse what eager runs op by op)."""
    suite = write_suite(tmp_path / "tiny.toml")
    lazy = on_lazy(suite, tmp_path / "cache", tmp_path / "results", "lazy")
    no_failures(lazy)
    devices = trained_devices(lazy)
    assert {"classifier", "retrieval model", "sosampler", "sllm", "mmsampler"} <= set(devices)
    assert sum(k.startswith("token ViT") for k in devices) == 2
    assert set(devices.values()) == {"lazy"}, devices

    cpu = run_suite(suite_mod.load(suite), tmp_path / "results", tmp_path / "cache", run_id="cpu", progress=False,
                    timing=False)  # the timing runs' device path is the lazy run's
    no_failures(cpu)
    assert set(trained_devices(cpu).values()) == {"cached"}
    a, b = rows(cpu), rows(lazy)
    for kind in ("quality", "cost"):
        idx = a[a["kind"] == kind].index
        assert len(idx) and idx.isin(b.index).all()
        np.testing.assert_allclose(b.loc[idx, "value"], a.loc[idx, "value"], rtol=1e-6, atol=1e-9, err_msg=kind)
    timing = b[b["kind"] == "timing"]
    assert len(timing) and (timing["device"] == "lazy").all()
    for task in ("classification", "retrieval"):
        sa = pd.read_json(cpu / f"{task}_selections.jsonl", lines=True)
        sb = pd.read_json(lazy / f"{task}_selections.jsonl", lines=True)
        assert len(sa) and sa[["cell", "video", "hash"]].equals(sb[["cell", "video", "hash"]])
