"""Spatio-temporal patch tokens and the transformer that consumes a selection of them
(K-centered patch sampling, Park et al., ECCV 2022).

A video's T candidate frames are cut into ``patch`` x ``patch`` patches: token ``i`` is frame
``i // (rows * cols)``, row ``(i // cols) % rows``, column ``i % cols`` (t-major). A sampler
picks token ids; :class:`TokenClassifier` (a small ViT: linear patch embedding, a learned
position embedding looked up by each token's (t, h, w), joint attention, class token) reads
the selected patches. It is trained on the train split with the selections of the sampler it
will serve (:func:`train_token_classifier`), as the paper trains its transformer on K-center
tokens; the uniform-frame baseline trains the same ViT on its own tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from samplerbench.data.annotations import VideoSplit
from samplerbench.data.candidates import decode_pools
from samplerbench.data.parallel import decode_workers, in_order
from samplerbench.devices import device_of
from samplerbench.metrics.classification import one_hot
from samplerbench.models.archs import TokenViT
from samplerbench.sampling import Budget, Sampler, VideoView
from samplerbench.seeding import derive_seed, generator
from samplerbench.training.fit import FitConfig, cached_fit, default_order_rng, epoch_batches, fit

log = logging.getLogger(__name__)

#: The paper's coordinate ranges: t in [-4, 4], h and w in about [-2.83, 2.83].
T_RANGE, S_RANGE = 4.0, 2.83


@dataclass(frozen=True)
class TokenGrid:
    frames: int
    rows: int
    cols: int

    @classmethod
    def of(cls, pixels_shape, patch: int) -> TokenGrid:
        t, _, h, w = pixels_shape
        if h % patch or w % patch:
            raise ValueError(f"frames of {h}x{w} do not divide into {patch}x{patch} patches")
        return cls(t, h // patch, w // patch)

    @property
    def per_frame(self) -> int:
        return self.rows * self.cols

    @property
    def total(self) -> int:
        return self.frames * self.per_frame

    def frame_of(self, ids: np.ndarray) -> np.ndarray:
        return np.asarray(ids) // self.per_frame

    def cell_of(self, ids: np.ndarray) -> np.ndarray:
        return np.asarray(ids) % self.per_frame


def patchify(pixels: torch.Tensor, patch: int) -> torch.Tensor:
    """uint8 (T, C, H, W) -> uint8 (T * rows * cols, C * patch * patch), t-major, each patch
    laid out (c, y, x) like a patch-embedding convolution's weight."""
    t, c, h, w = pixels.shape
    x = pixels.reshape(t, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(t * (h // patch) * (w // patch), c * patch * patch)


def coordinates(grid: TokenGrid) -> torch.Tensor:
    """(n, 3) (t, h, w) per token, scaled to the paper's ranges."""
    def span(n, r):
        return torch.linspace(-r, r, n) if n > 1 else torch.zeros(1)

    t, h, w = torch.meshgrid(span(grid.frames, T_RANGE), span(grid.rows, S_RANGE), span(grid.cols, S_RANGE),
                             indexing="ij")
    return torch.stack([t, h, w], -1).reshape(-1, 3)


def normalise_patches(patches: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float, mean/std 0.5 (the paper's normalisation): values in [-1, 1]."""
    return (patches.float() / 255.0 - 0.5) / 0.5


def sampler_points(pixels: torch.Tensor, patch: int, w_t: float = 1.0, w_s: float = 1.0) -> tuple[torch.Tensor, TokenGrid]:
    """What K-center measures distances between: each token's normalised pixels and its
    (w_t t, w_s h, w_s w) coordinates: (n, C * patch^2 + 3)."""
    grid = TokenGrid.of(pixels.shape, patch)
    xyz = coordinates(grid) * torch.tensor([w_t, w_s, w_s])
    return torch.cat([normalise_patches(patchify(pixels, patch)), xyz], 1), grid


#: how a token ViT embeds its tokens (:attr:`TokenModelConfig.embed`)
EMBEDS = ("encoder-map", "encoder", "linear", "vit")


@dataclass(frozen=True)
class TokenModelConfig:
    patch: int = 16
    #: "encoder-map": the frozen frame encoder on each touched frame, a token its feature map
    #: over the patch; "encoder": the frozen frame encoder on each patch alone; "linear": ViT's
    #: own patch embedding, trained here; "vit": a pretrained ViT (below)
    embed: str = "encoder-map"
    width: int = 128
    depth: int = 4
    heads: int = 4
    epochs: int = 12
    batch: int = 32
    lr: float = 5e-4
    seed: int = 0
    #: embed = "vit": a pretrained timm ViT (the paper's ``timm:vit_base_patch16_224``) reads the
    #: tokens, its weights from ``vit_weights`` or $SAMPLERBENCH_WEIGHTS
    vit: str = ""
    vit_weights: str = ""

    def identity(self) -> dict:
        """The fields that make the model (the ViT fields count only when set: earlier keys stay)."""
        d = asdict(self)
        for k in ("vit", "vit_weights"):
            if not d[k]:
                del d[k]
        return d


class PretrainedTokenViT(nn.Module):
    """K-centered patch sampling's reader: a pretrained ViT over the K selected tokens (joint
    attention). Each token is its patch through the ViT's own patch embedding (pretrained, frozen),
    plus the pretrained spatial position embedding of its (h, w), resampled to the frames' patch
    grid, plus a learned temporal embedding of its t (zero at the start, as TimeSformer
    initialises its time embedding); the class token and the blocks are pretrained and frozen; the
    time embedding and a new linear head train."""

    def __init__(self, net: nn.Module, grid: TokenGrid, num_classes: int):
        super().__init__()
        from timm.layers import resample_abs_pos_embed

        dim = net.cls_token.shape[-1]
        with torch.no_grad():
            pos = resample_abs_pos_embed(net.pos_embed, new_size=[grid.rows, grid.cols], num_prefix_tokens=1)
        self.register_buffer("cls_pos", (net.cls_token + pos[:, :1]).detach())
        self.register_buffer("space_pos", pos[0, 1:].detach())
        self.blocks, self.norm = net.blocks, net.norm
        self.time = nn.Parameter(torch.zeros(grid.frames, dim))
        self.fc = nn.Linear(dim, num_classes)
        self.per_frame = grid.per_frame

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        x = x + self.space_pos[ids % self.per_frame] + self.time[ids // self.per_frame]
        x = torch.cat([self.cls_pos.expand(x.shape[0], -1, -1), x], dim=1)
        return self.fc(self.norm(self.blocks(x))[:, 0])


class TokenClassifier(nn.Module):
    """uint8 patches (B, K, C p^2) and their token ids (B, K) -> logits (B, classes).

    ``embed = "encoder-map"`` (default): each frame a selected token lies in goes through the
    harness's frozen frame encoder, and a token is the encoder's feature map pooled over its
    patch (pooling a frame's tokens again gives the frame's feature exactly): the stand-in for
    the paper's ImageNet-pretrained ViT, whose tokens also see past their patch after the first
    block. The encoder's cost is charged per touched frame. ``"encoder"``: each patch alone
    through the frozen encoder (a token depends on its own patch only): a frame encoder's
    features of a patch cut from its context carried too little, and the uniform-token reader
    stayed near chance on synth-events.
    ``"linear"`` is ViT's own patch embedding, trained from scratch; ``"vit"`` a pretrained ViT.
    The transformer trains on top.
    """

    def __init__(self, cfg: TokenModelConfig, grid: TokenGrid, num_classes: int, encoder: nn.Module | None = None):
        super().__init__()
        if cfg.embed not in EMBEDS:
            raise ValueError(f"token embed must be one of {', '.join(EMBEDS)}, not {cfg.embed!r}")
        if cfg.embed == "vit":  # the paper's reader: a pretrained ViT
            from samplerbench.models.pretrained import build_pretrained

            self.cfg, self.grid = cfg, grid
            self.encoder = build_pretrained(cfg.vit, cfg.vit_weights or None)
            patch = self.encoder.net.patch_embed.patch_size[0]
            if patch != cfg.patch:
                raise ValueError(f"{cfg.vit} embeds {patch}x{patch} patches; set [token_model] patch = {patch}")
            self.vit = PretrainedTokenViT(self.encoder.net, grid, num_classes)
            return
        if cfg.embed in ("encoder", "encoder-map") and encoder is None:
            raise ValueError(f"embed = {cfg.embed!r} needs the frame encoder")
        if cfg.embed == "encoder-map" and not encoder.has_feature_map:
            raise ValueError(f"[token_model] embed = \"encoder-map\" reads the reader's feature map, and "
                             f"{type(encoder).__name__} exposes none: set embed = \"linear\", or \"vit\" with a "
                             f"pretrained ViT")
        if cfg.embed == "encoder" and not encoder.any_size:
            raise ValueError(f"token samplers embed each {cfg.patch}x{cfg.patch} patch with the reader's encoder, and "
                             f"{type(encoder).__name__} reads only its own input size: set "
                             f"[token_model] embed = \"linear\" or use a CNN reader")
        self.cfg, self.grid = cfg, grid
        self.vit = TokenViT(cfg.patch, grid.total, cfg.width, cfg.depth, cfg.heads, num_classes)
        self.encoder = encoder.requires_grad_(False) if cfg.embed in ("encoder", "encoder-map") else None
        if self.encoder is not None:
            self.vit.embed = nn.Linear(encoder.dim, cfg.width)

    @property
    def per_frame_embedding(self) -> bool:
        """Whether a token's features come from its whole frame (the encoder's map), so that the
        encoder runs once per touched frame rather than once per token."""
        return self.cfg.embed == "encoder-map"

    def video_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 frames (T, 3, H, W) -> (T * rows * cols, D): every token's features, t-major
        (where the model is)."""
        if self.per_frame_embedding:
            self.encoder.eval()  # frozen, BatchNorm included
            with torch.no_grad():
                x = self.encoder.normalise(pixels.to(device_of(self)))
                cells = self.encoder.feature_map(x, (self.grid.rows, self.grid.cols))
            return cells.reshape(-1, cells.shape[-1])
        return self.patch_features(patchify(pixels, self.cfg.patch)[None])[0]

    def tokens_of(self, frames: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
        """The features of some tokens of some frames: ``frames`` uint8 (n, 3, H, W), ``local``
        the tokens' positions among those frames' tokens (t-major). Per-patch embeddings embed
        the selected patches only; the map embeds each frame once."""
        local = torch.as_tensor(local)
        if self.per_frame_embedding:
            return self.video_tokens(frames)[local.to(device_of(self))]
        return self.patch_features(patchify(frames, self.cfg.patch)[local][None])[0]

    def read(self, frames: torch.Tensor, local: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """One video's logits (1, C) from its touched frames and its selected tokens (``local``
        among the frames' tokens; ``ids``, their token ids in the video)."""
        x = self.tokens_of(frames, local)
        return self.vit(x[None], torch.as_tensor(ids)[None].to(x.device))

    @property
    def in_features(self) -> int:
        return 3 * self.cfg.patch**2

    def patch_features(self, patches: torch.Tensor) -> torch.Tensor:
        """What ``vit.embed`` reads: the frozen encoder's features of each patch, or its pixels
        (computed where the model is)."""
        patches = patches.to(device_of(self))
        if self.encoder is None:
            return normalise_patches(patches)
        b, k, _ = patches.shape
        p = self.cfg.patch
        if self.cfg.embed == "vit":  # the ViT's own patch embedding, pretrained and frozen
            with torch.no_grad():
                x = self.encoder.normalise(patches.reshape(b * k, 3, p, p))
                return self.encoder.net.patch_embed.proj(x).flatten(1).view(b, k, -1)
        self.encoder.eval()  # frozen, BatchNorm included
        with torch.no_grad():
            return self.encoder(self.encoder.normalise(patches.reshape(b * k, 3, p, p))).view(b, k, -1)

    def forward(self, patches: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        if ids is None:  # throughput timing: the first K positions
            ids = torch.arange(patches.shape[1], device=patches.device).expand(patches.shape[0], -1)
        return self.vit(self.patch_features(patches), ids)


class FrameTokens(nn.Module):
    """Every token of uint8 frames (n, 3, H, W) through a token model's embedding: what a
    touched frame costs when tokens come from the encoder's map (what fvcore counts)."""

    def __init__(self, model: TokenClassifier):
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.model.video_tokens(frames)


@dataclass
class PatchFeatureMemo:
    """What a token ViT's embedding reads in a method's cells: the selected patches' frozen
    features, ``(1, K, D)`` where the model is. A token depends on its own patch alone, so the
    features of all of a video's patches are computed at its first cell and indexed at the
    others (5 budgets x 3 seeds encoded each selected patch again before): the same numbers as
    encoding the selected patches, bit for bit on CPU (tested), but for a selection of one patch,
    which torch's CPU convolution computes by another path (about 1e-5 apart). Only the current
    method's videos are kept, up to ``cap_bytes``; past it each cell encodes just its selected
    patches."""

    cap_bytes: int = 1024 << 20  # [eval] patch_cache_mib
    method: str = ""
    table: dict = field(default_factory=dict)
    used: int = 0
    full: bool = False

    def __call__(self, method: str, model: TokenClassifier, video_id: str, pixels: Callable[[], torch.Tensor],
                 tokens: torch.Tensor) -> torch.Tensor:
        if method != self.method:  # a new method's cells: the last one's table is done with
            self.method, self.table, self.used, self.full = method, {}, 0, False
        feats = self.table.get(video_id)
        if feats is None:
            if self.full:  # the touched frames' selected tokens only
                return selected_tokens(model, pixels(), tokens)[None]
            feats = model.video_tokens(pixels())
            if self.used + feats.nbytes <= self.cap_bytes:
                self.table[video_id], self.used = feats, self.used + feats.nbytes
            else:
                self.full = True
        return feats[tokens.to(feats.device)][None]


def selected_tokens(model: TokenClassifier, pixels: torch.Tensor, tokens) -> torch.Tensor:
    """(K, D): the features of a video's selected tokens (ids into its T candidates' tokens),
    from the frames they touch only."""
    tokens = torch.as_tensor(tokens)
    per_frame = model.grid.per_frame
    frames = torch.unique(tokens // per_frame)
    local = torch.searchsorted(frames, tokens // per_frame) * per_frame + tokens % per_frame
    return model.tokens_of(pixels[frames], local)


class _Selections(Dataset):
    """Item i: the sampler's token ids on the i-th pool at budget ``budgets[i]``, seeded by ``seed``."""

    def __init__(self, sampler: Sampler, pools: torch.Tensor, split: VideoSplit, budgets, seed: int):
        self.sampler, self.pools, self.split, self.budgets, self.seed = sampler, pools, split, budgets, seed

    def __len__(self) -> int:
        return len(self.budgets)

    def __getitem__(self, i: int) -> np.ndarray:
        return _selected(self.sampler, self.pools[i], self.split.records[i].video_id, int(self.budgets[i]), self.seed)


def selections(sampler: Sampler, pools: torch.Tensor, split: VideoSplit, budgets, seed: int) -> list[np.ndarray]:
    """Every pool's selection (``budgets``: one per video), in worker processes when the sampler
    observes pixels (K-center: a few ms of numpy a video, on one core; the workers use every
    core while training waits) and here when it reads only the layout. The same ids either way."""
    data = _Selections(sampler, pools, split, budgets, seed)
    workers = decode_workers() if "pixels" in sampler.observes else 0
    return [np.asarray(t) for t in in_order(data, workers)]


def _selected(sampler: Sampler, pixels: torch.Tensor, video_id: str, n: int, seed: int) -> np.ndarray:
    """The sampler's token ids on one video's candidate pixels."""
    view = VideoView(video_id, len(pixels), np.arange(len(pixels)), allowed=sampler.observes,
                     providers={"pixels": lambda: pixels}, frame_size=tuple(pixels.shape[-2:]))
    sel = sampler.select(view, Budget("count", n), generator(seed, video_id, sampler.name))
    if sel.tokens is None:
        raise ValueError(f"{sampler.name} returned frames, not tokens")
    return sel.tokens


def patch_table(pools: torch.Tensor, video_tokens) -> torch.Tensor:
    """(videos, tokens, D) on the CPU: every token's frozen features (``video_tokens`` of each
    pool, :meth:`TokenClassifier.video_tokens`), computed once (outside autograd, as a plain
    tensor that training graphs may index; each batch moves to the model)."""
    with torch.inference_mode():
        feats = torch.stack([video_tokens(v).cpu() for v in pools])
    return feats.clone()


@dataclass
class PatchTables:
    """Training splits' patch tables (:func:`patch_table`) kept for the run's next token ViT
    that embeds the same patches with the same frozen weights (K-center's and the uniform
    baseline's ViTs: the second computed both splits' tables again, 21 s of its 116 on 2 cores),
    while they fit ``cap_bytes`` (``[eval] patch_cache_mib``)."""

    cap_bytes: int = 1024 << 20
    table: dict = field(default_factory=dict)

    def __call__(self, key: tuple, pools: torch.Tensor, video_tokens) -> torch.Tensor:
        if key not in self.table:
            feats = patch_table(pools, video_tokens)
            if sum(t.nbytes for t in self.table.values()) + feats.nbytes > self.cap_bytes:
                return feats
            self.table[key] = feats
        return self.table[key]


def token_top1(sampler: Sampler, pools: torch.Tensor, split: VideoSplit, budgets, video_tokens,
               seed: int = 0, batch: int = 64, feats: torch.Tensor | None = None):
    """``score(model)``: the token ViT's top-1 on the sampler's selections of ``split``, averaged
    over the budgets (a multi-label video counts when its top class is one of its labels).

    The selections (seeded: the same at every call) and every patch's frozen features are
    computed here, once; each call runs only the ViT, ``batch`` videos at a time. (Computing them
    per call, a video at a time, was most of a token ViT's training: 8 validations x 5 budgets.)
    ``feats``: the patch table when the caller has it.
    """
    feats = patch_table(pools, video_tokens) if feats is None else feats
    chunks: dict[int, list[tuple[list[int], torch.Tensor]]] = {}  # per budget: (videos, their tokens)
    for n in budgets:
        picks = selections(sampler, pools, split, [n] * len(pools), seed)
        by_length: dict[int, list[int]] = {}
        for i, tok in enumerate(picks):  # videos whose selections stack
            by_length.setdefault(len(tok), []).append(i)
        chunks[n] = [(ids[s:s + batch], torch.from_numpy(np.stack([picks[i] for i in ids[s:s + batch]])))
                     for ids in by_length.values() for s in range(0, len(ids), batch)]

    @torch.inference_mode()
    def score(model: TokenClassifier) -> float:
        device, accs = next(model.parameters()).device, []
        for n in budgets:
            hits = 0
            for ids, toks in chunks[n]:
                x = feats[torch.tensor(ids)[:, None], toks].to(device)
                pred = model.vit(x, toks.to(device)).argmax(1).tolist()
                hits += sum(int(p) in split.records[i].labels for p, i in zip(pred, ids, strict=True))
            accs.append(hits / len(split.records))
        return float(np.mean(accs))

    return score


def video_label_loss(logits: torch.Tensor, split: VideoSplit, ids) -> torch.Tensor:
    """Cross-entropy on the label (single-label data); binary cross-entropy on every label of a
    multi-label video (its first label alone would teach the others as negatives)."""
    if split.multilabel:
        target = torch.from_numpy(one_hot([split.records[i].labels for i in ids], split.num_classes)).float()
        return F.binary_cross_entropy_with_logits(logits, target.to(logits.device))
    return F.cross_entropy(logits, torch.tensor([split.records[i].labels[0] for i in ids], device=logits.device))


def train_token_classifier(sampler: Sampler, train: VideoSplit, val: VideoSplit, cfg: TokenModelConfig,
                           candidates: int, budgets, size, cache_dir: Path, encoder: nn.Module | None = None,
                           encoder_key: str = "", progress: bool = True,
                           decode=decode_pools, device: torch.device | str = "cpu",
                           tables: PatchTables | None = None) -> tuple[TokenClassifier, dict]:
    """The token ViT trained on ``sampler``'s token selections (or loaded from the cache).

    Each batch draws one budget from ``budgets`` (frame-equivalents; seeded) and trains on the
    sampler's selections at it, K-center's start seeded per (epoch, video): one model serves
    every budget of the suite. The frozen encoder's patch features are computed once per
    training video. Early stopping on the validation split's top-1 averaged over the budgets.
    ``decode`` gives the candidate pools and ``tables`` keeps the splits' patch tables (a caller
    training several ViTs passes memoised ones).
    """
    grid = TokenGrid(candidates, size[0] // cfg.patch, size[1] // cfg.patch)
    parts = [cfg.identity(), {"sampler": sampler.name, **sampler.config()}, train.manifest_hash, val.manifest_hash,
             candidates, list(budgets), list(size), train.num_classes, encoder_key, 3]  # 3: ViT's position init
    if train.multilabel:  # trained on every label since this version (single-label keys unchanged)
        parts.append("multi-label bce")
    if cfg.embed == "vit":  # the pretrained ViT's weights are part of the model
        from samplerbench.models.pretrained import default_weights, weights_digest

        w = Path(cfg.vit_weights) if cfg.vit_weights else default_weights(cfg.vit)
        parts.append(weights_digest(w) if w is not None and w.is_file() else "missing")  # build() names the file
    # what a patch's features depend on: the patch size and the frozen weights that embed it
    embedding = (cfg.patch, cfg.embed, encoder_key if cfg.embed in ("encoder", "encoder-map") else "",
                 (cfg.vit, parts[-1]) if cfg.embed == "vit" else "")

    def build():
        return TokenClassifier(cfg, grid, train.num_classes, encoder)

    tables = tables or PatchTables(cap_bytes=0)

    def run(model):
        pools, vpools = decode(train, candidates, size), decode(val, candidates, size)
        feats = tables((train.manifest_hash, candidates, tuple(size), *embedding), pools, model.video_tokens)
        fcfg = FitConfig(epochs=cfg.epochs, batch=cfg.batch, lr=cfg.lr, seed=cfg.seed)
        order_rng = default_order_rng(fcfg)

        def budget_of(epoch: int, step: int) -> int:
            rng = np.random.Generator(np.random.PCG64(derive_seed("tok-budget", cfg.seed, epoch, step)))
            return int(rng.choice(list(budgets)))

        epoch_picks: dict[int, list[np.ndarray]] = {}

        def picks_of(epoch: int) -> list[np.ndarray]:
            """The epoch's selection of every training video at its step's budget, made at once
            (in worker processes) before its first step, with fit's own visiting order."""
            if epoch not in epoch_picks:
                n = np.empty(len(train), np.int64)
                for step, ids in enumerate(epoch_batches(fcfg, len(train), order_rng(epoch))):
                    n[ids] = budget_of(epoch, step)
                epoch_picks.clear()
                epoch_picks[epoch] = selections(sampler, pools, train, n, derive_seed("tok-select", cfg.seed, epoch))
            return epoch_picks[epoch]

        def video_loss(m, ids, epoch, step, _rng):
            picks = picks_of(epoch)
            toks = torch.from_numpy(np.stack([picks[i] for i in ids]))
            x = feats[torch.from_numpy(ids)[:, None], toks]
            return video_label_loss(m.vit(x.to(device_of(m)), toks.to(device_of(m))), train, ids)

        validate = token_top1(sampler, vpools, val, budgets, model.video_tokens,
                              feats=tables((val.manifest_hash, candidates, tuple(size), *embedding), vpools,
                                           model.video_tokens))
        return fit(model, fcfg, len(train), video_loss, validate, f"token ViT ({sampler.name})", progress,
                   initial_score=False, order_rng=order_rng)

    return cached_fit("token-vit", parts, build, run, cache_dir, device=device)
