"""Per-video GFLOPs of the papers' configurations, counted from the modules (``samplerbench cost``).

A configuration names the encoder and its resolution, the candidates T, the frames encoded N,
the sampler, and SLLM's restorer and head where used. Each component is built with random
weights (``archs.py``) and counted by fvcore at its real input shape, once per call, times the
calls per video; the sampler's non-module work (K-center distances) is counted analytically.
ptflops cross-checks every module; a disagreement above 2% is explained by fvcore's per-operator
breakdown (ops ptflops does not count) or flagged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from samplerbench.cost.flops import count_flops, count_flops_ptflops
from samplerbench.kernels.farthest import farthest_point_macs, pairwise_distance_macs
from samplerbench.models import archs as archs

# Operators fvcore counts and ptflops' aten backend does not (it counts mm, bmm, matmul, addmm
# and convolution only): their share explains a disagreement between the two.
NOT_IN_PTFLOPS = ("batch_norm", "layer_norm", "group_norm", "instance_norm", "adaptive_avg_pool2d",
                  "upsample_nearest2d", "upsample_bilinear2d")
TOLERANCE = 0.02

ENCODERS: dict[str, tuple[Callable[[], torch.nn.Module], int]] = {
    # name -> (builder, default resolution)
    "clip-vit-b32": (lambda: archs.CLIPVisual(patch=32), 224),
    "clip-vit-b16": (lambda: archs.CLIPVisual(patch=16), 224),
    "resnet50": (archs.resnet50, 224),
    "mobilenet_v2": (archs.mobilenet_v2_features, 224),
}


@dataclass(frozen=True)
class CostConfig:
    """One paper configuration. ``frames``: frames encoded per video (for ``vit-b16-tokens``,
    frame-equivalents of 196 tokens). ``sampler``: none, sosampler, mmsampler or kcenter."""

    name: str
    encoder: str
    candidates: int
    frames: int
    resolution: int = 224
    sampler: str = "none"
    sampler_resolution: int = 224
    restorer: bool = False
    sllm_head: bool = False
    note: str = ""


PRESETS: dict[str, CostConfig] = {c.name: c for c in [
    CostConfig("mmsampler-nopolicy-32", "clip-vit-b32", 32, 32,
               note="mmSampler NoPolicy, ActivityNet/DiDeMo: CLIP ViT-B/32 on 32 uniform frames"),
    CostConfig("mmsampler-nopolicy-16", "clip-vit-b32", 16, 16,
               note="mmSampler NoPolicy, MSR-VTT: CLIP ViT-B/32 on 16 uniform frames"),
    CostConfig("mmsampler-policy-32-16", "clip-vit-b32", 32, 16, sampler="mmsampler",
               note="mmSampler: MobileNetV2 + policy on 32 candidates, CLIP on 16 kept"),
    CostConfig("sosampler-anet", "resnet50", 10, 6, sampler="sosampler", sampler_resolution=128,
               note="SOSampler, ActivityNet: MobileNetV2 scorer at 128 on 10, ResNet-50 on 6"),
    CostConfig("kcenter-vitb16", "vit-b16-tokens", 32, 8, sampler="kcenter",
               note="K-centered patch sampling: 1568 of 6272 tokens, ViT-B/16 joint attention"),
    CostConfig("sllm-16-8", "clip-vit-b32", 16, 8, restorer=True, sllm_head=True,
               note="SLLM, HMDB51: CLIP ViT-B/32 on 8 of 16 frames, 7 restored between them, temporal head on 15"),
]}


@dataclass
class Component:
    """One module (or analytic term) of a configuration: its count per call and calls per video."""

    name: str
    calls: int
    fvcore: float  # FLOPs per call
    ptflops: float | None = None
    explained: float | None = None  # fvcore FLOPs of ops ptflops does not count
    unsupported: dict = field(default_factory=dict)
    role: str = "encoder"
    note: str = ""

    @property
    def per_video(self) -> float:
        return self.fvcore * self.calls

    @property
    def disagreement(self) -> float | None:
        if self.ptflops is None or self.fvcore == 0:
            return None
        return (self.ptflops - self.fvcore) / self.fvcore

    @property
    def residual(self) -> float | None:
        """Disagreement left after removing the ops ptflops does not count."""
        if self.ptflops is None or self.fvcore == 0:
            return None
        return (self.ptflops - (self.fvcore - (self.explained or 0.0))) / self.fvcore

    def verdict(self) -> str:
        d = self.disagreement
        if d is None:
            return self.note or "analytic"
        if abs(d) <= TOLERANCE:
            return "agree"
        r = self.residual
        if r is not None and abs(r) <= TOLERANCE:
            return f"fvcore also counts norms/pools ({100 * (self.explained or 0) / self.fvcore:.1f}%)"
        return f"DISAGREE ({100 * d:+.1f}%, unexplained)"


def _count(name: str, module: torch.nn.Module, inputs: tuple, calls: int, role: str, cross_check: bool) -> Component:
    module.eval()
    fc = count_flops(module, *inputs)
    explained = sum(v for k, v in fc.by_operator.items() if k in NOT_IN_PTFLOPS)
    pt = count_flops_ptflops(module, *inputs) if cross_check else None
    return Component(name, calls, fc.flops, pt, explained, fc.unsupported, role)


def components(cfg: CostConfig, cross_check: bool = True) -> list[Component]:
    """Count every component of ``cfg`` (fvcore; ptflops as the cross-check). Modules get
    random weights (they do not change the counts) from a forked RNG: the caller's is untouched."""
    with torch.random.fork_rng(devices=[]):
        return _components(cfg, cross_check)


def _components(cfg: CostConfig, cross_check: bool) -> list[Component]:
    out: list[Component] = []
    T, N = cfg.candidates, cfg.frames
    if cfg.sampler == "sosampler":
        r = cfg.sampler_resolution
        out.append(_count(f"MobileNetV2 scorer @{r}", archs.Scorer(), (torch.zeros(1, 3, r, r),), T, "sampler",
                          cross_check))
    elif cfg.sampler == "mmsampler":
        r = cfg.sampler_resolution
        out.append(_count(f"MobileNetV2 features @{r}", archs.mobilenet_v2_features(), (torch.zeros(1, 3, r, r),),
                          T, "sampler", cross_check))
        out.append(_count("policy transformer + MLP", archs.MMSamplerPolicy(frames=T), (torch.zeros(1, T, 1280),),
                          1, "sampler", cross_check))
    elif cfg.sampler == "kcenter":
        n, k, d = T * 196, N * 196, 3 * 16 * 16 + 3
        out.append(Component("K-center distances (greedy)", 1, float(farthest_point_macs(n, k, d)), role="sampler",
                             note=f"analytic (k-1)*n*d; authors' full cdist n*n*d = "
                                  f"{pairwise_distance_macs(n, n, d) / 1e9:.2f} GFLOPs"))
    elif cfg.sampler != "none":
        raise ValueError(f"unknown sampler {cfg.sampler!r} (none, sosampler, mmsampler, kcenter)")

    if cfg.encoder == "vit-b16-tokens":
        k = N * 196
        out.append(_count(f"ViT-B/16 on {k} tokens", archs.TokenViT(positions=T * 196),
                          (torch.zeros(1, k, 768), torch.zeros(1, k, dtype=torch.long)), 1, "encoder", cross_check))
    else:
        if cfg.encoder not in ENCODERS and ":" not in cfg.encoder:
            raise ValueError(f"unknown encoder {cfg.encoder!r}; choose from {sorted(ENCODERS) + ['vit-b16-tokens']} "
                             f"or a runtime encoder <family>:<model>")
        build, _ = ENCODERS[cfg.encoder] if cfg.encoder in ENCODERS else (_runtime_encoder(cfg.encoder), 224)
        r = cfg.resolution
        out.append(_count(f"{cfg.encoder} @{r}", build(), (torch.zeros(1, 3, r, r),), N, "encoder", cross_check))
    # SLLM: of T sampled frames, N = ceil(T / 2) encoded, one restored between each adjacent
    # encoded pair (N - 1), the head on the 2N - 1 features: the runtime method's pairing
    _, pairs, seq = archs.sllm_layout(T, "restore")
    if cfg.restorer:
        out.append(_count(f"SLLM restorer ({pairs} pairs)", archs.SLLMRestorer(), (torch.zeros(1, pairs, 2, 512),), 1,
                          "restorer", cross_check))
    if cfg.sllm_head:
        out.append(_count(f"SLLM temporal head ({seq} features)", archs.SLLMHead(frames=T), (torch.zeros(1, seq, 512),),
                          1, "head", cross_check))
    return out


def _runtime_encoder(name: str) -> Callable[[], torch.nn.Module]:
    """The module a run reads frames with (``torchvision:resnet50``, ``open_clip:ViT-B-32``, ...):
    the cost of a configuration and of a run come from the same code."""
    from samplerbench.models.pretrained import build_pretrained

    return lambda: build_pretrained(name, load=False)


def table(cfg: CostConfig, comps: list[Component]) -> str:
    """A paper-style Markdown table of one configuration, components and total."""
    import pandas as pd

    rows = [{"component": c.name, "role": c.role, "calls/video": c.calls, "GFLOPs/call": c.fvcore / 1e9,
             "GFLOPs/video": c.per_video / 1e9,
             "ptflops GFLOPs/call": None if c.ptflops is None else c.ptflops / 1e9,
             "diff %": None if c.disagreement is None else 100 * c.disagreement, "check": c.verdict(),
             "not counted (fvcore)": ", ".join(sorted(k.removeprefix("aten::") for k in c.unsupported))}
            for c in comps]
    total = sum(c.per_video for c in comps)
    sampler = sum(c.per_video for c in comps if c.role == "sampler")
    rows.append({"component": "total", "role": "", "calls/video": None, "GFLOPs/call": None,
                 "GFLOPs/video": total / 1e9, "ptflops GFLOPs/call": None, "diff %": None,
                 "check": f"of which sampler {sampler / 1e9:.2f}", "not counted (fvcore)": ""})
    head = f"### {cfg.name}: {cfg.note}\n\nT={cfg.candidates} candidates, N={cfg.frames} encoded.\n\n"
    def fmt(v):
        return "" if v is None else f"{v:.3f}" if isinstance(v, float) else v

    return head + pd.DataFrame([{k: fmt(v) for k, v in r.items()} for r in rows]).to_markdown(index=False)
