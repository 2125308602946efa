"""SOSampler and SLLM pieces against brute-force or hand-worked cases, and the checkpoint cache
of learned pieces (round trip, invalidation by config)."""

import numpy as np
import pytest
import torch
from torch import nn

from samplerbench.methods.sllm import SLLMModel, encoded_positions, restoration_kl
from samplerbench.methods.sosampler import (
    SOScorer,
    frame_distribution,
    mobilenet_v2_tsm,
    pairwise_hinge,
    semi_optimal_targets,
    temporal_shift,
)
from samplerbench.registry import METHODS
from samplerbench.sampling import Budget, VideoView
from samplerbench.seeding import generator
from samplerbench.training.fit import cached_fit


def brute_hinge(p, t, gamma):
    total = 0.0
    for b in range(p.shape[0]):
        s = 0.0
        for i in range(p.shape[1]):
            for j in range(i + 1, p.shape[1]):
                d = float(t[b, i] - t[b, j])
                sign = (d > 0) - (d < 0)
                s += abs(d) * max(0.0, gamma - sign * float(p[b, i] - p[b, j]))
        total += s
    return total / p.shape[0]


@pytest.mark.parametrize("gamma", [0.01, 0.2])
def test_pairwise_hinge_equals_a_double_loop(gamma):
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(3, 7, generator=g), -1).double()
    t = torch.softmax(torch.randn(3, 7, generator=g), -1).double()
    t[0, 2] = t[0, 4]  # a tie: sign 0, contributes nothing
    got = pairwise_hinge(p, t, gamma).item()
    assert got == pytest.approx(brute_hinge(p.numpy(), t.numpy(), gamma), rel=1e-12)


def test_hinge_is_zero_when_p_ranks_like_t_beyond_the_margin():
    t = torch.tensor([[0.1, 0.5, 0.4]])
    p = torch.tensor([[0.0, 1.0, 0.5]])  # every pair ordered as t, gaps >= 0.5 > gamma
    assert pairwise_hinge(p, t, 0.01).item() == 0.0
    # every pair misordered costs |dt| * (gamma + |dp|) per pair (gamma = 0 here)
    bad = torch.tensor([[1.0, 0.0, 0.5]])
    assert pairwise_hinge(bad, t, 0.0).item() == pytest.approx(0.4 * 1.0 + 0.3 * 0.5 + 0.1 * 0.5)


def test_temporal_shift_by_hand():
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2 * 3, 4, 1, 1)  # (B=2, T=3) frames, 4 channels
    y = temporal_shift(x, frames=3, div=4).view(2, 3, 4)
    v = x.view(2, 3, 4)
    assert torch.equal(y[:, :2, 0], v[:, 1:, 0]) and (y[:, 2, 0] == 0).all()  # channel 0 from the next frame
    assert torch.equal(y[:, 1:, 1], v[:, :2, 1]) and (y[:, 0, 1] == 0).all()  # channel 1 from the previous
    assert torch.equal(y[:, :, 2:], v[:, :, 2:])  # the rest stay


def test_semi_optimal_targets_by_hand():
    logits = torch.log(torch.tensor([[[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]]]))  # two frames, three classes
    label = torch.tensor([[1.0, 0.0, 0.0]])
    t = semi_optimal_targets(logits, label, "true", 0.5)
    e = np.exp(np.array([0.7, 0.1]) / 0.5)
    assert np.allclose(t.numpy()[0], e / e.sum())
    m = semi_optimal_targets(logits, label, "max", 1.0)
    e = np.exp(np.array([0.7, 0.8]))
    assert np.allclose(m.numpy()[0], e / e.sum())


def test_sosampler_selects_the_top_n_sorted_by_time():
    s = METHODS.get("sosampler")()
    torch.manual_seed(0)
    s._model = SOScorer(frames=8).eval()
    pixels = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    view = VideoView("v", 8, np.arange(8), allowed=s.observes, providers={"pixels": lambda: pixels},
                     frame_size=(32, 32))
    sel = s.select(view, Budget("count", 3), generator(0, "v", "sosampler"))
    with torch.no_grad():
        p = frame_distribution(s._model(pixels[None]))[0].numpy()
    assert sel.indices.tolist() == sorted(np.argsort(-p)[:3].tolist())
    assert len(sel.indices) == 3 and np.all(np.diff(sel.indices) > 0)
    assert np.isclose(p.sum(), 1.0) and sel.own_flops > 0


def test_sosampler_ranks_by_the_score_before_a_saturated_sigmoid():
    """Logits 30, 50, 40, 20, 45 all give sigmoid 1.0 in float32: their distribution ties, and
    a top-2 on it would return the first two indices; ranked by the logits it is frames 1 and 4."""
    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return torch.tensor([[30.0, 50.0, 40.0, 20.0, 45.0]]) + 0 * self.w

    s = METHODS.get("sosampler")()
    s._model = Fixed()
    s._flops[(5, (8, 8))] = 1.0
    pixels = torch.zeros(5, 3, 8, 8, dtype=torch.uint8)
    view = VideoView("v", 5, np.arange(5), allowed=s.observes, providers={"pixels": lambda: pixels})
    sel = s.select(view, Budget("count", 2), generator(0, "v", "sosampler"))
    assert len(set(sel.scores.tolist())) == 1  # the saturated distribution: all tied
    assert sel.indices.tolist() == [1, 4]


def _counting(obj, name: str) -> list:
    """Wrap ``obj.name`` so that every call records its first argument; returns the record."""
    calls, inner = [], getattr(obj, name)

    def wrapped(*args, **kwargs):
        calls.append(args[0])
        return inner(*args, **kwargs)

    setattr(obj, name, wrapped)
    return calls


@pytest.mark.parametrize("method", ["sosampler", "sosampler+sllm"])
def test_the_scorer_runs_once_per_video_for_every_budget_and_seed(method):
    """The runner keeps one instance per method for its 15 cells: the scorer's per-video scores
    (no budget or seed changes them) are computed once per video, the selections, scores and
    costs are a fresh instance's, and every view is still charged for the pixels it gave."""
    def make():
        s = METHODS.get("sllm")(base="sosampler") if method == "sosampler+sllm" else METHODS.get("sosampler")()
        s.random_init(frames=8, num_classes=3, seed=0)
        return s

    g = torch.Generator().manual_seed(0)
    videos = {v: torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=g) for v in ("a", "b")}

    def view(v, size=(32, 32)):
        px = videos[v] if size == (32, 32) else torch.nn.functional.interpolate(videos[v].float(), size=size).byte()
        return VideoView(v, 8, np.arange(8), allowed=frozenset({"pixels"}), providers={"pixels": lambda: px},
                         provider_flops={"pixels": 5.0}, frame_size=size)

    kept = make()
    scorer = kept._base if method == "sosampler+sllm" else kept
    calls = _counting(scorer, "logits")
    for budget in (1, 2, 4, 6):
        for seed in (0, 1, 2):
            for v in videos:
                fresh, w = make(), view(v)
                got = kept.select(w, Budget("count", budget), generator(seed, v, method))
                want = fresh.select(view(v), Budget("count", budget), generator(seed, v, method))
                assert got.indices.tolist() == want.indices.tolist() and got.own_flops == want.own_flops
                assert np.array_equal(got.scores, want.scores) and w.charged_flops == 5.0
    assert [id(c) for c in calls] == [id(videos["a"]), id(videos["b"])]  # once per video, in order
    kept.select(view("a", (16, 16)), Budget("count", 2), generator(0, "a", method))
    assert len(calls) == 3  # the same video at another frame size is another input
    kept.forget()  # (what a benchmark reusing the instance does between calls; SLLM: its base's)
    kept.select(view("a"), Budget("count", 2), generator(0, "a", method))
    assert len(calls) == 4 and "_memo" not in scorer.config()


def test_mobilenet_v2_configuration_loads_local_weights(tmp_path):
    from torchvision.models import mobilenet_v2

    torch.manual_seed(1)
    ref = mobilenet_v2(weights=None)
    path = tmp_path / "mnv2.pt"
    torch.save(ref.state_dict(), path)
    body = mobilenet_v2_tsm(frames=2, weights=str(path))
    assert torch.equal(body[0][0][0].weight, ref.features[0][0].weight)
    scorer = SOScorer(frames=2, backbone="mobilenet_v2", resolution=32, weights=str(path)).eval()
    assert scorer(torch.zeros(1, 2, 3, 64, 64, dtype=torch.uint8)).shape == (1, 2)
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt"):
        mobilenet_v2_tsm(frames=2, weights=str(tmp_path / "other.pt"))


def test_sllm_sequence_interleaves_encoded_and_restored_in_time_order():
    torch.manual_seed(0)
    m = SLLMModel(dim=8, num_classes=3, mode="restore", depth=1, restorer_depth=1, heads=2).eval()
    enc = torch.randn(2, 4, 8)
    seq, restored = m.sequence(enc)
    assert seq.shape == (2, 7, 8) and restored.shape == (2, 3, 8)
    assert torch.equal(seq[:, 0::2], enc) and torch.equal(seq[:, 1::2], restored)
    # restored[i] depends on its own pair only, and symmetrically on a and b
    assert torch.allclose(restored[:, 1], m.restore(enc[:, 1:3])[:, 0], atol=1e-6)
    assert torch.allclose(m.restore(enc[:, [1, 0]]), m.restore(enc[:, [0, 1]]), atol=1e-5)
    assert m(enc).shape == (2, 3)
    assert m.sequence(enc[:, :1])[0].shape == (2, 1, 8)  # one encoded frame: nothing to restore


def test_sllm_encoded_positions_and_selection():
    assert encoded_positions(8, "restore").tolist() == [0, 2, 4, 6]
    assert encoded_positions(8, "half").tolist() == [0, 2, 4, 6]
    assert encoded_positions(5, "full").tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="mode"):
        encoded_positions(4, "double")
    s = METHODS.get("sllm")()
    view = VideoView("v", 32, np.arange(32), allowed=s.observes)
    sel = s.select(view, Budget("count", 8), generator(0, "v", "sllm"))
    assert sel.indices.tolist() == [2, 10, 18, 26]  # uniform 8 of 32 = 2, 6, 10, ..., every other one
    full = METHODS.get("sllm")(mode="full").select(view, Budget("count", 8), generator(0, "v", "sllm"))
    assert full.indices.tolist() == [2, 6, 10, 14, 18, 22, 26, 30]


def test_restoration_kl_by_hand():
    true = torch.tensor([[[0.0, 1.0]]])
    same = restoration_kl(true.clone(), true)
    assert same.item() == pytest.approx(0.0, abs=1e-7)
    other = torch.tensor([[[1.0, 0.0]]])
    p = torch.softmax(true[0, 0], -1)
    q = torch.softmax(other[0, 0], -1)
    assert restoration_kl(other, true).item() == pytest.approx(float((p * (p / q).log()).sum()), rel=1e-6)


class _Lin(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Linear(3, 1)


def test_cached_fit_round_trips_and_a_changed_config_retrains(tmp_path):
    calls = []

    def train(model):
        calls.append(1)
        with torch.no_grad():
            model.w.weight.add_(1.0)
        return {"val": 0.5}

    m1, r1 = cached_fit("toy", [{"lr": 1e-3}], _Lin, train, tmp_path)
    m2, r2 = cached_fit("toy", [{"lr": 1e-3}], _Lin, train, tmp_path)
    assert len(calls) == 1 and r1["cached"] is False and r2["cached"] is True
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True))
    assert r2["val"] == 0.5 and r2["checkpoint"] == r1["checkpoint"]
    _, r3 = cached_fit("toy", [{"lr": 2e-3}], _Lin, train, tmp_path)
    assert len(calls) == 2 and r3["cached"] is False and r3["checkpoint"] != r1["checkpoint"]


def test_multilabel_frame_probabilities_are_the_readers_sigmoid():
    """Frame A's logits (2, 2, 2), frame B's (1, -5, -5), true class 0. Softmax: A 1/3, B 0.995,
    so B ranks first; the multi-label reader's sigmoid: A 0.881, B 0.731, so A does. The oracle's
    view and SOSampler's targets follow the reader."""
    from samplerbench.tasks.frames import frame_probabilities

    logits = np.array([[2.0, 2.0, 2.0], [1.0, -5.0, -5.0]], dtype=np.float32)
    single, multi = frame_probabilities(logits, False), frame_probabilities(logits, True)
    assert single[:, 0].argmax() == 1 and multi[:, 0].argmax() == 0
    assert multi[:, 0] == pytest.approx([1 / (1 + np.exp(-2)), 1 / (1 + np.exp(-1))], rel=1e-6)
    assert multi.dtype == np.float32
    t = torch.from_numpy(logits)[None]
    hot = torch.tensor([[1.0, 0.0, 0.0]])
    assert semi_optimal_targets(t, hot, multilabel=True)[0].argmax() == 0
    assert semi_optimal_targets(t, hot, multilabel=False)[0].argmax() == 1
