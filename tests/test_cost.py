"""fvcore counting against hand-computed multiply-adds."""

import torch
from torch import nn

from samplerbench.cost import PipelineCost, count_flops
from samplerbench.models import FrameClassifier, ModelConfig


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

    from samplerbench.datasets.synth import load_split
    from samplerbench.sampling import candidate_pool
    from samplerbench.video import read_frames

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
