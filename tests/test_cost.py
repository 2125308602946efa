"""fvcore counting against hand-computed multiply-adds."""

import pytest
import torch
from torch import nn

from samplerbench.cost.flops import PipelineCost, count_flops
from samplerbench.models.encoders import FrameClassifier, ModelConfig


def test_conv_and_linear_hand_counted():
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
    # output 8 x 16 x 16, each 3*3*3 multiply-adds
    assert count_flops(conv, torch.zeros(1, 3, 32, 32)).flops == 8 * 16 * 16 * 27
    lin = nn.Linear(128, 10)
    assert count_flops(lin, torch.zeros(4, 128)).flops == 4 * 128 * 10


def test_pipeline_cost_scales_with_frames():
    model = FrameClassifier(ModelConfig(), 10)
    cost = PipelineCost(model, (3, 64, 64))
    e1, h1 = cost.encoder_head(1)
    e4, h4 = cost.encoder_head(4)
    assert e4.flops == 4 * e1.flops
    assert h4.flops == h1.flops == 128 * 10  # max over frames, then one fc (the max is not a multiply-add)
    avg = PipelineCost(FrameClassifier(ModelConfig(consensus="avg"), 10), (3, 64, 64))
    assert avg.encoder_head(4)[1].flops == 4 * 128 * 10  # fc on every frame, then the mean
    # hand count of the conv layers of FrameCNN at 64x64 (w=16, dim=128)
    convs = [(3, 16, 64), (16, 32, 32), (32, 64, 16), (64, 128, 8)]
    conv_macs = sum(cin * cout * 9 * s * s for cin, cout, s in convs)
    assert conv_macs <= e1.flops < conv_macs * 1.05  # BN/pool are small extras


def test_head_on_cached_features_equals_the_model_on_the_selection(tiny_root):
    """The runner's shortcut: encode the candidates once, apply the head to a selection's features."""
    import numpy as np

    from samplerbench.data.synth import load_split
    from samplerbench.data.video import read_frames
    from samplerbench.sampling import candidate_pool

    rec = load_split(tiny_root, "test").records[0]
    cands = candidate_pool(rec.num_frames, 8)
    for consensus in ("max", "avg"):
        model = FrameClassifier(ModelConfig(consensus=consensus), 10).eval()
        with torch.inference_mode():
            feats = model.features(read_frames(rec.path, cands))
            sel = np.array([1, 4, 6])
            shortcut = model.head(feats[torch.from_numpy(sel)][None])
            direct = model(read_frames(rec.path, cands[sel])[None])
        assert torch.allclose(shortcut, direct, atol=1e-5)


def test_attention_is_counted_and_matches_hand_count_and_ptflops():
    """fvcore drops scaled_dot_product_attention; our handle counts Q K^T and A V."""
    from samplerbench.cost.flops import count_flops_ptflops
    from samplerbench.models.archs import Attention

    n, d, heads = 10, 32, 4
    attn = Attention(d, heads).eval()
    x = torch.zeros(1, n, d)
    hand = 3 * n * d * d + n * d * d + 2 * n * n * d  # qkv, proj, QK^T and AV over all heads
    counted = count_flops(attn, x)
    assert counted.flops == hand
    assert "aten::scaled_dot_product_attention" not in counted.unsupported
    # an independent counter (aten ops, math SDPA); its addmm also counts the bias additions
    assert count_flops_ptflops(attn, x) == hand + n * (3 * d + d)


def test_sdpa_handle_with_distinct_lengths():
    class Cross(nn.Module):
        def forward(self, q, k, v):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    q, k, v = torch.zeros(2, 3, 5, 8), torch.zeros(2, 3, 7, 8), torch.zeros(2, 3, 7, 6)
    assert count_flops(Cross(), q, k, v).flops == 2 * 3 * 5 * 7 * (8 + 6)


def test_batch_norm_is_what_separates_fvcore_from_ptflops():
    """fvcore counts eval batch norm (one FLOP per element); ptflops' aten backend does not."""
    from samplerbench.cost.flops import count_flops_ptflops

    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)).eval()
    x = torch.zeros(1, 3, 8, 8)
    fc = count_flops(net, x)
    conv = 4 * 8 * 8 * 27
    assert count_flops_ptflops(net, x) == conv
    assert fc.by_operator["conv"] == conv and fc.flops == conv + fc.by_operator["batch_norm"] > conv


def test_throughput_backs_off_the_batch_on_out_of_memory():
    from samplerbench.cost.flops import ThroughputConfig, model_videos_per_s

    seen = []

    class Greedy(nn.Module):
        def forward(self, x):
            seen.append(x.shape[0])
            if x.shape[0] > 2:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return x.float().mean()

    out = model_videos_per_s(Greedy(), 4, (3, 8, 8), torch.device("cpu"), ThroughputConfig(batch=8, min_time=0.01))
    assert out["batch"] == 2 and out["videos_per_s"] > 0 and seen[:2] == [8, 4]

    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):  # only out-of-memory is retried
        model_videos_per_s(Broken(), 4, (3, 8, 8), torch.device("cpu"), ThroughputConfig(batch=8))
    with pytest.raises(ValueError, match="CUDA"):
        model_videos_per_s(Greedy(), 4, (3, 8, 8), torch.device("cpu"), ThroughputConfig(precision="bf16"))


def test_uncalled_submodules_are_reported():
    class Half(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.skipped = nn.Linear(3, 3), nn.Linear(3, 3)

        def forward(self, x):
            return self.used(x)

    fc = count_flops(Half(), torch.zeros(1, 3))
    assert fc.flops == 9 and fc.uncalled == ["skipped"]
