"""FLOP counting and timing of the pipeline's modules.

"GFLOPs" follows fvcore (and the papers' tables): one multiply-add counts as one FLOP. Modules
are counted by fvcore at the real input shape; ops fvcore has no handle for are collected and
reported with every count instead of being silently dropped.
"""

from __future__ import annotations

import logging
import resource
import time
from dataclasses import dataclass, field

import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass
class FlopCount:
    """FLOPs of one module call (fvcore convention) and the ops fvcore could not count."""

    flops: float
    unsupported: dict[str, int] = field(default_factory=dict)

    @property
    def gflops(self) -> float:
        return self.flops / 1e9


def count_flops(module: nn.Module, *inputs: torch.Tensor) -> FlopCount:
    """Count ``module(*inputs)`` with fvcore in eval mode; unsupported ops are kept, not hidden."""
    from fvcore.nn import FlopCountAnalysis

    was_training = module.training
    module.eval()
    try:
        fca = FlopCountAnalysis(module, inputs)
        fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        total = float(fca.total())
        unsupported = dict(fca.unsupported_ops())
    finally:
        module.train(was_training)
    if unsupported:
        log.info("fvcore could not count %s in %s", unsupported, type(module).__name__)
    return FlopCount(total, unsupported)


class PipelineCost:
    """Per-video FLOPs of the classifier on n frames, counted once per n (encoder, head apart)."""

    def __init__(self, model, frame_shape: tuple[int, int, int]):
        self.model = model
        self.frame_shape = frame_shape
        self._cache: dict[int, tuple[FlopCount, FlopCount]] = {}

    def encoder_head(self, n: int) -> tuple[FlopCount, FlopCount]:
        if n not in self._cache:
            if n == 0:
                self._cache[n] = (FlopCount(0.0), FlopCount(0.0))
            else:
                x = torch.zeros((n, *self.frame_shape))
                enc = count_flops(self.model.encoder, x)
                feats = torch.zeros((1, n, self.model.cfg.dim))
                head = count_flops(self.model.head, feats)
                self._cache[n] = (enc, head)
        return self._cache[n]

    def per_frame_classifier_flops(self) -> float:
        """FLOPs to classify one frame alone (what an observation of ``frame_probs`` costs per frame)."""
        enc, head = self.encoder_head(1)
        return enc.flops + head.flops

    def unsupported(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for enc, head in self._cache.values():
            for k, v in {**enc.unsupported, **head.unsupported}.items():
                out[k] = max(out.get(k, 0), v)
        return out


def peak_memory_mib(device: torch.device) -> float:
    """CUDA: max allocated since the last reset; CPU: the process's peak RSS (monotone)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def model_videos_per_s(model: nn.Module, n: int, frame_shape, device: torch.device, batch: int = 8,
                       warmup: int = 3, min_time: float = 0.3) -> float:
    """Model-only throughput as timm's benchmark measures it: synthetic uint8 input already on
    the device, warm-up, synchronise before reading the clock."""
    if n == 0:
        return float("inf")
    x = torch.randint(0, 256, (batch, n, *frame_shape), dtype=torch.uint8, device=device)
    model.eval()
    for _ in range(warmup):
        model(x)
    sync(device)
    iters, t0 = 0, time.perf_counter()
    while True:
        model(x)
        iters += 1
        sync(device)
        elapsed = time.perf_counter() - t0
        if elapsed >= min_time and iters >= 3:
            return batch * iters / elapsed
