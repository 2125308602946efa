"""The papers' pretrained encoders from local weights: torchvision, timm and open_clip families.

An encoder is named ``<family>:<model>`` (``torchvision:resnet50``, ``timm:mobilenetv2_100``,
``open_clip:ViT-B-32``). Its input size, mean, std, interpolation and crop come from the
model's own configuration (torchvision's weights transforms, timm's ``resolve_data_config``,
open_clip's ``preprocess_cfg``), never from a call site. Weights come from a local file only:
``weights = "path"`` in the suite's ``[model]``, or ``$SAMPLERBENCH_WEIGHTS/<family>-<model>.
{safetensors,pth,pt,bin}``; safetensors or ``torch.load(weights_only=True)``. Nothing is
downloaded: a missing file stops the run with one line naming it and where such weights are
published.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from samplerbench.data.annotations import file_sha256

WEIGHTS_ENV = "SAMPLERBENCH_WEIGHTS"
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
FAMILIES = ("torchvision", "timm", "open_clip")


class WeightsError(FileNotFoundError):
    """Weights that are missing or do not fit the model; one line naming the file."""


@dataclass(frozen=True)
class Preprocess:
    """How frames reach the model: shorter side to ``resize``, centre crop ``size`` (H, W), then
    ``(x / 255 - mean) / std`` per channel."""

    size: tuple[int, int]
    resize: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"


def split_name(encoder: str) -> tuple[str, str]:
    family, _, name = encoder.partition(":")
    if family not in FAMILIES or not name:
        raise ValueError(f"encoder {encoder!r}: expected <family>:<model> with family one of {', '.join(FAMILIES)}")
    return family, name


def default_weights(encoder: str) -> Path | None:
    """``$SAMPLERBENCH_WEIGHTS/<family>-<model>.<ext>``: the first that exists (model name with
    '/' replaced by '_')."""
    folder = os.environ.get(WEIGHTS_ENV)
    if not folder:
        return None
    family, name = split_name(encoder)
    for ext in WEIGHT_SUFFIXES:
        p = Path(folder) / f"{family}-{name.replace('/', '_')}{ext}"
        if p.is_file():
            return p
    return None


def published_at(encoder: str) -> str:
    """Where such weights are published (for the missing-weights message)."""
    family, name = split_name(encoder)
    if family == "torchvision":
        import torchvision

        try:
            return torchvision.models.get_model_weights(name).DEFAULT.url
        except (ValueError, AttributeError):
            return "https://pytorch.org/vision/stable/models.html"
    if family == "timm":
        import timm

        try:
            cfg = timm.create_model(name, pretrained=False).pretrained_cfg
            return f"https://huggingface.co/{cfg.get('hf_hub_id') or 'timm/' + name}"
        except RuntimeError:
            return "https://huggingface.co/timm"
    import open_clip

    tags = [t for m, t in open_clip.list_pretrained() if m == name]
    return f"open_clip.list_pretrained() tags for {name}: {', '.join(tags[:4]) or 'none'} (https://github.com/mlfoundations/open_clip)"


def load_state_dict(path: Path) -> dict:
    """A state dict from safetensors or a torch pickle read with ``weights_only=True`` (open_clip
    and Lightning checkpoints nest it under ``state_dict``; a ``module.`` prefix is dropped)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt or foreign file: say which
        raise WeightsError(f"{path}: cannot read weights ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise WeightsError(f"{path}: not a state dict")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def weights_digest(path: Path) -> str:
    """sha256 of the weights file (their identity in every cache key)."""
    return file_sha256(path)


class PretrainedEncoder(nn.Module):
    """A frozen pretrained image encoder: uint8 frames -> (M, D) features, with its own
    preprocessing (:meth:`normalise`)."""

    def __init__(self, encoder: str, net: nn.Module, preprocess: Preprocess, dim: int, image_fn=None,
                 text=None, weights: str = "", weights_sha: str = "", any_size: bool = False):
        super().__init__()
        self.encoder_name = encoder
        self.net = net
        self.preprocess = preprocess
        self.dim = dim
        self._image_fn = image_fn
        self.text = text  # open_clip: (model, tokenizer) for the text tower
        self.weights = weights
        self.weights_sha = weights_sha
        self.clip4clip_sha = ""  # a CLIP4Clip fine-tuned checkpoint loaded into the towers
        #: reads inputs of any size (a CNN) or only its own (a ViT's position embeddings)
        self.any_size = any_size
        self.has_feature_map = False  # a token of a frame is its own patch's embedding (embed = "vit")
        self.register_buffer("mean", torch.tensor(preprocess.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(preprocess.std).view(1, 3, 1, 1), persistent=False)

    def normalise(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (M, 3, H, W) -> float normalised with the model's mean and std."""
        return (frames.float() / 255.0 - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._image_fn(x) if self._image_fn is not None else self.net(x)


def _torchvision(name: str) -> tuple[nn.Module, Preprocess]:
    import torchvision

    net = torchvision.models.get_model(name, weights=None)
    t = torchvision.models.get_model_weights(name).DEFAULT.transforms()
    crop = t.crop_size[0]
    pre = Preprocess((crop, crop), int(t.resize_size[0]), tuple(t.mean), tuple(t.std), t.interpolation.value)
    for attr in ("fc", "classifier", "heads", "head"):  # the classification layer becomes the identity
        if isinstance(getattr(net, attr, None), nn.Module):
            setattr(net, attr, nn.Identity())
            break
    return net, pre


def _timm(name: str) -> tuple[nn.Module, Preprocess]:
    import timm

    net = timm.create_model(name, pretrained=False, num_classes=0)
    cfg = timm.data.resolve_data_config({}, model=net)
    h, w = cfg["input_size"][1:]
    resize = int(round(min(h, w) / cfg.get("crop_pct", 1.0)))
    return net, Preprocess((h, w), resize, tuple(cfg["mean"]), tuple(cfg["std"]), cfg["interpolation"])


def _open_clip(name: str):
    import logging

    import open_clip

    logging.getLogger().disabled, was = True, logging.getLogger().disabled  # "no pretrained weights" is expected
    try:
        model = open_clip.create_model(name, pretrained=None)
    finally:
        logging.getLogger().disabled = was
    cfg = model.visual.preprocess_cfg
    size = tuple(cfg["size"]) if isinstance(cfg["size"], (tuple, list)) else (cfg["size"], cfg["size"])
    pre = Preprocess(size, int(min(size)), tuple(cfg["mean"]), tuple(cfg["std"]), cfg.get("interpolation", "bicubic"))
    return model, pre


def build_pretrained(encoder: str, weights: str | os.PathLike | None = None, load: bool = True) -> PretrainedEncoder:
    """The encoder with its weights loaded from a local file (``load=False``: random init, for
    tests and cost counting). Raises :class:`WeightsError` naming the expected file."""
    family, name = split_name(encoder)
    text = None
    if family == "torchvision":
        net, pre = _torchvision(name)
        image_fn = None
    elif family == "timm":
        net, pre = _timm(name)
        image_fn = None
    else:
        net, pre = _open_clip(name)
        image_fn = net.encode_image
        import open_clip

        text = open_clip.get_tokenizer(name)
    path, sha = "", ""
    if load:
        p = Path(weights) if weights else default_weights(encoder)
        if p is None or not p.is_file():
            file = f"{family}-{name.replace('/', '_')}.safetensors"
            if p is not None or os.environ.get(WEIGHTS_ENV):
                expected = p or Path(os.environ[WEIGHTS_ENV]) / file
                raise WeightsError(f"{expected}: no weights for {encoder} (give [model] weights = \"path\" or put "
                                   f"them there; published at {published_at(encoder)})")
            # only a variable that is set is named as a place: here, where to set it
            raise WeightsError(f"{encoder}: no weights (set {WEIGHTS_ENV} to a folder holding {file} (or .pth/.pt/"
                               f".bin), or give [model] weights = \"path\"; published at {published_at(encoder)})")
        sd = load_state_dict(p)
        if family == "open_clip":
            missing, unexpected = net.load_state_dict(sd, strict=False)
        else:  # the classification layer of the checkpoint is not part of the encoder
            missing, unexpected = net.load_state_dict(sd, strict=False)
            unexpected = [k for k in unexpected if k.split(".")[0] not in ("fc", "classifier", "heads", "head")]
        missing = [k for k in missing if "num_batches_tracked" not in k]
        if missing or unexpected:
            raise WeightsError(f"{p}: does not fit {encoder} ({len(missing)} missing keys, e.g. "
                               f"{(missing or ['-'])[0]}; {len(unexpected)} unexpected, e.g. {(unexpected or ['-'])[0]})")
        path, sha = str(p), weights_digest(p)
    net.eval().requires_grad_(False)
    with torch.no_grad():
        dim = int((image_fn or net)(torch.zeros(1, 3, *pre.size)).shape[-1])
        try:  # a 16-pixel input (a token's patch): fine for a CNN, refused by a ViT's position grid
            any_size = (image_fn or net)(torch.zeros(1, 3, 16, 16)).shape[-1] == dim
        except (RuntimeError, AssertionError, ValueError):
            any_size = False
    return PretrainedEncoder(encoder, net, pre, dim, image_fn, text, path, sha, any_size)
