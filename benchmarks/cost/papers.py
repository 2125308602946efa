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
    CostConfig("mmsampler-policy-16-11", "clip-vit-b32", 16, 11, sampler="mmsampler",
               note="mmSampler, MSR-VTT: MobileNetV2 + policy on 16 candidates, CLIP on about 11 kept"),
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


#: a suite's ``[model] encoder`` -> the preset's name for the same architecture
RUNTIME_ENCODERS = {"torchvision:resnet50": "resnet50", "open_clip:ViT-B-32": "clip-vit-b32",
                    "open_clip:ViT-B-16": "clip-vit-b16", "torchvision:mobilenet_v2": "mobilenet_v2",
                    "timm:vit_base_patch16_224": "vit-b16-tokens"}


@dataclass(frozen=True)
class ModuleCheck:
    """One module of a paper suite's run against the module its cost preset counts: parameters
    (position tables sized by the run's own sequence length left out, named in ``note``) and
    fvcore FLOPs per video at the preset's input shapes."""

    role: str
    run_params: int
    preset_params: int
    run_gflops: float
    preset_gflops: float
    note: str = ""
    #: False for a pretrained reader: its file also holds parts the preset leaves out (a text
    #: tower, an ImageNet classifier layer), so the image path's FLOPs are what is compared
    compare_params: bool = True

    @property
    def same(self) -> bool:
        params = self.run_params == self.preset_params or not self.compare_params
        return params and abs(self.run_gflops - self.preset_gflops) <= 1e-6 + 1e-3 * self.preset_gflops


def _params(module: torch.nn.Module, skip: tuple[str, ...] = ()) -> int:
    return sum(p.numel() for n, p in module.named_parameters() if n.split(".")[-1] not in skip)


def check_suite(suite, num_classes: int = 400) -> list[ModuleCheck]:
    """The modules a paper suite's run instantiates (its reader's encoder, its paper method's
    modules, from the suite's own parameters, with random weights) against those its
    ``[paper] preset`` counts: what makes the suite's quality and cost the paper's. Raises
    ValueError for a suite without a preset."""
    from samplerbench.registry import METHODS

    name = suite.paper.get("preset")
    if name not in PRESETS:
        raise ValueError(f"{suite.source or suite.name}: no [paper] preset to check against")
    cfg = PRESETS[name]
    with torch.random.fork_rng(devices=[]):
        out = [_encoder_check(suite, cfg, num_classes)]
        spec = next(m for m in (*suite.methods, *(r.method for r in suite.retrieval_methods))
                    if m.display == suite.paper["method"])
        sampler = METHODS.get(spec.name)(**spec.params)
        if sampler.learns:
            dim = 512 if cfg.sllm_head else 128
            kwargs = {"dim": dim} if spec.name in ("sllm", "mmsampler") else {}
            sampler.random_init(cfg.candidates, num_classes, **kwargs)
        out += _sampler_checks(sampler.cost_modules(), cfg)
    return out


def _encoder_check(suite, cfg: CostConfig, num_classes: int) -> ModuleCheck:
    encoder = suite.model.get("encoder", "")
    if cfg.encoder == "vit-b16-tokens":  # K-center's reader: the token ViT over the selected tokens
        from samplerbench.models.pretrained import build_pretrained
        from samplerbench.models.tokens import PretrainedTokenViT, TokenGrid

        vit = suite.token_model.get("vit", "")
        net = build_pretrained(vit, load=False).net
        grid = TokenGrid(cfg.candidates, 14, 14)
        run = PretrainedTokenViT(net, grid, num_classes)
        k = cfg.frames * 196
        run_flops = (count_flops(net.patch_embed.proj, torch.zeros(k, 3, 16, 16)).flops
                     + count_flops(run, torch.zeros(1, k, 768), torch.zeros(1, k, dtype=torch.long),
                                   expect_uncalled=True).flops)
        preset = archs.TokenViT(positions=cfg.candidates * 196, num_classes=num_classes)
        pre_flops = count_flops(preset, torch.zeros(1, k, 768), torch.zeros(1, k, dtype=torch.long)).flops
        run_params = sum(_params(m) for m in (net.patch_embed, run.blocks, run.norm, run.fc))
        pre_params = sum(_params(m) for m in (preset.embed, preset.transformer, preset.norm, preset.fc))
        return ModuleCheck(f"token ViT on {k} tokens ({vit})", run_params, pre_params, run_flops / 1e9,
                           pre_flops / 1e9, "class token and position tables left out (pretrained spatial + learned "
                           "time vs one learned table)")
    if RUNTIME_ENCODERS.get(encoder) != cfg.encoder:
        return ModuleCheck(f"reader {encoder or '(none)'} vs {cfg.encoder}", -1, 0, 0.0, 0.0, "another architecture")
    build, _ = ENCODERS[cfg.encoder]
    from samplerbench.models.pretrained import build_pretrained

    run = build_pretrained(encoder, load=False).eval()
    x = torch.zeros(1, 3, cfg.resolution, cfg.resolution)
    return ModuleCheck(f"reader {encoder} x {cfg.frames}", _params(run), _params(build()),
                       count_flops(run, x, expect_uncalled=True).flops * cfg.frames / 1e9,
                       count_flops(build(), x).flops * cfg.frames / 1e9,
                       "image path's FLOPs compared (the weights file holds more than the preset counts)",
                       compare_params=False)


def _sampler_checks(modules: dict, cfg: CostConfig) -> list[ModuleCheck]:
    T, r = cfg.candidates, cfg.sampler_resolution
    out = []
    if cfg.sampler == "sosampler":
        run = modules["scorer"]
        out.append(ModuleCheck(f"scorer on {T} candidates @{r}", _params(run), _params(archs.Scorer()),
                               count_flops(run, torch.zeros(1, T, 3, r, r, dtype=torch.uint8)).flops / 1e9,
                               count_flops(archs.Scorer(), torch.zeros(1, 3, r, r)).flops * T / 1e9))
    elif cfg.sampler == "mmsampler":
        light, policy = modules["light encoder"], modules["policy"]
        ref = archs.mobilenet_v2_features()
        out.append(ModuleCheck(f"light encoder on {T} candidates @{r}", _params(light), _params(ref),
                               count_flops(light, torch.zeros(T, 3, r, r, dtype=torch.uint8),
                                           expect_uncalled=True).flops / 1e9,
                               count_flops(ref, torch.zeros(1, 3, r, r)).flops * T / 1e9))
        ref = archs.MMSamplerPolicy(frames=T)
        x = torch.zeros(1, T, ref.proj.in_features)
        out.append(ModuleCheck("policy", _params(policy), _params(ref),
                               count_flops(policy, torch.zeros(1, T, policy.proj.in_features)).flops / 1e9,
                               count_flops(ref, x).flops / 1e9))
    if cfg.restorer or cfg.sllm_head:
        _, pairs, seq = archs.sllm_layout(T, "restore")
        if cfg.restorer:
            ref = archs.SLLMRestorer()
            run = modules.get("restorer")
            x = torch.zeros(1, pairs, 2, 512)
            out.append(ModuleCheck(f"restorer on {pairs} pairs", _params(run) if run is not None else -1, _params(ref),
                                   count_flops(run, x).flops / 1e9 if run is not None else 0.0,
                                   count_flops(ref, x).flops / 1e9))
        if cfg.sllm_head:
            ref, run = archs.SLLMHead(frames=T), modules["head"]
            x = torch.zeros(1, seq, 512)
            out.append(ModuleCheck(f"temporal head on {seq} features", _params(run, ("pos",)), _params(ref, ("pos",)),
                                   count_flops(run, x).flops / 1e9, count_flops(ref, x).flops / 1e9,
                                   "position table left out (sized by the run's longest sequence)"))
    return out
