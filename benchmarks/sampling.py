"""The sampler interface: what a sampler sees (VideoView), what it is asked for (Budget),
and what it returns (Selection).

A sampler declares what it observes; the view refuses anything else, so that a method that
peeks at labels cannot do so silently, and every observation it pays for (a scorer network
on all candidates, say) is charged to the sampler's own cost.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from samplerbench.data.candidates import candidate_pool, segment_centres  # noqa: F401  (re-exported for methods)

#: What a sampler may declare in ``observes``.
OBSERVABLES = frozenset({"pixels", "features", "frame_probs", "label"})


@dataclass(frozen=True)
class Budget:
    """How many frames to select: a fixed count, a ratio of the candidates, or adaptive."""

    kind: str = "count"  # "count" | "ratio" | "adaptive"
    value: float = 8

    def __post_init__(self):
        if self.kind not in ("count", "ratio", "adaptive"):
            raise ValueError(f"budget kind must be count, ratio or adaptive, not {self.kind!r}")
        if self.kind == "count" and (self.value < 1 or int(self.value) != self.value):
            raise ValueError(f"a count budget must be a positive integer, not {self.value}")
        if self.kind == "ratio" and not 0 < self.value <= 1:
            raise ValueError(f"a ratio budget must be in (0, 1], not {self.value}")

    def frames(self, num_candidates: int) -> int:
        """The number of frames this budget asks for out of ``num_candidates`` (capped)."""
        if self.kind == "count":
            return min(int(self.value), num_candidates)
        if self.kind == "ratio":  # ceil: a ratio of 1/k asks for as many frames as a stride-k pass has
            return max(1, min(num_candidates, int(np.ceil(self.value * num_candidates - 1e-9))))
        return num_candidates  # adaptive: an upper bound; the method decides

    @property
    def label(self) -> str:
        return {"count": f"{int(self.value)}", "ratio": f"{self.value:g}x", "adaptive": "adaptive"}[self.kind]


@dataclass
class Selection:
    """A sampler's answer for one video.

    ``indices`` are positions in the candidate pool, sorted by time; ``order`` keeps the order
    in which they were chosen where that matters (FPS); ``own_flops`` is work the sampler did
    outside the view (distance matrices...); observation costs are added by the view.
    """

    indices: np.ndarray
    scores: np.ndarray | None = None
    order: np.ndarray | None = None
    own_flops: float = 0.0
    #: token samplers: ids of the selected patch tokens (``tokens.TokenGrid`` layout), sorted;
    #: ``indices`` are then the frames they touch
    tokens: np.ndarray | None = None

    def __post_init__(self):
        idx = np.asarray(self.indices, dtype=np.int64).reshape(-1)
        if idx.size and (np.any(np.diff(idx) <= 0)):
            raise ValueError("Selection.indices must be strictly increasing (sorted, no repeats)")
        self.indices = idx
        if self.tokens is not None:
            tok = np.asarray(self.tokens, dtype=np.int64).reshape(-1)
            if tok.size and np.any(np.diff(tok) <= 0):
                raise ValueError("Selection.tokens must be strictly increasing (sorted, no repeats)")
            self.tokens = tok

    def digest(self) -> str:
        """A short hash of the selected positions (tokens, for token samplers), recorded per
        video for reproducibility."""
        chosen = self.indices if self.tokens is None else self.tokens
        return hashlib.blake2b(chosen.tobytes(), digest_size=8).hexdigest()


@dataclass
class VideoView:
    """What a sampler may observe of one video, guarded by its declared ``observes``.

    Observations are computed lazily by the harness (``providers``) and their cost in FLOPs
    (``provider_flops``) is charged to the sampler once per video.
    """

    video_id: str
    num_frames: int
    candidates: np.ndarray  # frame indices into the video, sorted
    allowed: frozenset = frozenset()
    providers: dict[str, Callable[[], Any]] = field(default_factory=dict, repr=False)
    frame_size: tuple[int, int] | None = None  # (H, W) of the decoded candidates: layout, not content
    provider_flops: dict[str, float] = field(default_factory=dict, repr=False)
    charged_flops: float = 0.0
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def num_candidates(self) -> int:
        return len(self.candidates)

    def _observe(self, what: str) -> Any:
        if what not in self.allowed:
            raise PermissionError(
                f"video {self.video_id}: the sampler did not declare that it observes '{what}' "
                f"(declared: {sorted(self.allowed) or 'nothing'})"
            )
        if what not in self._cache:
            if what not in self.providers:
                raise LookupError(f"video {self.video_id}: no provider for '{what}' in this task")
            self._cache[what] = self.providers[what]()
            self.charged_flops += float(self.provider_flops.get(what, 0.0))
        return self._cache[what]

    def pixels(self):
        """uint8 tensor (T, 3, H, W) of the candidate frames."""
        return self._observe("pixels")

    def features(self) -> np.ndarray:
        """(T, D) float32 embeddings of the candidates from the harness's frame encoder."""
        return self._observe("features")

    def frame_probs(self) -> np.ndarray:
        """(T, C) class probabilities of the frozen classifier on each candidate alone."""
        return self._observe("frame_probs")

    def label(self) -> np.ndarray:
        """Multi-hot (C,) ground truth: only for upper bounds that declare it."""
        return self._observe("label")


class Sampler:
    """Base class of every method. Subclasses are dataclasses whose fields are the config."""

    name: ClassVar[str] = "?"
    observes: ClassVar[frozenset] = frozenset()
    #: True for methods that see the labels: they are upper bounds, never baselines.
    upper_bound: ClassVar[bool] = False
    #: True when the method ignores the budget and uses every candidate (dense).
    ignores_budget: ClassVar[bool] = False
    #: What reads the selection: "frames" (the frozen frame classifier) or "tokens" (a token
    #: ViT trained on this sampler's selections; the budget is then in frame-equivalents)
    consumer: ClassVar[str] = "frames"

    def select(self, view: VideoView, budget: Budget, rng: np.random.Generator) -> Selection:
        raise NotImplementedError

    def config(self) -> dict:
        from dataclasses import asdict, is_dataclass

        # fields starting with "_" are per-instance memos (deterministic per video), not config
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")} if is_dataclass(self) else {}


def top_n_sorted(scores: np.ndarray, n: int) -> np.ndarray:
    """Positions of the n highest scores (first index wins ties), returned sorted by time."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return np.sort(order[:n])


def quantile_frames(m: np.ndarray, n: int) -> np.ndarray:
    """Frames at the (i + 0.5) / n quantiles of cumulative non-negative weights ``m`` (the
    inverse CDF: MGSampler's motion, EVFR AFS's variance): the first frame whose normalised
    cumulative weight reaches each level; sorted, without repeats; uniform if all are zero."""
    t = len(m)
    total = float(m.sum())
    cdf = np.cumsum(m) / total if total > 0 else np.arange(1, t + 1) / t
    levels = (np.arange(n) + 0.5) / n
    idx = np.searchsorted(cdf, levels, side="left")
    return np.unique(np.minimum(idx, t - 1))
