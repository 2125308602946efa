"""End to end on a tiny suite: rows with provenance, resume, determinism, failures, report."""

import json
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from samplerbench import suite as suite_mod
from samplerbench.tasks.classification import QUALITY
from samplerbench.tasks.run import run_suite
from tests.conftest import TINY, cache_with_a_corrupt_video, tiny_suite_head

pytestmark = pytest.mark.slow
CELLS = 3 * 2 * 2 + 2  # uniform, random, oracle x 2 budgets x 2 seeds; dense ignores the budget: N = T only


def write_suite(path: Path, name="tiny") -> Path:
    path.write_text(tiny_suite_head(name) + textwrap.dedent("""
        [train]
        epochs = 1
        batch_videos = 8
        pretrain_steps = 20
        pretrain_batch = 16
        [eval]
        candidates = 8
        budgets = [1, 4]
        seeds = [0, 1]
        timing_videos = 2
        [[methods]]
        name = "uniform"
        [[methods]]
        name = "random"
        [[methods]]
        name = "oracle"
        [[methods]]
        name = "dense"
    """))
    return path


def write_token_suite(path: Path, name: str, methods=("kcenter", "tokens-uniform"), width: int = 32,
                      eval_extra: str = "") -> Path:
    """The tiny suite with one seed, a one-epoch token ViT of ``width`` and ``methods`` only;
    ``eval_extra``: more ``[eval]`` lines."""
    write_suite(path, name=name)
    text = path.read_text().split("[[methods]]")[0].replace("seeds = [0, 1]", "seeds = [0]")
    text = text.replace("[eval]", f"[token_model]\nepochs = 1\nwidth = {width}\ndepth = 1\nheads = 2\nbatch = 8\n"
                                  f"[eval]{eval_extra}")
    path.write_text(text + "".join(f'[[methods]]\nname = "{m}"\n' for m in methods))
    return path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    s = suite_mod.load(write_suite(tmp / "tiny.toml"))
    run_dir = run_suite(s, tmp / "results", tmp / "cache", progress=False)
    return s, tmp, run_dir


def test_rows_carry_provenance_and_cover_every_cell(tiny_run):
    s, _, run_dir = tiny_run
    rows = pd.read_csv(run_dir / "rows.csv")
    from samplerbench.tasks.core import COMMON

    assert list(rows.columns[:len(COMMON)]) == list(COMMON)
    for col in ("git_dirty", "device"):
        assert col in rows.columns
    assert rows["suite_hash"].eq(s.digest()).all() and rows["dataset_hash"].notna().all()
    assert (rows["task"] == "classification").all() and rows["fingerprint"].str.len().eq(16).all()
    cells = rows.groupby(["method", "budget", "seed"]).size()
    assert len(cells) == CELLS
    assert set(QUALITY) <= set(rows["metric"])
    sel = pd.read_json(run_dir / "classification_selections.jsonl", lines=True)
    assert len(sel) == CELLS * TINY["splits"]["test"]
    frames = rows[(rows.metric == "frames")].set_index(["method", "budget", "seed"])["value"]
    assert frames[("uniform", 4, 0)] == 4 and frames[("dense", 8, 0)] == 8
    oracle_gf = rows[(rows.metric == "gflops_sampler") & (rows.method == "oracle")]["value"]
    assert (oracle_gf > 0).all()


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_rerun_skips_finished_cells_and_resumes_a_killed_run(tiny_run):
    s, tmp, run_dir = tiny_run
    rows = pd.read_csv(run_dir / "rows.csv")
    run_suite(s, tmp / "results", tmp / "cache", progress=False)
    assert summary(run_dir).get("classification computed", 0) == 0
    assert summary(run_dir)["classification reused"] == CELLS
    killed = sorted((run_dir / "cells" / "classification").glob("*.json"))[:3]  # as if the run died before these
    for p in killed:
        p.unlink()
    run_suite(s, tmp / "results", tmp / "cache", progress=False)
    assert summary(run_dir)["classification computed"] == 3
    again = pd.read_csv(run_dir / "rows.csv")
    key = ["method", "budget", "seed", "metric"]
    assert again.query("kind != 'timing'")[key + ["value"]].equals(rows.query("kind != 'timing'")[key + ["value"]])


def test_same_seed_same_rows_bit_for_bit(tiny_run):
    s, tmp, run_dir = tiny_run
    other = run_suite(s, tmp / "results", tmp / "cache2", run_id="again", progress=False)  # cold: new cache
    key = ["method", "budget", "seed", "metric"]
    a = pd.read_csv(run_dir / "rows.csv").query("kind != 'timing'").sort_values(key)
    b = pd.read_csv(other / "rows.csv").query("kind != 'timing'").sort_values(key)
    assert a["value"].tolist() == b["value"].tolist()
    sa = pd.read_json(run_dir / "classification_selections.jsonl", lines=True).sort_values(["cell", "video"])
    sb = pd.read_json(other / "classification_selections.jsonl", lines=True).sort_values(["cell", "video"])
    assert sa["hash"].tolist() == sb["hash"].tolist()


def test_bad_video_is_a_recorded_failure(tiny_run):
    s, tmp, _ = tiny_run
    cache, victim = cache_with_a_corrupt_video(tmp / "cache", tmp / "cache_bad", "synth-events-*/videos/test/*.mp4")
    run_dir = run_suite(s, tmp / "results", cache, run_id="bad", progress=False)
    fails = pd.read_csv(run_dir / "failures.csv")
    assert len(fails) == CELLS and fails["error"].str.contains(victim.name).all()
    rows = pd.read_csv(run_dir / "rows.csv")
    assert (rows["n_videos"] == TINY["splits"]["test"] - 1).all() and (rows["n_failed"] == 1).all()


def test_report_renders_tables_and_plots(tiny_run, tmp_path):
    from samplerbench.reports.render import render

    _, _, run_dir = tiny_run
    out = render(run_dir, tmp_path)
    for f in ("table_top1.md", "table_top1.tex", "table_top1.csv", "table_detail.md", "table_detail.tex",
              "acc_vs_frames.png", "acc_vs_frames.pdf", "acc_vs_gflops.png", "acc_vs_gflops.pdf"):
        assert (out / f).stat().st_size > 0, f
    md = (out / "table_top1.md").read_text()
    assert "oracle†" in md and "one multiply-add counts as one FLOP" in md
    assert "\\begin{tabular}" in (out / "table_top1.tex").read_text()
    t = pd.read_csv(out / "table_top1.csv")
    assert list(t.columns) == ["Method", "N=1", "N=4", "N=8"] and len(t) == 4


def test_multilabel_variant_reports_map(tmp_path):
    from samplerbench.reports.render import render

    path = write_suite(tmp_path / "ml.toml", name="tiny-ml")
    path.write_text(path.read_text().replace('name = "synth-events"', 'name = "synth-events-ml"')
                    .replace("[eval]", "[eval]\nresamples = 200"))  # mAP is recomputed on every resample
    run_dir = run_suite(suite_mod.load(path), tmp_path / "results", tmp_path / "cache", progress=False)
    rows = pd.read_csv(run_dir / "rows.csv")
    assert "top1" not in set(rows["metric"])  # single-label metrics are not defined here
    m = rows[rows.metric == "mAP"]["value"]
    assert len(m) == CELLS and m.between(0, 1).all()
    hit = rows[(rows.metric == "event_hit_rate") & (rows.method == "dense")]["value"]
    assert (hit > 0).all()
    assert "mAP (%)" in (render(run_dir, tmp_path / "out") / "table_top1.md").read_text()


def test_resume_recomputes_a_cell_stored_with_another_fingerprint(tiny_run):
    s, tmp, run_dir = tiny_run
    stale = sorted((run_dir / "cells" / "classification").glob("*.json"))[0]
    cell = json.loads(stale.read_text())
    cell["fingerprint"] = "computed-by-older-code"
    stale.write_text(json.dumps(cell))
    run_suite(s, tmp / "results", tmp / "cache", progress=False)
    assert summary(run_dir)["classification computed"] == 1
    assert json.loads(stale.read_text())["fingerprint"] != "computed-by-older-code"


def test_token_samplers_run_with_their_own_trained_vit(tmp_path):
    """kcenter and tokens-uniform through the runner: a token ViT is trained per method on its
    own selections (recorded in the provenance), budgets are frame-equivalents, the ViT's
    FLOPs grow with the tokens, and a second run reuses the cached ViT."""
    path = write_token_suite(tmp_path / "tok.toml", "tiny-tok")
    s = suite_mod.load(path)
    run_dir = run_suite(s, tmp_path / "results", tmp_path / "cache", progress=False)
    rows = pd.read_csv(run_dir / "rows.csv").set_index(["method", "budget", "metric"])["value"]
    for m in ("kcenter", "tokens-uniform"):
        assert rows[(m, 1, "tokens")] == 4 and rows[(m, 4, "tokens")] == 16  # 2x2 patches of 16 at 32x32
        assert rows[(m, 1, "frames")] == 1 and rows[(m, 4, "frames")] == 4
        assert 0 < rows[(m, 1, "gflops_encoder")] < rows[(m, 4, "gflops_encoder")]
    assert rows[("tokens-uniform", 4, "frames_touched")] == 4
    # K-center's dense reference: every token of the N uniform frames, read by K-center's own ViT
    # (the same tokens as tokens-uniform's cells, another reader), and its paired tests' baseline
    by_label = pd.read_csv(run_dir / "rows.csv").set_index(["label", "budget", "seed", "metric"])["value"]
    for b in (1, 4):
        assert by_label[("kcenter: every token", b, 0, "tokens")] == by_label[("tokens-uniform", b, 0, "tokens")]
    cells = {json.loads(p.read_text())["label"]: json.loads(p.read_text())
             for p in (run_dir / "cells" / "classification").glob("*__n4__s0.json")}
    sel = pd.read_json(run_dir / "classification_selections.jsonl", lines=True).groupby("cell")["hash"].apply(list)
    dense_cell = cells["kcenter: every token"]["cell"]
    assert sel[dense_cell] == sel["tokens-uniform__n4__s0"]
    tests = pd.read_csv(run_dir / "classification_tests.csv")
    k = tests[tests.label == "kcenter"]
    assert len(k) and (k["baseline_label"] == "kcenter: every token").all()
    assert "kcenter: every token" not in set(tests["label"])  # a reference is no method under test
    assert rows[("kcenter", 4, "frames_touched")] >= 1
    assert rows[("kcenter", 4, "gflops_sampler")] > 0 and rows[("tokens-uniform", 4, "gflops_sampler")] == 0
    prov = json.loads(next((run_dir / "provenance").glob("*.json")).read_text())
    rec = prov["token_models"]["kcenter"]
    assert rec["cached"] is False and rec["epochs_run"] == 1 and rec["wall_s"] > 0
    shutil.rmtree(run_dir)
    again = run_suite(s, tmp_path / "results", tmp_path / "cache", progress=False)
    prov2 = json.loads(next((again / "provenance").glob("*.json")).read_text())
    assert prov2["token_models"]["kcenter"]["cached"] is True
    rows2 = pd.read_csv(again / "rows.csv").set_index(["method", "budget", "metric"])["value"]
    assert rows2[("kcenter", 4, "top1")] == rows[("kcenter", 4, "top1")]
    # the ViT reads a cell's videos in batches: the class scores of reading each video alone
    import dataclasses

    alone = run_suite(dataclasses.replace(s, eval={**s.eval, "token_batch": 1}), tmp_path / "alone",
                      tmp_path / "cache", progress=False, timing=False)
    for cell in sorted((again / "cells" / "classification").glob("*.npz")):
        with np.load(cell) as batched, np.load(alone / "cells" / "classification" / cell.name) as single:
            assert batched["probs"].shape == single["probs"].shape and len(batched["probs"]) == TINY["splits"]["test"]
            np.testing.assert_allclose(batched["probs"], single["probs"], rtol=1e-5, atol=1e-6)


def test_learned_methods_train_once_and_report_their_cost(tmp_path):
    """sosampler and sllm through the runner: trained inside the run (records in the provenance
    under ``trained``), SLLM encodes half the sampled frames and charges its head, and a second
    run loads the checkpoints and reproduces the rows."""
    path = write_suite(tmp_path / "learned.toml", name="tiny-learned")
    text = path.read_text().split("[[methods]]")[0].replace("seeds = [0, 1]", "seeds = [0]")
    fast = "epochs = 1, depth = 1, heads = 2"
    path.write_text(text + textwrap.dedent(f"""
        [[methods]]
        name = "sosampler"
        params = {{ epochs = 1, width = 4, resolution = 16 }}
        label = "sosampler"
        [[methods]]
        name = "sllm"
        params = {{ {fast} }}
        label = "sllm"
        [[methods]]
        name = "sllm"
        params = {{ {fast}, mode = "full" }}
        label = "sllm-full"
        [[methods]]
        name = "sllm"
        params = {{ {fast}, base = "sosampler", base_params = {{ epochs = 1, width = 4, resolution = 16 }} }}
        label = "sosampler+sllm"
    """))
    s = suite_mod.load(path)
    run_dir = run_suite(s, tmp_path / "results", tmp_path / "cache", progress=False)
    rows = pd.read_csv(run_dir / "rows.csv").set_index(["label", "budget", "metric"])["value"]
    assert rows[("sosampler", 4, "frames")] == 4 and rows[("sosampler", 4, "gflops_sampler")] > 0
    assert rows[("sllm", 4, "frames")] == 2 and rows[("sllm-full", 4, "frames")] == 4
    assert rows[("sllm", 1, "frames")] == 1
    assert rows[("sllm", 4, "gflops_head")] > 0 and rows[("sllm", 4, "gflops_sampler")] == 0
    assert rows[("sosampler+sllm", 4, "gflops_sampler")] == rows[("sosampler", 4, "gflops_sampler")]
    assert rows[("sllm", 4, "gflops_encoder")] == pytest.approx(rows[("sllm-full", 4, "gflops_encoder")] / 2)
    prov = json.loads(next((run_dir / "provenance").glob("*.json")).read_text())
    trained = prov["trained"]
    assert trained["sosampler"]["cached"] is False and trained["sosampler"]["epochs_run"] == 1
    assert trained["sllm"]["fit_wall_s"] > 0 and trained["sosampler+sllm"]["base"]["cached"] is True
    shutil.rmtree(run_dir)
    again = run_suite(s, tmp_path / "results", tmp_path / "cache", progress=False)
    prov2 = json.loads(next((again / "provenance").glob("*.json")).read_text())
    assert all(r["cached"] for r in prov2["trained"].values())
    rows2 = pd.read_csv(again / "rows.csv").set_index(["label", "budget", "metric"])["value"]
    for m in ("sosampler", "sllm", "sosampler+sllm"):
        assert rows2[(m, 4, "top1")] == rows[(m, 4, "top1")]
    from samplerbench.reports.render import render

    t = pd.read_csv(render(again, tmp_path / "report") / "table_training.csv").set_index("Piece")
    assert {"frame classifier", "sosampler", "sllm", "sllm-full", "sosampler+sllm: base sampler"} <= set(t.index)
    assert (t["Cached"] == "yes").all() and t.loc["sosampler", "Epochs"] == 1
    assert (t["Trained on"] == "cpu").all()
    assert t.loc["sosampler", "Train time (s)"] == round(trained["sosampler"]["wall_s"])


def test_retrieval_task_runs_mmsampler_and_matched_baselines(tmp_path):
    """A suite's [retrieval] task: captions generated, the retrieval model and mmSampler trained,
    mmSampler keeps frame 0 and an adaptive count, the 'match' baseline runs at that mean
    count, both directions are reported, and the report renders the retrieval tables."""
    path = write_suite(tmp_path / "ret.toml", name="tiny-ret")
    text = path.read_text().split("[[methods]]")[0].replace("seeds = [0, 1]", "seeds = [0]")
    path.write_text(text + textwrap.dedent("""
        [[methods]]
        name = "uniform"
        [retrieval]
        captions_per_video = 2
        seeds = [0, 1]
        [retrieval.model]
        epochs = 2
        text_depth = 1
        batch = 8
        [[retrieval.methods]]
        name = "mmsampler"
        params = { variant = "concat", epochs = 1, batch = 8 }
        label = "mm"
        [[retrieval.methods]]
        name = "dense"
        label = "no policy"
        [[retrieval.methods]]
        name = "random"
        [[retrieval.methods]]
        name = "uniform"
    """))
    s = suite_mod.load(path)
    run_dir = run_suite(s, tmp_path / "results", tmp_path / "cache", progress=False)
    df = pd.read_csv(run_dir / "retrieval_rows.csv")
    wide = df.pivot_table(index=["label", "seed"], columns="metric", values="value")
    assert set(wide.index.get_level_values(0)) == {"mm", "no policy", "random (= mm)", "uniform (= mm)"}
    assert (wide.loc["no policy", "frames"] == 8).all()
    mm_frames = wide.loc["mm", "frames"].iloc[0]
    assert 1 <= mm_frames <= 8
    assert (wide.loc["random (= mm)", "frames"] <= max(1, round(mm_frames))).all()
    for d in ("t2v", "v2t"):
        assert ((wide[f"{d}_R@1"] >= 0) & (wide[f"{d}_R@1"] <= wide[f"{d}_R@10"])).all()
        assert (wide[f"{d}_MdR"] >= 1).all()
    assert wide.loc["mm", "gflops_sampler"].iloc[0] > 0 and (wide.loc["no policy", "gflops_sampler"] == 0).all()
    cell = json.loads(next((run_dir / "cells" / "retrieval").glob("mm__*s0.json")).read_text())
    assert all(v["positions"][0] == 0 for v in cell["videos"])  # frame 0 of the pool always kept
    assert sum(cell["values"]["frames_hist"]) == cell["n_videos"]
    prov = json.loads(next((run_dir / "provenance").glob("*.json")).read_text())
    assert prov["retrieval_model"]["epochs_run"] == 2 and "mm" in prov["trained"]
    # mmSampler's policy trains while the task lists its cells: the summary counts it as training
    # (it was counted in the cells: 0.0 s of training)
    phases = json.loads((run_dir / "summary.json").read_text())["phases_s"]["retrieval"]
    assert phases["train (learned methods)"] >= prov["trained"]["mm"]["fit_wall_s"] - 0.01
    from samplerbench.reports.render import render

    out = render(run_dir, tmp_path / "report")
    t = pd.read_csv(out / "table_retrieval_t2v.csv")
    assert list(t.columns) == ["Method", "Frames used", "GFLOPs/video", "R@1", "R@5", "R@10", "MdR", "MnR"]
    # video-to-text is CLIP4Clip's by default: rows say so, the caption names it, the values are it
    assert set(df["v2t"]) == {"clip4clip"}
    assert "CLIP4Clip's tensor_video_to_text_sim" in (out / "table_retrieval_v2t.md").read_text().split("\n\n")[0]
    from samplerbench.metrics.ranking import retrieval_metrics
    from samplerbench.store.cells import load_predictions

    preds = load_predictions(run_dir / "cells" / "retrieval", cell)
    assert str(preds["v2t"]) == "clip4clip"
    assert cell["values"]["v2t_MnR"] == pytest.approx(
        retrieval_metrics(preds["sim"], preds["caption_video"], v2t="clip4clip")["v2t_MnR"])
    # intervals over the query videos for R@k and MnR, the means over seeds of the rows; random
    # tested against uniform at the count mmSampler kept; the table shows them
    ivs = pd.read_csv(run_dir / "retrieval_intervals.csv").set_index(["label", "metric"])
    means = df.groupby(["label", "metric"])["value"].mean()
    for key, r in ivs.iterrows():
        assert r["value"] == pytest.approx(means.loc[key]) and r["lo"] <= r["value"] <= r["hi"], key
    assert {m for _, m in ivs.index} == {"t2v_R@1", "t2v_R@5", "t2v_R@10", "t2v_MnR", "v2t_R@1", "v2t_R@5",
                                         "v2t_R@10", "v2t_MnR"}
    tests = pd.read_csv(run_dir / "retrieval_tests.csv")
    assert set(tests["label"]) == {"random (= mm)"} and (tests["baseline"] == "uniform").all()
    from samplerbench.reports.common import plain

    assert t.assign(Method=t["Method"].map(plain)).set_index("Method").loc["random (= mm)", "R@5"].count("±") == 1
    assert "query videos" in (out / "table_retrieval_t2v.md").read_text()
    assert (out / "retrieval_r1_vs_gflops.png").stat().st_size > 0
    # a test video that cannot be decoded: every retrieval cell records it in failures.csv
    cache, victim = cache_with_a_corrupt_video(tmp_path / "cache", tmp_path / "cache_bad", "synth-events-*/videos/test/*.mp4")
    from samplerbench.models.clip4clip import RetrievalModel
    from samplerbench.tasks.retrieval import Retrieval, seeds_of

    embedded, real_embed = [], RetrievalModel.text_embed
    RetrievalModel.text_embed = lambda self, ids: embedded.append(len(ids)) or real_embed(self, ids)
    try:
        bad = run_suite(s, tmp_path / "results", cache, run_id="bad", progress=False)
    finally:
        RetrievalModel.text_embed = real_embed
    # each seed's frozen model (a seed is a replicate: its own retrieval model) embeds the test
    # captions once per run (every caption, in one call here), not once per cell; a failed video's captions leave the ranking and nothing else changes (up
    # to float rounding: a (22 x 11) matrix product sums in another order than a (24 x 12) one)
    assert embedded == [2 * cell["n_videos"]] * len(seeds_of(s))
    for cell_json in (run_dir / "cells" / "retrieval").glob("*.json"):
        good, worse = (json.loads((d / "cells" / "retrieval" / cell_json.name).read_text()) for d in (run_dir, bad))
        with np.load(cell_json.with_suffix(".npz")) as g, np.load(bad / "cells/retrieval" / f"{cell_json.stem}.npz") as b:
            kept = {v["video"] for v in worse["videos"]}
            _, want = Retrieval.subset(good["videos"], dict(g), kept)
            assert len(kept) == len(good["videos"]) - 1 and np.allclose(b["sim"], want["sim"], rtol=1e-5, atol=1e-6), cell_json.name
    fails = pd.read_csv(bad / "failures.csv")
    n_retrieval = df["cell"].nunique() if "cell" in df else len(df.groupby(["label", "seed"]))
    assert (fails.query("task == 'retrieval'")["error"].str.contains(victim.name)).sum() == n_retrieval
    assert (fails.query("task == 'classification'")["error"].str.contains(victim.name)).sum() == 2  # uniform x 2 budgets
    # a re-run with everything stored decodes no video: the cached retrieval model and policies
    # load without their features (a re-run took 40 s of decoding for nothing before), and the
    # test split's features and pixels come from the stores (the timing runs are stored too)
    from samplerbench.data import media

    calls = []
    real = media.read_frames
    media.read_frames = lambda *a, **k: calls.append(a) or real(*a, **k)
    try:
        again = run_suite(s, tmp_path / "results", tmp_path / "cache", progress=False)
    finally:
        media.read_frames = real
    summary = json.loads((again / "summary.json").read_text())
    assert summary.get("retrieval computed", 0) == 0 and calls == []


def test_report_recomputes_every_metric_from_the_stored_predictions(tiny_run, tmp_path, monkeypatch):
    """Rescoring a run from its stored predictions reproduces its rows exactly; a changed metric
    function changes them without re-running; altered predictions are refused by file name."""
    from sklearn.metrics import accuracy_score

    import samplerbench.metrics.classification as metrics
    from samplerbench.cli import main
    from samplerbench.store.cells import load_predictions
    from samplerbench.tasks.run import rescore_run

    _, _, run_dir = tiny_run
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy)
    before = pd.read_csv(copy / "rows.csv")
    assert rescore_run(copy) == {"classification": CELLS}
    after = pd.read_csv(copy / "rows.csv")
    assert after.drop(columns="value").equals(before.drop(columns="value"))
    assert after["value"].tolist() == before["value"].tolist()
    # the stored probabilities give the row's top-1 by an independent implementation (sklearn)
    folder = copy / "cells" / "classification"
    rec = json.loads((folder / "uniform__n4__s0.json").read_text())
    pred = load_predictions(folder, rec)
    top1 = accuracy_score(pred["labels"].argmax(1), pred["probs"].argmax(1))
    assert top1 == before.query("method == 'uniform' and budget == 4 and seed == 0 and metric == 'top1'")["value"].item()
    # a fixed metric needs no re-run: the report recomputes it
    monkeypatch.setattr(metrics, "top_k_accuracy", lambda s, y, k: [0.125, 0.875])
    assert main(["report", str(copy), "--out", str(tmp_path / "out"), "-q"]) == 0
    changed = pd.read_csv(copy / "rows.csv")
    assert (changed.query("metric == 'top1'")["value"] == 0.125).all()
    npz = folder / "uniform__n4__s0.npz"
    npz.write_bytes(npz.read_bytes()[:-8] + b"tampered")
    with pytest.raises(ValueError, match="uniform__n4__s0.npz: predictions do not match"):
        rescore_run(copy)


def test_a_run_killed_at_any_point_resumes_to_the_same_rows(tiny_run, tmp_path):
    """SIGKILL during dataset generation or training, after the first cell, and half-way; each
    time the run is started again; the last one completes with the uninterrupted run's rows."""
    import os
    import signal
    import subprocess
    import sys
    import time

    _, _, ref_dir = tiny_run
    path = write_suite(tmp_path / "tiny.toml")
    results, cache = tmp_path / "results", tmp_path / "cache"
    cmd = [sys.executable, "-m", "samplerbench.cli", "run", str(path), "--cache", str(cache), "--results",
           str(results), "-q"]
    cells = results / ref_dir.name / "cells" / "classification"

    def n_cells():
        return len(list(cells.glob("*.json"))) if cells.is_dir() else 0

    killed = 0
    for until in (lambda t: t > 6, lambda t: n_cells() >= 1, lambda t: n_cells() >= CELLS // 2):
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.perf_counter()
        while p.poll() is None and not until(time.perf_counter() - t0):
            time.sleep(0.05)
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            killed += 1
        p.wait()
    assert killed >= 2
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert not list((cache / "datasets").glob("*.partial-*"))  # the killed generation's folder is gone
    key = ["method", "budget", "seed", "metric"]
    a = pd.read_csv(ref_dir / "rows.csv").query("kind != 'timing'").sort_values(key).reset_index(drop=True)
    b = pd.read_csv(results / ref_dir.name / "rows.csv").query("kind != 'timing'").sort_values(key).reset_index(drop=True)
    assert a[key + ["value", "fingerprint", "n_videos"]].equals(b[key + ["value", "fingerprint", "n_videos"]])
    sa = pd.read_json(ref_dir / "classification_selections.jsonl", lines=True).sort_values(["cell", "video"])
    sb = pd.read_json(results / ref_dir.name / "classification_selections.jsonl", lines=True).sort_values(["cell", "video"])
    assert sa["hash"].tolist() == sb["hash"].tolist()


def test_a_steered_sweep_shares_its_cells_with_the_full_run(tiny_run, tmp_path, capsys):
    """--methods/--budgets/--seeds run a subset of the suite into the full suite's run folder, so
    the full run reuses those cells; the summary says where the time went."""
    from samplerbench.cli import main as cli

    s, tmp, _ = tiny_run
    suite_file = write_suite(tmp_path / "tiny.toml")
    args = ["run", str(suite_file), "--results", str(tmp_path / "res"), "--cache", str(tmp / "cache"), "-q"]
    assert cli([*args, "--methods", "uniform,oracle", "--budgets", "1", "--seeds", "0"]) == 0
    out = capsys.readouterr().out
    assert "classification computed 2" in out and "time classification: setup" in out
    run_dir = tmp_path / "res" / f"{s.name}-{s.digest()[:8]}"
    rows = pd.read_csv(run_dir / "rows.csv")
    assert set(zip(rows.method, rows.budget, rows.seed, strict=True)) == {("uniform", 1, 0), ("oracle", 1, 0)}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["phases_s"]["classification"]) == {"setup (data, trained pieces)", "extract (feature store)",
                                                          "train (learned methods)", "cells", "finish (timing runs)",
                                                          "consolidate"}
    assert cli(args) == 0  # the full suite: the two cells are reused
    assert f"classification computed {CELLS - 2}, classification reused 2" in capsys.readouterr().out
    assert cli([*args, "--methods", "nosuch"]) == 2
    assert "--methods ['nosuch'] not in the suite" in capsys.readouterr().err


def test_a_run_writes_intervals_and_tests_the_report_shows(tiny_run, tmp_path):
    """Intervals for every (method, budget) and quality metric, their values the rows' means over
    seeds, each inside its interval; tests against uniform for the others; the report's table
    carries them and the Pareto plot and table exist."""
    from samplerbench.reports.render import render

    _, _, run_dir = tiny_run
    rows = pd.read_csv(run_dir / "rows.csv")
    iv = pd.read_csv(run_dir / "classification_intervals.csv")
    tests = pd.read_csv(run_dir / "classification_tests.csv")
    top1 = rows[rows.metric == "top1"].groupby(["label", "budget"])["value"].mean()
    got = iv[iv.metric == "top1"].set_index(["label", "budget"])["value"].sort_index()
    assert np.allclose(got, top1.loc[got.index]) and len(got) == len(top1)
    assert (iv["lo"] <= iv["value"] + 1e-12).all() and (iv["value"] <= iv["hi"] + 1e-12).all()
    assert (iv["seeds"] == 2).all() and (iv["resamples"] == 1000).all()
    assert "uniform" not in set(tests["method"]) and {"random", "oracle"} <= set(tests["method"])
    out = render(run_dir, tmp_path / "out")
    table = (out / "table_top1.md").read_text()
    assert "hierarchical percentile bootstrap over 2 seeds and the" in table and " ± " in table
    assert (out / "pareto_top1.png").is_file() and (out / "table_pareto.md").is_file()
    ranged = (render(run_dir, tmp_path / "out2", interval="range") / "table_top1.md").read_text()
    uniform_row = next(line for line in ranged.splitlines() if line.startswith("| uniform"))
    assert "[" in uniform_row and " ± " not in uniform_row


def test_compare_two_runs(tiny_run, tmp_path):
    """A run against itself: every difference 0 and none significant; against a copy missing a
    cell and with one cell's predictions changed: the cell listed as A's only, the change found."""
    from samplerbench.store.cells import load_predictions, write_cell
    from samplerbench.tasks.compare import compare_runs
    from samplerbench.tasks.run import TASKS

    _, _, run_dir = tiny_run
    diffs, alone = compare_runs(run_dir, run_dir, TASKS)
    assert len(diffs) and (diffs["diff"] == 0).all() and not diffs["significant"].any() and alone.empty
    assert not diffs["changed"].any()
    # a metric that is NaN in both runs (no video of the cell has an event: no hit rate) is no difference
    blank = tmp_path / "blank"
    shutil.copytree(run_dir, blank)
    cell = sorted((blank / "cells" / "classification").glob("uniform__*.json"))[0]
    rec = json.loads(cell.read_text())
    write_cell(cell.parent, rec["cell"], {**rec, "videos": [{**v, "events": []} for v in rec["videos"]]},
               load_predictions(cell.parent, rec))
    diffs, _ = compare_runs(blank, blank, TASKS)
    nan = diffs[(diffs["cell"] == rec["cell"]) & (diffs["metric"] == "event_hit_rate")]
    assert len(nan) == 1 and np.isnan(nan["a"].iloc[0]) and np.isnan(nan["b"].iloc[0])
    assert not diffs["changed"].any() and not diffs["significant"].any()
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    folder = other / "cells" / "classification"
    gone = sorted(folder.glob("random__*.json"))[0]
    gone.unlink()
    target = sorted(folder.glob("uniform__*.json"))[0]
    rec = json.loads(target.read_text())
    preds = load_predictions(folder, rec)
    preds["probs"] = preds["probs"][:, ::-1].copy()  # a different ranking of the classes
    write_cell(folder, rec["cell"], rec, preds)
    diffs, alone = compare_runs(run_dir, other, TASKS)
    assert alone.to_dict("records")[0]["cell"] == gone.stem and alone["only_in"].tolist() == ["A"]
    changed = diffs[diffs["changed"]]
    assert set(changed["cell"]) == {rec["cell"]}
    from samplerbench.reports.compare import render_compare

    out = render_compare(diffs, alone, run_dir, other, tmp_path / "cmp")
    html = (out / "compare.html").read_text()
    assert "<table id=\"differences\">" in html and gone.stem in html and (out / "compare.md").is_file()


def test_the_quality_gate_fails_on_a_deliberately_worse_sampler(tiny_run, tmp_path, monkeypatch, capsys):
    """Baseline from the tiny run: the same run passes with every value the same; a run (quality
    only: no timing runs) whose "oracle" row is an anti-oracle (the frames the classifier finds
    *least* likely to be the true class) fails on that row's metrics only and says how to record a
    new baseline; a value nudged within its interval is reported, not failed. (The rule itself,
    interval and allowance, hand-worked: tests/test_quality.py.)"""
    from samplerbench.cli import main
    from samplerbench.methods.oracle import Oracle
    from samplerbench.registry import METHODS
    from samplerbench.sampling import Selection, top_n_sorted

    _, tmp, run_dir = tiny_run
    base = tmp_path / "quality.json"
    assert main(["quality", str(run_dir), "--baseline", str(base), "--update-baseline"]) == 0
    recorded = json.loads(base.read_text())
    (section,) = recorded["platforms"]  # the run's own CPU platform, from its provenance
    from samplerbench.devices import cpu_platform

    assert section["platform"] == cpu_platform()
    rows = pd.read_csv(run_dir / "rows.csv")
    top1 = rows[(rows.metric == "top1") & (rows.label == "oracle") & (rows.budget == 1)]["value"]
    entry = section["entries"]["classification | oracle | N=1 | top1"]
    assert entry["value"] == pytest.approx(top1.mean()) and entry["lo"] <= entry["value"] <= entry["hi"]
    capsys.readouterr()
    assert main(["quality", str(run_dir), "--baseline", str(base)]) == 0
    assert "PASS" in capsys.readouterr().out

    class AntiOracle(Oracle):  # the tiny suite's 1-epoch classifier: top-1 stays inside its wide interval
        name = "anti-oracle"

        def select(self, view, budget, rng):
            probs = view.frame_probs()
            worst = -probs[:, view.label().astype(bool)].max(axis=1)
            return Selection(top_n_sorted(worst, budget.frames(view.num_candidates)), scores=worst)

    for attr in ("_items", "_sources", "_meta"):  # registered for this test only
        monkeypatch.setattr(METHODS, attr, dict(getattr(METHODS, attr)))
    METHODS.register("anti-oracle")(AntiOracle)
    text = (tmp / "tiny.toml").read_text().replace('name = "oracle"', 'name = "anti-oracle"\nlabel = "oracle"')
    worse = suite_mod.load(_write(tmp_path / "worse.toml", text))
    worse_dir = run_suite(worse, tmp_path / "results", tmp / "cache", progress=False, timing=False)
    assert not (worse_dir / "timing").exists() and "videos_per_s_e2e" not in set(pd.read_csv(worse_dir / "rows.csv").metric)
    capsys.readouterr()
    assert main(["quality", str(worse_dir), "--baseline", str(base)]) == 1
    out = capsys.readouterr().out
    failed = [line for line in out.splitlines() if line.strip().startswith("WORSE")]
    assert failed and all("| oracle |" in line for line in failed)
    assert any("| mAP:" in line for line in failed)  # single-label mAP has no interval: any fall fails
    assert "--update-baseline" in out.splitlines()[-1]
    assert not any(line.strip().startswith(("MISSING", "CHANGED")) and "| oracle |" not in line
                   for line in out.splitlines())  # uniform, random and dense: the same values

    # a value moved inside its interval: reported with the seeds it touched, the gate passes
    key = "classification | uniform | N=4 | top1"
    e = section["entries"][key]
    e["seeds"]["0"] += 1e-3
    e["value"] += 5e-4
    e["lo"], e["hi"] = e["value"] - 0.1, e["value"] + 0.1
    base.write_text(json.dumps(recorded))
    capsys.readouterr()
    assert main(["quality", str(run_dir), "--baseline", str(base)]) == 0
    out = capsys.readouterr().out
    assert f"{key}: " in out and "changed in seed(s) 0" in out and "PASS" in out


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=5000"]


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium: apt-get install chromium (nox installs it as root)")
def test_the_run_page_in_chromium(tiny_run, tmp_path):
    """The run's HTML page in Debian's headless Chromium: every table's rows, every image loaded,
    a selection strip per stored video and method; then a screenshot."""
    import re
    import subprocess

    from samplerbench.reports.render import render

    _, _, run_dir = tiny_run
    out = render(run_dir, tmp_path / "out")
    page = out / "index.html"
    assert "http://" not in page.read_text() and "https://" not in page.read_text()  # self-contained
    profile = [f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, *profile, "--dump-dom", page.as_uri()], capture_output=True,
                         text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    check = json.loads(re.search(r'data-check="([^"]*)"', dom.stdout).group(1).replace("&quot;", '"'))
    assert check["images"] >= 3 and check["loaded"] == check["images"]
    for stem in ("table_top1", "table_detail", "table_pareto"):
        assert check["tables"][stem] == len(pd.read_csv(out / f"{stem}.csv")), stem
    with np.load(run_dir / "strips.npz") as z:
        videos, t = z["thumbs"].shape[:2]
        assert z["thumbs"].shape[2:] == (3, 40, 40) and len(z["videos"]) == videos
    assert check["thumbs"] == videos * 4 * t  # uniform, random, dense, oracle
    shot = tmp_path / "page.png"
    done = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, *profile, "--window-size=1400,1800", f"--screenshot={shot}",
                           page.as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and shot.stat().st_size > 10_000, done.stderr[-2000:]


def test_the_shared_readers_model_only_timing_is_measured_once_per_frame_count(tiny_run, tmp_path, monkeypatch):
    """uniform, random and oracle at N = 1 and 4 and dense at 8 all read the suite's classifier:
    its model-only timing is the same workload at each count, measured once per count (three
    times, not seven) and given to every cell at that count, which names the cell that measured it."""
    import samplerbench.tasks.classification as classification

    calls = []
    real = classification.model_videos_per_s

    def counting(model, n, *args, **kwargs):
        calls.append(n)
        return real(model, n, *args, **kwargs)

    monkeypatch.setattr(classification, "model_videos_per_s", counting)
    s, tmp, _ = tiny_run
    run_dir = run_suite(s, tmp_path / "results", tmp / "cache", progress=False)
    timing = {p.stem: json.loads(p.read_text()) for p in (run_dir / "timing").glob("*.json")}
    assert len(timing) == 3 * 2 + 1 and sorted(calls) == [1, 4, 8]
    for n in (1, 4, 8):
        same = [t for t in timing.values() if t["model_count"] == n]
        assert len(same) == (1 if n == 8 else 3)
        assert len({t["videos_per_s_model"] for t in same}) == 1
        assert len({t["model_timed_in"] for t in same}) == 1 and same[0]["model_timed_in"] in timing
    # every cell's end-to-end timing is still its own
    assert len({t["videos_per_s_e2e"] for t in timing.values()}) == len(timing)


def test_each_test_videos_features_are_read_once_per_run_not_once_per_cell(tiny_run, tmp_path, monkeypatch):
    """The cells read a test video's stored features (and apply the fc) once per run and replicate
    (each seed's reader has its own features) while the memo fits ``[eval] video_cache_mib``; with
    no room, once per cell, as before. Same rows."""
    import dataclasses

    from samplerbench.features.store import ShardedStore

    reads = []
    real = ShardedStore.get

    def counting(self, position, names=None):
        if names == ("features",):
            reads.append(position)
        return real(self, position, names)

    monkeypatch.setattr(ShardedStore, "get", counting)
    s, tmp, first = tiny_run
    videos = TINY["splits"]["test"]
    rows = {}
    for mib in (256, 0):
        reads.clear()
        variant = dataclasses.replace(s, eval={**s.eval, "video_cache_mib": mib})
        run_dir = run_suite(variant, tmp_path / f"results{mib}", tmp / "cache", progress=False, timing=False)
        cells = len(list((run_dir / "cells" / "classification").glob("*.json")))
        assert cells == CELLS
        if mib:  # each video once per seed, whoever reads it after (the cells, the selection strips)
            assert sorted(reads) == sorted(list(range(videos)) * len(s.seeds))
        else:
            assert len(reads) >= CELLS * videos
        rows[mib] = pd.read_csv(run_dir / "rows.csv").set_index(["method", "budget", "seed", "metric"])["value"]
    pd.testing.assert_series_equal(rows[256], rows[0])
    quality = rows[256][rows[256].index.get_level_values("metric").isin(QUALITY)]
    stored = pd.read_csv(first / "rows.csv").set_index(["method", "budget", "seed", "metric"])["value"]
    pd.testing.assert_series_equal(quality, stored.loc[quality.index])


def test_the_token_vits_patch_tables_are_let_go_after_the_runs_last_token_vit(tmp_path, monkeypatch):
    """The run keeps the training splits' patch tables between its token ViTs (computed once
    for both) and lets them go once the last one is trained: they are 2 of the run's tables, not
    its memory for the rest of the cells."""
    from samplerbench.models import tokens
    from samplerbench.tasks.frames import FrameContext

    computed, kept = [], []
    table = tokens.patch_table
    monkeypatch.setattr(tokens, "patch_table", lambda pools, *a: computed.append(len(pools)) or table(pools, *a))
    train_vit = FrameContext.token_model

    def spy(self, key, sampler):
        out = train_vit(self, key, sampler)
        kept.append(len(self.patch_tables.table))
        return out

    monkeypatch.setattr(FrameContext, "token_model", spy)
    path = write_token_suite(tmp_path / "tok.toml", "tiny-tok-tables", width=16)
    run_suite(suite_mod.load(path), tmp_path / "results", tmp_path / "cache", progress=False, timing=False)
    assert computed[:2] == [TINY["splits"]["train"], TINY["splits"]["val"]]
    assert len([n for n in computed if n == TINY["splits"]["train"]]) == 1  # once, for both ViTs
    assert kept[0] == 2 and kept[-1] == 0


def test_a_feature_observers_timing_encodes_each_candidate_once(tiny_run, tmp_path, monkeypatch):
    """The oracle observes the classifier's frame probabilities, so its timed videos encode all T
    candidates; the head then reads the selected frames' features from those, as its cells do
    (they were encoded again: T + N frames a video)."""
    import dataclasses

    import samplerbench.tasks.classification as classification
    from samplerbench.models.encoders import FrameClassifier

    frames = []
    real = FrameClassifier.features

    def counting(self, x):
        frames.append(len(x))
        return real(self, x)

    monkeypatch.setattr(FrameClassifier, "features", counting)
    monkeypatch.setattr(classification, "model_videos_per_s", lambda *a, **k: {"videos_per_s": 1.0})
    s, tmp, _ = tiny_run
    oracle = dataclasses.replace(s, methods=tuple(m for m in s.methods if m.name == "oracle"))
    run_dir = run_suite(oracle, tmp_path / "results", tmp / "cache", progress=False)
    timed = [json.loads(p.read_text()) for p in (run_dir / "timing").glob("*.json")]
    videos = sum(t["timed_videos"] + 1 for t in timed)  # each timing run warms up on one more video
    assert len(timed) == 2 and sum(frames) == videos * s.eval["candidates"]


def test_cells_whose_reader_did_not_learn_are_marked_in_rows_tables_and_page(tmp_path):
    """Every cell's ``reader`` follows its readers' validation scores against chance (here: one
    epoch of a token ViT on 24 videos, read against 8 validation videos, stays within the margin);
    the tables mark those methods with ⊘ and say why; the HTML page shows the mark."""
    from samplerbench.metrics.stats import above_chance
    from samplerbench.reports.render import render

    path = write_token_suite(tmp_path / "tok.toml", "tiny-unlearned", methods=("tokens-uniform", "uniform"))
    run_dir = run_suite(suite_mod.load(path), tmp_path / "results", tmp_path / "cache", progress=False, timing=False)
    prov = json.loads(next((run_dir / "provenance").glob("*.json")).read_text())

    def verdict(*records):
        return "learned" if all(above_chance(r["val"], r["chance"], r["n_val"]) for r in records) else "did not learn"

    rows = pd.read_csv(run_dir / "rows.csv")
    got = rows.groupby("label")["reader"].agg(set).to_dict()
    token_rec = prov["token_models"]["tokens-uniform"]
    assert token_rec["n_val"] == TINY["splits"]["val"] and 0 < token_rec["chance"] < 1
    assert got == {"tokens-uniform": {verdict(token_rec)}, "uniform": {verdict(prov["classifier"])}}
    assert got["tokens-uniform"] == {"did not learn"}
    out = render(run_dir, tmp_path / "report")
    table = pd.read_csv(out / "table_top1.csv")
    assert "tokens-uniform⊘" in set(table["Method"])
    assert "did not learn" in (out / "table_top1.md").read_text().split("\n\n")[0]
    assert "tokens-uniform⊘" in (out / "index.html").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["classification cells whose reader did not learn"] == len(rows[rows.reader == "did not learn"]
                                                                              .groupby(["label", "budget", "seed"]))
