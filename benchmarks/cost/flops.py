"""FLOP counting and timing of the pipeline's modules.

"GFLOPs" follows fvcore (and the papers' tables): one multiply-add counts as one FLOP. Modules
are counted by fvcore at the real input shape; ops fvcore has no handle for are collected and
reported with every count instead of being silently dropped.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import resource
import time
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from samplerbench.devices import device_of

log = logging.getLogger(__name__)


@dataclass
class FlopCount:
    """FLOPs of one module call (fvcore convention) and the ops fvcore could not count."""

    flops: float
    unsupported: dict[str, int] = field(default_factory=dict)
    by_operator: dict[str, float] = field(default_factory=dict)
    uncalled: list[str] = field(default_factory=list)  # submodules the traced call never ran

    @property
    def gflops(self) -> float:
        return self.flops / 1e9


def sdpa_flop_jit(inputs, outputs) -> int:
    """fvcore handle for ``aten::scaled_dot_product_attention`` (fvcore has none and drops it):
    Q K^T and A V, L*S*E + L*S*Ev multiply-adds per batch and head; softmax not counted, as
    fvcore counts no elementwise op."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(x) for x in inputs[:3])
    *batch, L, E = q
    S, Ev = k[-2], v[-1]
    n = 1
    for b in batch:
        n *= b
    return n * L * S * (E + Ev)


EXTRA_HANDLES = {"aten::scaled_dot_product_attention": sdpa_flop_jit}


def count_flops(module: nn.Module, *inputs: torch.Tensor, expect_uncalled: bool = False) -> FlopCount:
    """Count ``module(*inputs)`` with fvcore in eval mode (plus the handles fvcore lacks);
    unsupported ops are kept, not hidden. Submodules the forward never calls are warned about,
    unless the caller ``expect_uncalled`` (a branch that this input size skips)."""
    with warnings.catch_warnings():  # fvcore uses torch.jit, which warns that it is deprecated
        warnings.simplefilter("ignore", FutureWarning)
        from fvcore.nn import FlopCountAnalysis

    dev = device_of(module)  # the inputs go where the module is (FLOPs do not depend on the device)
    inputs = tuple(x.to(dev) for x in inputs)
    was_training = module.training
    was_fast = torch.backends.mha.get_fastpath_enabled()
    module.eval()
    # nn.MultiheadAttention's inference fast path is one fused op fvcore cannot see (open_clip's
    # ViT-B/32 counted 2.95 instead of 4.41 GFLOPs); off, the same math is traced as matmuls
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        fca = FlopCountAnalysis(module, inputs).set_op_handle(**EXTRA_HANDLES)
        fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            total = float(fca.total())
        unsupported = dict(fca.unsupported_ops())
        by_operator = {k: float(v) for k, v in fca.by_operator().items()}
        uncalled = sorted(fca.uncalled_modules())
    finally:
        module.train(was_training)
        torch.backends.mha.set_fastpath_enabled(was_fast)
    if unsupported:
        log.info("fvcore could not count %s in %s", unsupported, type(module).__name__)
    if uncalled and not expect_uncalled:
        log.warning("%s: %d submodule(s) never called in the counted forward (%s%s)", type(module).__name__,
                    len(uncalled), ", ".join(uncalled[:3]), ", ..." if len(uncalled) > 3 else "")
    return FlopCount(total, unsupported, by_operator, uncalled)


def count_flops_ptflops(module: nn.Module, *inputs: torch.Tensor) -> float:
    """The cross-check: ptflops' aten backend (mm, matmul, addmm, bmm, convolution MACs), with
    attention forced onto the math kernel so that its matmuls are visible to it."""
    from ptflops import get_model_complexity_info
    from torch.nn.attention import SDPBackend, sdpa_kernel

    inputs = tuple(x.to(device_of(module)) for x in inputs)

    class _Call(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = module

        def forward(self, _dummy=None):
            return self.inner(*inputs)

    was_training = module.training
    was_fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # nn.MultiheadAttention as matmuls (see count_flops)
    try:
        with sdpa_kernel(SDPBackend.MATH), torch.no_grad():  # inference_mode hides aten.linear from it
            macs, _ = get_model_complexity_info(_Call(), (1,), input_constructor=lambda _: {}, as_strings=False,
                                                print_per_layer_stat=False, backend="aten", verbose=False)
    finally:
        module.train(was_training)
        torch.backends.mha.set_fastpath_enabled(was_fast)
    if macs is None:
        raise RuntimeError(f"ptflops could not count {type(module).__name__}")
    return float(macs)


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
                feats = torch.zeros((1, n, self.model.encoder.dim))
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


@dataclass(frozen=True)
class ThroughputConfig:
    """How model-only throughput is measured (recorded with every timing)."""

    batch: int = 8  # videos per forward; halved on out-of-memory
    precision: str = "fp32"  # fp32, or bf16 / fp16 autocast (CUDA)
    channels_last: bool = False
    compile: bool = False  # torch.compile the model first
    warmup: int = 3
    min_time: float = 0.3  # seconds of timed iterations, at least 3 of them

    def __post_init__(self):
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be fp32, bf16 or fp16, not {self.precision!r}")


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def model_videos_per_s(model: nn.Module, n: int, frame_shape, device: torch.device,
                       cfg: ThroughputConfig = ThroughputConfig()) -> dict:
    """Model-only throughput as timm's benchmark measures it: synthetic uint8 input already on
    the device, ``inference_mode``, warm-up, synchronise before reading the clock. Backs off the
    batch size on out-of-memory. Returns videos/s and the settings it ran with."""
    if n == 0:
        return {"videos_per_s": float("inf"), "batch": cfg.batch, "precision": cfg.precision}
    if cfg.precision != "fp32" and device.type != "cuda":
        raise ValueError(f"{cfg.precision} autocast timing needs a CUDA device, not {device}")
    run = copy.deepcopy(model) if cfg.channels_last or cfg.compile else model  # leave the caller's model as it is
    if cfg.channels_last:
        run = run.to(memory_format=torch.channels_last)
    if cfg.compile:
        run = torch.compile(run)
    batch = cfg.batch
    while True:
        try:
            return {"videos_per_s": _time_forward(run, n, frame_shape, device, cfg, batch), "batch": batch,
                    "precision": cfg.precision, "channels_last": cfg.channels_last, "compile": cfg.compile}
        except (RuntimeError, torch.cuda.OutOfMemoryError) as e:
            if not _is_oom(e) or batch == 1:
                raise
            log.warning("out of memory at batch %d; retrying at %d", batch, batch // 2)
            batch //= 2
            if device.type == "cuda":
                torch.cuda.empty_cache()


@torch.inference_mode()
def _time_forward(model, n, frame_shape, device, cfg: ThroughputConfig, batch: int) -> float:
    x = torch.randint(0, 256, (batch, n, *frame_shape), dtype=torch.uint8, device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
    model.eval()
    # no autocast context at fp32: not every device type has one (only CUDA runs bf16/fp16 here)
    with torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext():
        for _ in range(cfg.warmup):
            model(x)
        sync(device)
        iters, t0 = 0, time.perf_counter()
        while True:
            model(x)
            iters += 1
            sync(device)
            elapsed = time.perf_counter() - t0
            if elapsed >= cfg.min_time and iters >= 3:
                return batch * iters / elapsed
