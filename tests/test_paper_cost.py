"""Paper configurations: counted from the modules, cross-checked, disagreements explained."""

import pytest

from samplerbench.cli import main
from samplerbench.cost import papers as paper_cost
from samplerbench.kernels.farthest import farthest_point_macs


def test_sosampler_counts_scorer_on_every_candidate_and_classifier_on_the_selection():
    comps = paper_cost.components(paper_cost.PRESETS["sosampler-anet"])
    scorer, clf = comps
    assert (scorer.role, scorer.calls, clf.role, clf.calls) == ("sampler", 10, "encoder", 6)
    # the scorer's ~4% gap to ptflops is fvcore counting batch norm, which ptflops' aten backend skips
    assert abs(scorer.disagreement) > paper_cost.TOLERANCE and abs(scorer.residual) <= paper_cost.TOLERANCE
    assert scorer.verdict().startswith("fvcore also counts")
    assert clf.verdict() == "agree"
    table = paper_cost.table(paper_cost.PRESETS["sosampler-anet"], comps)
    total = (scorer.fvcore * 10 + clf.fvcore * 6) / 1e9
    assert f"{total:.3f}" in table


def test_unexplained_disagreement_is_flagged():
    c = paper_cost.Component("x", 1, fvcore=100.0, ptflops=90.0, explained=0.0)
    assert c.verdict().startswith("DISAGREE")


def test_kcenter_sampler_cost_is_the_greedy_formula():
    cfg = paper_cost.CostConfig("k", "vit-b16-tokens", 2, 1, sampler="kcenter")
    comps = paper_cost.components(cfg, cross_check=False)
    assert comps[0].role == "sampler" and comps[0].fvcore == farthest_point_macs(2 * 196, 196, 771)


def test_cost_command_prints_a_table(capsys):
    assert main(["cost", "--encoder", "resnet50", "-T", "8", "-N", "2", "--resolution", "64", "--no-cross-check"]) == 0
    out = capsys.readouterr().out
    assert "resnet50 @64" in out and "one multiply-add = one FLOP" in out
    assert main(["cost", "no-such-preset"]) == 2


@pytest.mark.parametrize("name", ["clip-vit-b32"])
def test_clip_layout_cost_matches_its_hand_count(name):
    """CLIP ViT-B/32 at 224: patch conv + 12 blocks over 50 tokens + projection (multiply-adds),
    plus fvcore's layer-norm term (5 per element, affine)."""
    comp = paper_cost.components(paper_cost.CostConfig("c", name, 1, 1), cross_check=False)[0]
    n, d = 50, 768
    conv = 49 * 768 * 3 * 32 * 32
    block = 4 * n * d * d + 2 * n * n * d + 8 * n * d * d  # qkv+proj, attention, MLP
    proj = d * 512
    norms = (2 * 12 * n * d + n * d + d) * 5  # two per block, ln_pre on all tokens, ln_post on the class token
    assert comp.fvcore == conv + 12 * block + proj + norms


def test_sllm_preset_pairs_the_frames_as_the_runtime_method_does():
    """Hand-worked: of 16 sampled frames SLLM encodes 0, 2, ..., 14 (8), restores one feature
    between each adjacent encoded pair (7; none after the last) and its head reads 15."""
    import numpy as np
    import torch

    from samplerbench.methods.sllm import SLLMModel, encoded_positions
    from samplerbench.models.archs import sllm_layout

    enc, pairs, seq = sllm_layout(16)
    assert enc.tolist() == list(range(0, 16, 2)) and (pairs, seq) == (7, 15)
    assert np.array_equal(encoded_positions(16, "restore"), enc)
    assert sllm_layout(16, "full")[1:] == (0, 16) and sllm_layout(16, "half")[1:] == (0, 8)
    comps = paper_cost.components(paper_cost.PRESETS["sllm-16-8"], cross_check=False)
    names = [c.name for c in comps]
    assert "SLLM restorer (7 pairs)" in names and "SLLM temporal head (15 features)" in names
    model = SLLMModel(8, 3, "restore", depth=1, restorer_depth=1, heads=2, frames=32).eval()
    with torch.no_grad():
        sequence, restored = model.sequence(torch.zeros(1, len(enc), 8))
    assert sequence.shape[1] == seq and restored.shape[1] == pairs  # the runtime's own sequence


PAPER_SUITES = ("sosampler-activitynet", "sllm-hmdb51", "mmsampler-activitynet", "mmsampler-didemo",
                "mmsampler-msrvtt", "kcenter-kinetics400", "evfr-bdd100k")


@pytest.mark.parametrize("name", [n for n in PAPER_SUITES if n != "evfr-bdd100k"])
def test_paper_suites_instantiate_the_modules_their_cost_preset_counts(name):
    """Per paper suite: the reader's image path, the paper method's modules (built from the
    suite's own parameters, random weights) have the preset's parameter counts and GFLOPs."""
    from samplerbench import suite as suite_mod

    s = suite_mod.load(name)
    checks = paper_cost.check_suite(s)
    # the reader, and the method's modules (K-center's distances are analytic: its reader is the check)
    assert len(checks) >= (1 if name.startswith("kcenter") else 2)
    for c in checks:
        assert c.same, (name, c)


def test_a_scaled_down_paper_method_fails_the_preset_check():
    """The sllm-hmdb51 suite with the head and restorer the harness defaults to (depth 2 and 1,
    4 heads: the suite before it named the paper's) is caught, module by module."""
    import dataclasses

    from samplerbench import suite as suite_mod

    s = suite_mod.load("sllm-hmdb51")
    small = tuple(dataclasses.replace(m, params={}) if m.display == "sllm" else m for m in s.methods)
    checks = {c.role.split(" on ")[0]: c for c in paper_cost.check_suite(dataclasses.replace(s, methods=small))}
    assert not checks["restorer"].same and not checks["temporal head"].same
    assert checks["restorer"].run_params < checks["restorer"].preset_params


@pytest.mark.parametrize("name", PAPER_SUITES)
def test_every_paper_suite_names_its_configuration_and_deviations(name):
    """A paper suite says which method is the paper's and how it deviates; the report's captions
    carry each deviation."""
    from samplerbench import suite as suite_mod
    from samplerbench.reports.render import paper_note
    from samplerbench.tasks.run import validate

    s = suite_mod.load(name)
    assert validate(s) == []
    assert s.paper.get("method") and s.paper.get("deviations")
    note = paper_note(s.paper)
    for d in s.paper["deviations"]:
        assert d in note


def test_a_malformed_paper_section_is_one_line_each():
    import dataclasses

    from samplerbench import suite as suite_mod
    from samplerbench.tasks.run import validate

    s = suite_mod.load("sllm-hmdb51")
    bad = dataclasses.replace(s, paper={"preset": "no-such", "method": "nobody", "deviations": "one", "extra": 1})
    problems = [p for p in validate(bad) if ": paper." in p]
    assert len(problems) == 4 and all(p.startswith(str(s.source)) for p in problems)
