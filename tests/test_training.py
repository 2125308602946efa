"""Frame pretraining: learns from event frames only, and is skipped without event annotations;
the training loop's schedule at its edges."""

from pathlib import Path

import numpy as np
import pytest
import torch

from samplerbench.data.annotations import Event, VideoRecord, VideoSplit
from samplerbench.models.classifier import TrainConfig, _pretrain
from samplerbench.models.encoders import FrameClassifier, ModelConfig


def _split(with_events: bool) -> tuple[VideoSplit, list[torch.Tensor]]:
    """4 classes; each video is noise except frames 4..8, which carry a bright square in the
    label's quadrant. Frames outside the event would teach nothing."""
    g = torch.Generator().manual_seed(0)
    records, frames = [], []
    for i in range(24):
        label = i % 4
        v = torch.randint(0, 60, (12, 3, 32, 32), dtype=torch.uint8, generator=g)
        y, x = divmod(label, 2)
        v[4:8, :, 16 * y + 4:16 * y + 12, 16 * x + 4:16 * x + 12] = 255
        frames.append(v)
        events = (Event(label, 4, 8),) if with_events else ()
        records.append(VideoRecord(f"v{i}", Path(f"v{i}.mp4"), 12, (label,), events))
    return VideoSplit("fake", "train", records, ["a", "b", "c", "d"], manifest_hash="fake-frames"), frames


def test_pretraining_learns_event_frames():
    split, frames = _split(True)
    torch.manual_seed(0)
    model = FrameClassifier(ModelConfig(width=8, dim=32), 4)
    out = _pretrain(model, split, frames, TrainConfig(pretrain_steps=150, pretrain_batch=16), progress=False)
    assert out["steps"] == 150 and out["frame_top1"] > 0.9
    with torch.inference_mode():
        model.eval()
        pred = model.frame_logits(torch.stack([f[5] for f in frames])).argmax(1)
    assert (pred == torch.tensor([r.labels[0] for r in split.records])).float().mean() > 0.9


def test_pretraining_is_skipped_without_events_or_steps():
    model = FrameClassifier(ModelConfig(width=8, dim=32), 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    split, frames = _split(False)
    assert _pretrain(model, split, frames, TrainConfig(pretrain_steps=10), progress=False) == {}
    split, frames = _split(True)
    assert _pretrain(model, split, frames, TrainConfig(pretrain_steps=0), progress=False) == {}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("steps, warmup", [(10, 0.1), (20, 0.05), (1, 1.0)])
def test_a_warmup_of_exactly_one_step_trains(steps, warmup):
    """OneCycleLR divides by (warm-up steps - 1): exactly one warm-up step raised ZeroDivisionError
    (a 10-step pretraining at the default 0.1 warm-up did)."""
    from samplerbench.training.fit import FitConfig, fit

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    x, y = torch.randn(16, 3), torch.randn(16, 1)
    cfg = FitConfig(epochs=1, batch=4, lr=0.1, warmup=warmup, draw="replacement", steps=steps)
    record = fit(model, cfg, 16, lambda m, ids, *_: ((m(x[ids]) - y[ids]) ** 2).mean(), None, "fit", progress=False)
    assert record["epochs_run"] == 1 and np.isfinite(record["history"][-1]["loss"])
