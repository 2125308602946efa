"""The instance segmentation model of EVFR's experiment, scaled to the embedded dataset and to a
CPU: a small U-Net predicting a category per pixel (background + the COCO categories), whose
connected components become scored instances (:func:`coco_metrics.instances_from_probs`).

EVFR trains a Mask R-CNN-class model on BDD100K; what its figures measure is how the training
frames were chosen, so any model that learns masks from the selected frames serves, provided
every selection gets the same model, the same initialisation (per seed) and the same number of
optimisation steps. Training is iteration-based (as detectron2's schedules are): ``iterations``
steps of ``batch`` frames drawn with replacement from the selected set, so S10 is not also
trained ten times shorter than S1, and the comparison is about the frames, not the compute.
Known limit of the design: two touching objects of one category merge into one instance.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from samplerbench.devices import device_of, rng_devices
from samplerbench.metrics.coco import instances_from_probs
from samplerbench.models.encoders import normalise
from samplerbench.seeding import derive_seed
from samplerbench.training.fit import FitConfig, fit


@dataclass(frozen=True)
class SegConfig:
    width: int = 16  # channels of the first stage (x2 per stage, three stages)
    stem_stride: int = 2  # 2: the network works at half resolution (see TinyUNet)
    iterations: int = 200
    batch: int = 16
    lr: float = 1e-2
    weight_decay: float = 1e-4
    min_area: int = 4  # smaller predicted components are dropped (pixels)
    hflip: bool = True  # horizontal flip augmentation (every category is left-right symmetric)
    balance: bool = True  # median-frequency class weights in the loss (see class_weights)


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TinyUNet(nn.Module):
    """Three-stage U-Net: uint8 frames (B, 3, H, W) -> class logits (B, C + 1, H, W). With
    ``stem_stride`` 2 the first convolution halves the resolution and the logits are upsampled
    bilinearly at the end: a quarter of the work (on 2 CPU cores, 38 ms a training step of 16
    frames at 64x64 instead of 150 ms at width 16), at some cost in mask precision, paid by
    every selection alike. Runs in channels-last memory layout (2x faster inference on CPU)."""

    def __init__(self, num_classes: int, width: int = 16, stem_stride: int = 2):
        super().__init__()
        c = width
        self.stem_stride = stem_stride
        self.enc1, self.enc2, self.enc3 = _block(3, c, stem_stride), _block(c, 2 * c), _block(2 * c, 4 * c)
        self.dec2, self.dec1 = _block(6 * c, 2 * c), _block(3 * c, c)
        self.head = nn.Conv2d(c, num_classes + 1, 1)
        self.to(memory_format=torch.channels_last)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = normalise(frames).contiguous(memory_format=torch.channels_last)
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([F.interpolate(e3, size=e2.shape[-2:], mode="nearest"), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, size=e1.shape[-2:], mode="nearest"), e1], 1))
        out = self.head(d1)
        if out.shape[-2:] != frames.shape[-2:]:
            out = F.interpolate(out, size=frames.shape[-2:], mode="bilinear", align_corners=False)
        return out


def train_segmenter(frames: torch.Tensor, targets: torch.Tensor, num_classes: int, cfg: SegConfig,
                    init_seed: int, order_seed: object, device: torch.device | str = "cpu") -> tuple[TinyUNet, dict]:
    """Train a fresh model on ``device`` from uint8 frames (N, 3, H, W) and category maps (N, H, W)
    (they stay where they are; each batch moves). The initialisation comes from ``init_seed``
    (shared by the selections compared at one seed; built on the CPU, so the same on every
    device) and the batches from ``order_seed``; the global torch RNG is left untouched."""
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=rng_devices(device)):
        torch.manual_seed(derive_seed("seg-init", init_seed))
        model = TinyUNet(num_classes, cfg.width, cfg.stem_stride).to(device)
    losses = []
    if cfg.iterations > 0:  # 0: the initial weights (the chance level of a seed)
        losses = _train(model, frames, targets.long(), cfg, order_seed)
    model.eval()
    return model, {"seg": asdict(cfg), "train_frames": len(frames),
                   "final_loss": float(np.mean(losses[-10:])) if losses else float("nan"),
                   "train_s": time.perf_counter() - t0}


def _train(model: TinyUNet, frames: torch.Tensor, targets: torch.Tensor, cfg: SegConfig, order_seed) -> list[float]:
    """``cfg.iterations`` steps of the one training loop, batches drawn with replacement from
    the (seed, cell) generator, which also draws the flips."""
    num_labels = model.head.out_channels
    weight = class_weights(targets, num_labels) if cfg.balance else None
    losses = []

    def batch_loss(m, ids, epoch, step, rng):
        ids = torch.from_numpy(ids)
        x, y = frames[ids].to(device_of(m)), targets[ids].to(device_of(m))
        if cfg.hflip:
            flip = torch.from_numpy(rng.random(cfg.batch) < 0.5).to(x.device)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            y = torch.where(flip[:, None, None], y.flip(-1), y)
        loss = F.cross_entropy(m(x), y, weight=None if weight is None else weight.to(x.device))
        losses.append(loss.item())
        return loss

    fcfg = FitConfig(epochs=1, batch=cfg.batch, lr=cfg.lr, weight_decay=cfg.weight_decay, warmup=0.15,
                     draw="replacement", steps=cfg.iterations)
    fit(model, fcfg, len(frames), batch_loss, None, "segmentation", progress=False,
        order_rng=lambda epoch: np.random.Generator(np.random.PCG64(derive_seed("seg-order", order_seed))))
    return losses


def class_weights(targets: torch.Tensor, num_labels: int, power: float = 0.5) -> torch.Tensor:
    """Median frequency balancing (Eigen and Fergus, ICCV 2015), softened: weight_c =
    (median(freq) / freq_c) ** power over the classes present in the training frames (absent
    ones weigh 0); power 1 (the original) made training unstable here. Objects
    cover ~5% of the pixels and each event shape ~0.2%: unweighted, the model never predicts
    an event shape."""
    counts = torch.bincount(targets.flatten().long(), minlength=num_labels).double()
    present = counts > 0
    freq = counts / counts.sum()
    w = torch.zeros(num_labels, dtype=torch.float64)
    w[present] = (freq[present].median() / freq[present]) ** power
    return w.float()


@torch.inference_mode()
def predict_instances(model: TinyUNet, frames: torch.Tensor, image_ids: list[int], min_area: int = 4,
                      chunk: int = 256) -> list[dict]:
    """COCO result records (RLE mask, category, score) for each frame (N, 3, H, W)."""
    from samplerbench.data.instances import encode

    out, dev = [], device_of(model)
    for start in range(0, len(frames), chunk):
        probs = model(frames[start:start + chunk].to(dev)).softmax(1).float().cpu().numpy()
        for p, image_id in zip(probs, image_ids[start:start + chunk], strict=True):
            for cat, mask, score in instances_from_probs(p, min_area):
                out.append({"image_id": image_id, "category_id": cat, "segmentation": encode(mask), "score": score})
    return out
