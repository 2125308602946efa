"""Captions, the retrieval model's pooling, and mmSampler's policy pieces."""

import numpy as np
import pytest
import torch

from samplerbench.data.captions import VOCAB, captions_for, load_captions, tokenize, write_captions
from samplerbench.data.synth import SynthConfig, plan_scene, render_video
from samplerbench.methods.mmsampler import MMSampler, argmax_keep, hard_gumbel_keep, policy_inputs
from samplerbench.models.clip4clip import RetrievalConfig, RetrievalModel, Tokenizer, info_nce
from samplerbench.registry import METHODS
from samplerbench.sampling import Budget, VideoView
from samplerbench.seeding import torch_generator


def test_captions_describe_the_event_in_the_closed_vocabulary(tmp_path):
    cfg = SynthConfig(splits={"test": 6})
    vids = [f"test/test_{i:05d}" for i in range(6)]
    for v in vids:
        scene, _ = plan_scene(cfg, v)
        caps = captions_for(cfg, v, 5)
        assert len(caps) == 5 and len(set(caps)) >= 3  # varied wording
        assert caps == captions_for(cfg, v, 5)  # seeded
        shape_words = {"square": "square box block", "triangle": "triangle wedge pyramid", "plus": "plus cross",
                       "ring": "ring hoop donut", "diamond": "diamond rhombus lozenge"}[scene.events[0].kind].split()
        for c in caps:
            assert set(tokenize(c)) <= set(VOCAB)
            assert any(w in tokenize(c) for w in shape_words), c
    path = write_captions(tmp_path, "test", vids, cfg, per_video=3)
    pairs = load_captions(path)
    assert len(pairs) == 18 and pairs[0][0] == vids[0]
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json"):
        load_captions(tmp_path / "bad.json")


def test_scene_plan_matches_the_rendered_events():
    cfg = SynthConfig()
    scene, _ = plan_scene(cfg, "train/train_00004")
    _, events = render_video(cfg, "train/train_00004")
    assert events == [(e.label, e.start, e.end) for e in scene.events]


def test_tokenizer_pads_and_marks_unknown_words():
    tok = Tokenizer(max_len=6)
    ids = tok(["a red box moves", "a zebra"])
    assert ids.shape == (2, 6) and (ids[0, 4:] == 0).all() and ids[1, 1] == 1  # zebra: unknown


def test_masked_mean_pooling_equals_the_mean_of_kept_normalised_frames():
    torch.manual_seed(0)
    m = RetrievalModel(8, RetrievalConfig(width=4, text_depth=1, heads=2), vocab_size=10)
    feats = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 0, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.float32)
    got = m.video_embed(feats, mask)
    e = torch.nn.functional.normalize(m.frame_proj(feats), dim=-1)
    want0 = torch.nn.functional.normalize(e[0, [0, 2]].mean(0), dim=0)
    assert torch.allclose(got[0], want0, atol=1e-6)
    assert torch.allclose(got[1], m.video_embed(feats[1:])[0], atol=1e-6)
    # symmetric InfoNCE is low for matching pairs, high for shuffled ones
    v = torch.eye(4)
    assert info_nce(v, v, torch.tensor(20.0)) < info_nce(v, v[[1, 2, 3, 0]], torch.tensor(20.0))


def test_policy_inputs_per_variant():
    f = torch.arange(6, dtype=torch.float32).view(1, 3, 2)
    assert torch.equal(policy_inputs(f, "frame"), f)
    diff = policy_inputs(f, "diff")
    assert torch.equal(diff[0, 0], torch.zeros(2)) and torch.equal(diff[0, 2], f[0, 2] - f[0, 1])
    assert policy_inputs(f, "concat").shape == (1, 3, 4)
    with pytest.raises(ValueError, match="variant"):
        policy_inputs(f, "both")


def test_gumbel_keep_is_hard_keeps_frame_zero_and_passes_gradients():
    logits = torch.full((3, 6, 2), 0.0)
    logits[..., 1] = 5.0  # every frame would rather skip
    logits.requires_grad_(True)
    keep = hard_gumbel_keep(logits, 1.0, torch_generator("t", 0))
    assert set(keep.detach().unique().tolist()) <= {0.0, 1.0}
    assert (keep[:, 0] == 1).all()
    keep.sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    again = hard_gumbel_keep(logits.detach(), 1.0, torch_generator("t", 0))
    assert torch.equal(keep.detach(), again)  # same generator, same draws


def test_test_time_selection_is_deterministic_and_keeps_frame_zero():
    s = MMSampler(variant="diff")
    s.random_init(frames=8, num_classes=3)
    pixels = torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8)
    view = VideoView("v", 8, np.arange(8), allowed=s.observes, providers={"pixels": lambda: pixels},
                     frame_size=(64, 64))
    a = s.select(view, Budget("adaptive"), np.random.default_rng(0))
    b = s.select(view, Budget("adaptive"), np.random.default_rng(99))
    assert a.indices.tolist() == b.indices.tolist() and a.indices[0] == 0 and a.own_flops > 0
    logits = torch.tensor([[[0.0, 1.0], [2.0, 1.0], [0.0, 3.0]]])
    assert argmax_keep(logits).tolist() == [[True, True, False]]


def test_the_policy_runs_once_per_video_for_every_seed():
    """mmSampler's keep mask takes no budget or seed: one instance (the runner's, for all the
    seeds' cells) runs the policy once per video and selects as a fresh instance does."""
    def make():
        s = MMSampler(variant="concat")
        s.random_init(frames=8, num_classes=3)
        return s

    kept, calls = make(), []
    inner = kept.policy
    kept.policy = lambda px: calls.append(px) or inner(px)
    g = torch.Generator().manual_seed(1)
    videos = {v: torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8, generator=g) for v in ("a", "b")}
    for seed in (0, 1, 2):
        for v, px in videos.items():
            def view(v=v, px=px):
                return VideoView(v, 8, np.arange(8), allowed=kept.observes, providers={"pixels": lambda: px},
                                 frame_size=(64, 64))
            got = kept.select(view(), Budget("adaptive"), np.random.default_rng(seed))
            want = make().select(view(), Budget("adaptive"), np.random.default_rng(seed))
            assert got.indices.tolist() == want.indices.tolist() and np.array_equal(got.scores, want.scores)
            assert got.own_flops == want.own_flops
    assert [id(c) for c in calls] == [id(videos["a"]), id(videos["b"])]
    kept.forget()
    kept.select(VideoView("a", 8, np.arange(8), allowed=kept.observes, providers={"pixels": lambda: videos["a"]},
                          frame_size=(64, 64)), Budget("adaptive"), np.random.default_rng(0))
    assert len(calls) == 3


@pytest.mark.parametrize("attention", ["causal", "bidirectional"])
def test_mmsampler_policy_decides_from_the_past_only_when_causal(attention):
    """The paper's policy decides "given the current and past frame observations": changing
    frames after t leaves the logits of frames 0..t unchanged (causal, the default); the
    bidirectional deviation lets them move."""
    from samplerbench.models.archs import MMSamplerPolicy

    torch.manual_seed(0)
    policy = MMSamplerPolicy(16, 32, 4, 12, causal=attention == "causal").eval()
    x = torch.randn(1, 12, 16)
    y = x.clone()
    y[:, 7:] = torch.randn(1, 5, 16)  # the future of frame 6
    with torch.no_grad():
        a, b = policy(x), policy(y)
    assert torch.equal(a[:, :7], b[:, :7]) is (attention == "causal")
    assert not torch.equal(a[:, 7:], b[:, 7:])
    assert METHODS.get("mmsampler")().attention == "causal"
    with pytest.raises(ValueError, match="causal or bidirectional"):
        METHODS.get("mmsampler")(attention="sideways")
