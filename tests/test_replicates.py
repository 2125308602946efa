"""A seed is a whole replicate: every learned piece trains once per seed, its checkpoint keyed by
that seed, and the intervals and tests resample seeds as well as videos (hierarchical bootstrap)."""

from __future__ import annotations

import dataclasses
import json
import textwrap

import numpy as np
import pandas as pd

from samplerbench import suite as suite_mod
from samplerbench.metrics.stats import over_seeds, percentile_interval, resample_indices, seed_draws
from samplerbench.tasks.run import run_suite
from tests.conftest import tiny_suite_head


def test_hierarchical_bootstrap_matches_a_loop_over_drawn_seeds():
    """Resample r of :func:`over_seeds`: the mean over the drawn seeds of each seed's value on
    resample r's videos, checked against a plain loop over per-video outcomes."""
    rng = np.random.default_rng(0)
    outcomes = rng.random((3, 40))  # 3 seeds x 40 videos
    idx = resample_indices(40, 200, 1)
    draws = seed_draws(3, 200, 1)
    per_seed = np.stack([o[idx].mean(axis=1) for o in outcomes])
    got = over_seeds(per_seed, draws)
    want = [np.mean([outcomes[s][idx[r]].mean() for s in draws[r]]) for r in range(200)]
    np.testing.assert_allclose(got, want)
    assert over_seeds(per_seed[:1], seed_draws(1, 200, 1)) is not None
    np.testing.assert_array_equal(over_seeds(per_seed[:1], seed_draws(1, 200, 1)), per_seed[0])
    # the draws are the run's, paired across methods: the same for the same number of seeds
    np.testing.assert_array_equal(seed_draws(3, 200, 1), draws)


def test_an_interval_covers_the_spread_of_training_runs():
    """Two seeds whose trained models disagree (0.2 vs 0.8 on every video): keeping the seeds
    (the mean on resampled videos) gives a zero-width interval at 0.5; the hierarchical one spans
    what another training run gives."""
    per_seed = np.array([[0.2] * 1000, [0.8] * 1000])
    kept = per_seed.mean(axis=0)
    assert percentile_interval(kept) == (0.5, 0.5)
    lo, hi = percentile_interval(over_seeds(per_seed, seed_draws(2, 1000, 0)))
    assert lo == 0.2 and hi == 0.8


def _suite(path):
    path.write_text(tiny_suite_head("tiny-replicates") + textwrap.dedent("""
        [train]
        epochs = 1
        batch_videos = 8
        pretrain_steps = 20
        pretrain_batch = 16
        [token_model]
        epochs = 1
        width = 32
        depth = 1
        heads = 2
        [eval]
        candidates = 8
        budgets = [4]
        seeds = [0, 1]
        [[methods]]
        name = "uniform"
        [[methods]]
        name = "tokens-uniform"
        [[methods]]
        name = "sosampler"
        params = { epochs = 1, width = 4, resolution = 16 }
        label = "sosampler"
        [retrieval]
        captions_per_video = 2
        model = { epochs = 1 }
        [[retrieval.methods]]
        name = "mmsampler"
        params = { epochs = 1, width = 16, heads = 2 }
        label = "mmsampler"
        [[retrieval.methods]]
        name = "uniform"
        budget = "match"
    """))
    return suite_mod.load(path)


def test_every_learned_piece_trains_once_per_seed_and_a_seed_replicates_alone(tmp_path):
    """Seeds 0 and 1: the reader, the token ViT, SOSampler's scorer, the retrieval model and
    mmSampler's policy each train twice, under two keys; uniform's class scores differ between the
    seeds (its frames are the same: only the reader differs); a run of seed 1 alone trains
    nothing new and gives seed 1's rows of the full run, bit for bit."""
    s = _suite(tmp_path / "rep.toml")
    run_dir = run_suite(s, tmp_path / "results", tmp_path / "cache", progress=False, timing=False)
    prov = json.loads(next((run_dir / "provenance").glob("*.json")).read_text())
    reps = prov["replicates"]
    assert set(reps) == {"0", "1"}
    pieces = {"reader": lambda r: r["classifiers"]["reader"], "token ViT": lambda r: r["token_models"]["tokens-uniform"],
              "sosampler": lambda r: r["trained"]["sosampler"], "retrieval": lambda r: r["retrieval_models"]["retrieval"],
              "mmsampler": lambda r: r["trained"]["mmsampler"]}
    for name, get in pieces.items():
        a, b = get(reps["0"]), get(reps["1"])
        assert a["key"] != b["key"], name
        assert a["cached"] is False and b["cached"] is False, name
    assert prov["classifier"]["key"] == reps["0"]["classifiers"]["reader"]["key"]  # the first seed's, flat
    cells = run_dir / "cells" / "classification"
    with np.load(cells / "uniform__n4__s0.npz") as a, np.load(cells / "uniform__n4__s1.npz") as b:
        assert not np.array_equal(a["probs"], b["probs"])
    sel = pd.read_json(run_dir / "classification_selections.jsonl", lines=True)
    uni = sel[sel.cell.str.startswith("uniform__")].groupby("cell")["hash"].apply(list)
    assert uni["uniform__n4__s0"] == uni["uniform__n4__s1"]
    iv = pd.read_csv(run_dir / "classification_intervals.csv")
    assert (iv["bootstrap"] == "hierarchical (seeds, videos)").all() and (iv["seeds"] == 2).all()
    rows = pd.read_csv(run_dir / "rows.csv")
    # seed 1 alone, into another folder from the same cache: every checkpoint loads
    alone = run_suite(dataclasses.replace(s, eval={**s.eval, "seeds": [1]}), tmp_path / "alone",
                      tmp_path / "cache", progress=False, timing=False)
    prov1 = json.loads(next((alone / "provenance").glob("*.json")).read_text())
    for get in pieces.values():
        assert get(prov1["replicates"]["1"])["key"] == get(reps["1"])["key"] and get(prov1["replicates"]["1"])["cached"]
    rows1 = pd.read_csv(alone / "rows.csv")
    key = ["label", "budget", "seed", "metric"]
    full = rows[(rows.seed == 1) & (rows.kind == "quality")].set_index(key)["value"].sort_index()
    part = rows1[rows1.kind == "quality"].set_index(key)["value"].sort_index()
    pd.testing.assert_series_equal(full, part)


def test_a_per_video_memo_of_the_readers_features_is_kept_per_replicate():
    """A training-free sampler serves every seed with one instance; what it memoises from the
    reader's features (EVFR AFS's feature index) is kept per reader, since each seed's replicate
    reads with its own: the weights of replicate 1 are its features', not replicate 0's. Work on
    pixels alone (the SSIM index) is shared."""
    from samplerbench.methods.evfr import EVFRAdaptive
    from samplerbench.sampling import VideoView

    rng = np.random.default_rng(0)
    feats = {"r0": rng.random((8, 16)).astype(np.float32), "r1": rng.random((8, 16)).astype(np.float32)}
    pixels = rng.integers(0, 255, (8, 3, 16, 16), dtype=np.uint8)

    def view(reader, observes):
        return VideoView("v", 80, np.arange(0, 80, 10), allowed=observes, frame_size=(16, 16), reader=reader,
                         providers={"features": lambda: feats[reader], "pixels": lambda: pixels})

    afs = EVFRAdaptive(index="feature")
    w0, w1 = afs.weights(view("r0", afs.observes))[0], afs.weights(view("r1", afs.observes))[0]
    fresh = EVFRAdaptive(index="feature").weights(view("r1", afs.observes))[0]
    np.testing.assert_array_equal(w1, fresh)
    assert not np.array_equal(w0, w1) and len(afs._memo) == 2
    ssim = EVFRAdaptive(index="ssim")
    ssim.weights(view("r0", ssim.observes))
    ssim.weights(view("r1", ssim.observes))
    assert len(ssim._memo) == 1
