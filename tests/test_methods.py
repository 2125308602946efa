"""Each sampler against a hand-worked or brute-force case."""

import itertools
from pathlib import Path

import numpy as np
import pytest

from samplerbench.registry import METHODS
from samplerbench.sampling import Budget, Selection, VideoView, candidate_pool, top_n_sorted
from samplerbench.seeding import generator


def view(t=32, allowed=frozenset(), **providers):
    return VideoView("v", 100, candidate_pool(100, t), allowed=allowed, providers=providers,
                     provider_flops={"frame_probs": 123.0})


def select(name, n, v=None, seed=0, **params):
    v = v or view()
    return METHODS.get(name)(**params).select(v, Budget("count", n), generator(seed, "v", name))


def test_uniform_hand_worked():
    assert select("uniform", 4).indices.tolist() == [4, 12, 20, 28]
    assert select("uniform", 1).indices.tolist() == [16]
    assert select("uniform", 3, view(t=10)).indices.tolist() == [1, 5, 8]


def test_stride_head_dense():
    assert select("stride", 4).indices.tolist() == [0, 8, 16, 24]
    assert select("stride", 3, view(t=10)).indices.tolist() == [0, 3, 6]
    assert select("head", 3).indices.tolist() == [0, 1, 2]
    assert select("dense", 2).indices.tolist() == list(range(32))


def test_random_is_sorted_unique_seeded_and_covers_all_subsets():
    a, b = select("random", 5, seed=1), select("random", 5, seed=1)
    assert np.array_equal(a.indices, b.indices)
    assert len(set(a.indices)) == 5 and np.all(np.diff(a.indices) > 0)
    seen = {tuple(select("random", 2, view(t=4), seed=s).indices) for s in range(200)}
    assert seen == set(itertools.combinations(range(4), 2))  # every subset is reachable


def test_candidate_pool_is_tsn_centres():
    assert candidate_pool(100, 4).tolist() == [12, 37, 62, 87]
    short = candidate_pool(5, 32)  # shorter than the pool: frames repeat (MMAction2's SampleFrames)
    assert len(short) == 32 and np.bincount(short).tolist() == [6, 7, 6, 7, 6] and (np.diff(short) >= 0).all()


def test_oracle_brute_force_top_n_of_true_class():
    rng = np.random.default_rng(0)
    probs = rng.random((32, 5))
    label = np.array([0, 0, 1, 0, 0])
    v = view(allowed=frozenset({"frame_probs", "label"}), frame_probs=lambda: probs, label=lambda: label)
    sel = select("oracle", 4, v)
    best = max(itertools.combinations(range(32), 4), key=lambda c: sum(probs[list(c), 2]))
    assert sel.indices.tolist() == sorted(best)
    assert v.charged_flops == 123.0  # the classifier on every candidate is the sampler's cost


def test_view_refuses_undeclared_observation():
    v = view(frame_probs=lambda: np.zeros((32, 2)))
    with pytest.raises(PermissionError, match="did not declare"):
        v.frame_probs()


def test_top_n_sorted_ties_first_index():
    assert top_n_sorted(np.array([1, 3, 3, 3, 0]), 2).tolist() == [1, 2]


def test_selection_validates_and_hashes():
    with pytest.raises(ValueError):
        Selection(np.array([3, 1]))
    assert Selection(np.array([1, 3])).digest() == Selection(np.array([1, 3])).digest()
    assert Selection(np.array([1, 3])).digest() != Selection(np.array([1, 4])).digest()


def test_budget():
    assert Budget("count", 8).frames(4) == 4
    assert Budget("ratio", 0.25).frames(32) == 8
    with pytest.raises(ValueError):
        Budget("count", 0)


def test_mgsampler_hand_worked():
    """8 candidates; all the motion happens between candidates 4 and 5 and 5 and 6."""
    from samplerbench.methods.mgsampler import motion
    from samplerbench.sampling import quantile_frames

    px = np.zeros((8, 1, 2, 2), dtype=np.uint8)
    px[5:] = 100
    px[6:] = 200
    m = motion(px)
    assert np.allclose(m, [200 / 7, 0, 0, 0, 0, 100, 100, 0])  # first = mean of the 7 differences
    # cdf = [1/8, 1/8, 1/8, 1/8, 1/8, 9/16, 1, 1]; levels 1/4 and 3/4 -> frames 5 and 6
    assert quantile_frames(m, 2).tolist() == [5, 6]
    # levels 1/6, 1/2, 5/6: frames 5, 5, 6 -> each kept once
    assert quantile_frames(m, 3).tolist() == [5, 6]
    # no motion at all: a flat distribution, cdf = (t + 1) / 8; levels 1/8, 3/8, 5/8, 7/8 are
    # first reached at frames 0, 2, 4, 6
    assert quantile_frames(np.zeros(8), 4).tolist() == [0, 2, 4, 6]


def test_mgsampler_brute_force_and_cost():
    """Against a direct inverse-CDF search, and its analytic cost."""
    rng = np.random.default_rng(0)
    px = rng.integers(0, 255, (32, 3, 8, 8), dtype=np.uint8)
    import torch

    v = view(allowed=frozenset({"pixels"}), pixels=lambda: torch.from_numpy(px))
    sel = select("mgsampler", 6, v)
    d = [np.abs(px[i].astype(float) - px[i - 1]).mean() for i in range(1, 32)]
    m = np.array([np.mean(d)] + d)
    cdf = np.cumsum(m) / m.sum()
    want = sorted({min(next(t for t in range(32) if cdf[t] >= (i + 0.5) / 6 - 1e-12), 31) for i in range(6)})
    assert sel.indices.tolist() == want
    assert sel.own_flops == 31 * 3 * 8 * 8


def test_evfr_fps_hand_worked_and_seeded():
    """Features on a line 0..7; the start comes from the seeded generator, then the farthest."""
    feats = np.arange(8, dtype=np.float32)[:, None]
    v = view(t=8, allowed=frozenset({"features"}), features=lambda: feats)
    sel = select("evfr-fps", 3, v, seed=5)
    start = int(generator(5, "v", "evfr-fps").integers(8))
    far = 0 if start >= 4 else 7  # the farther end (the first maximum on a tie)
    assert sel.order[0] == start and sel.order[1] == far
    assert sel.indices.tolist() == sorted(sel.order.tolist()) and len(set(sel.order.tolist())) == 3
    assert sel.own_flops == (3 - 1) * 8 * 1
    again = select("evfr-fps", 3, view(t=8, allowed=frozenset({"features"}), features=lambda: feats), seed=5)
    assert again.order.tolist() == sel.order.tolist()
    with pytest.raises(ValueError, match="metric"):
        METHODS.get("evfr-fps")(metric="chebyshev")


SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seeds"


@pytest.mark.parametrize("seed,modules", [("evfr.md", ["evfr"]), ("kcenter-patch-sampling.md", ["kcenter"]),
                                          ("sllm.md", ["sllm"]), ("sosampler.md", ["sosampler", "oracle"]),
                                          ("mmsampler.md", ["mmsampler"])])
def test_method_modules_cite_the_seed_bibtex_authors_and_title(seed, modules):
    """Each method module opens with its paper's citation, taken from the seed README's BibTeX:
    every author's surname and the title appear in the module's first paragraph."""
    import importlib
    import re

    path = SEEDS / seed
    if not path.is_file():
        pytest.skip(f"{path}: the seed READMEs are not beside this checkout")
    bib = path.read_text()
    entry = bib[re.search(r"@\w+\{", bib).start():]  # the first BibTeX entry (not an e-mail address)
    authors = re.search(r"author\s*=\s*\{(.*?)\},\s*\n", entry, re.S).group(1)
    title = " ".join(re.search(r"title\s*=\s*\{(.*?)\},\s*\n", entry, re.S).group(1).split())
    surnames = [a.split(",")[0].strip() if "," in a else a.split()[-1] for a in re.split(r"\s+and\s+", " ".join(authors.split()))]
    for m in modules:
        head = " ".join((importlib.import_module(f"samplerbench.methods.{m}").__doc__ or "").split("\n\n")[0].split())
        for s in surnames:
            assert s in head, (m, s)
        assert title.lower() in head.lower(), (m, title)


def test_every_method_describes_itself_in_a_sentence_of_its_own():
    builtin = [n for n in METHODS.names() if METHODS.get(n).__module__.startswith("samplerbench.methods.")]
    descriptions = {n: METHODS.get(n).describe() for n in builtin}
    assert all(d and d.endswith((".", ")")) for d in descriptions.values()), descriptions
    assert len(set(descriptions.values())) == len(descriptions)
