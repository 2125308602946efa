"""The CUDA path: the quick suite on a GPU against the same suite on CPU. Skipped without a CUDA
device; on a GPU machine: ``pytest -m cuda tests/test_cuda.py``.

``tests/test_device.py`` makes the same two checks on PyTorch's lazy tensor device, which runs on
the CPU, so that a tensor left off the run's device is caught on a machine without a GPU too.

Tolerances: GPU convolutions are not bitwise equal to CPU ones, so features differ in the last
bits and a sampler that ranks on them (or on the classifier's probabilities) can swap near-tied
frames; the trained pieces are the CPU run's (one cache), so only inference runs on the GPU; samplers that read nothing of the encoder select identically; every quality metric is
within 2 points; costs (counted by fvcore, device-independent) are equal.
"""

import json

import pandas as pd
import pytest
import torch

from samplerbench import suite as suite_mod
from samplerbench.tasks.run import run_suite

pytestmark = [pytest.mark.cuda, pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")]

#: training-free samplers that observe nothing the encoder computes: the same selection on any device
DEVICE_FREE = ("uniform", "random", "stride", "head", "mgsampler")


def test_quick_suite_on_cuda_agrees_with_cpu(tmp_path):
    s = suite_mod.load("quick")
    # one cache: the CUDA run reads with the models the CPU run trained (training on another
    # device would make other models, not a check of the CUDA path); its feature stores are its own
    cpu = run_suite(s, tmp_path / "results", tmp_path / "cache", run_id="cpu", device="cpu", progress=False)
    gpu = run_suite(s, tmp_path / "results", tmp_path / "cache", run_id="cuda", device="cuda", progress=False)
    key = ["method", "budget", "seed", "metric"]
    a = pd.read_csv(cpu / "rows.csv").set_index(key)
    b = pd.read_csv(gpu / "rows.csv").set_index(key)
    quality = a[a["kind"] == "quality"].index
    diff = (a.loc[quality, "value"] - b.loc[quality, "value"]).abs()
    assert diff.max() <= 0.02, diff.sort_values().tail()
    cost = a[(a["kind"] == "cost") & a.index.get_level_values("metric").str.startswith("gflops")].index
    pd.testing.assert_series_equal(a.loc[cost, "value"], b.loc[cost, "value"], rtol=1e-6)
    sa = pd.read_json(cpu / "classification_selections.jsonl", lines=True)
    sb = pd.read_json(gpu / "classification_selections.jsonl", lines=True)
    free = sa["cell"].str.split("__").str[0].isin(DEVICE_FREE)
    assert sa[free]["hash"].tolist() == sb[free.values]["hash"].tolist()
    timing = json.loads(next((gpu / "timing").glob("uniform__n8__s0.json")).read_text())
    assert timing["device"].startswith("cuda") and timing["videos_per_s_e2e"] > 0


def test_every_piece_trains_on_cuda_from_an_empty_cache(tmp_path):
    s = suite_mod.load("quick")
    run = run_suite(s, tmp_path / "results", tmp_path / "cache", run_id="cuda", device="cuda", progress=False)
    failures = pd.read_csv(run / "failures.csv")
    assert failures.empty, failures["error"].head().tolist()
    prov = json.loads(next((run / "provenance").glob("*.json")).read_text())
    trained = [prov["classifier"], prov["retrieval_model"], *prov["token_models"].values(), *prov["trained"].values()]
    assert all(r["device"].startswith("cuda") for r in trained), [r["device"] for r in trained]
