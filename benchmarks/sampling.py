"""The sampler interface: what a sampler sees (VideoView), what it is asked for (Budget),
and what it returns (Selection).

A sampler declares what it observes; the view refuses anything else, so that a method that
peeks at labels cannot do so silently, and every observation it pays for (a scorer network
on all candidates, say) is charged to the sampler's own cost.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from dataclasses import InitVar, dataclass, field
from typing import Any, ClassVar, TypeVar

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
    (``provider_flops``) is charged to the sampler once per video. Both are kept private: a
    sampler reads only through the guarded methods below, and the harness gives a view a
    ``label`` provider only for a sampler declared an upper bound.
    """

    video_id: str
    num_frames: int
    candidates: np.ndarray  # frame indices into the video, sorted
    allowed: frozenset = frozenset()
    providers: InitVar[dict[str, Callable[[], Any]] | None] = None
    frame_size: tuple[int, int] | None = None  # (H, W) of the decoded candidates: layout, not content
    provider_flops: InitVar[dict[str, float] | None] = None
    charged_flops: float = 0.0
    #: what its features and frame probabilities come from (a replicate's reader): a sampler's
    #: per-video memo of work on them is kept per reader (:func:`per_video`)
    reader: str = ""
    _providers: dict = field(init=False, default_factory=dict, repr=False)
    _provider_flops: dict = field(init=False, default_factory=dict, repr=False)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self, providers, provider_flops):
        self._providers = dict(providers or {})
        self._provider_flops = dict(provider_flops or {})

    @property
    def observed(self) -> frozenset:
        """What the sampler has observed so far (and been charged for)."""
        return frozenset(self._cache)

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
            if what not in self._providers:
                raise LookupError(f"video {self.video_id}: no provider for '{what}' in this task")
            self._cache[what] = self._providers[what]()
            self.charged_flops += float(self._provider_flops.get(what, 0.0))
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


#: What may read a sampler's selection (``Sampler.reader``).
READERS = ("frames", "tokens", "head")


class AbilityError(TypeError):
    """A sampler's declared abilities contradict each other or its code."""


class Sampler:
    """Base class of every method. Subclasses are dataclasses whose fields are the config.

    A method declares what it is and can do in class attributes; the harness dispatches on these
    declarations (never on which methods a class happens to define), and a contradiction is an
    error when the class is defined (:meth:`__init_subclass__`) or instantiated (:meth:`check`):

    - ``observes``: what it reads of a video (:data:`OBSERVABLES`); the view refuses anything else
      and charges each observation's cost to the sampler.
    - ``reader``: what reads its selection. ``"frames"``: the task's frozen reader on the selected
      frames (the frame classifier, the retrieval model); ``"tokens"``: a token ViT trained in the
      run on this sampler's selections (``Selection.tokens``; budgets in frame-equivalents);
      ``"head"``: its own head, :meth:`head_logits` on the encoded frames' features, costed by
      :meth:`head_flops`.
    - ``learns``: it trains in the run; :meth:`prepare` is called with the training environment
      before its first cell and returns the training record (with the checkpoint ``key``).
    - ``adaptive``: it decides the number of frames per video (the budget is an upper bound).
    - ``ignores_budget``: it always takes every candidate (dense); evaluated once, at N = T.
    - ``upper_bound``: it sees the labels, so it is a ceiling, never a baseline. Observing
      ``label`` requires it; a composition (:meth:`parts`) inherits it from its parts.
    """

    name: ClassVar[str] = "?"
    observes: ClassVar[frozenset] = frozenset()
    reader: ClassVar[str] = "frames"
    learns: ClassVar[bool] = False
    adaptive: ClassVar[bool] = False
    ignores_budget: ClassVar[bool] = False
    upper_bound: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        where = f"{cls.__module__}.{cls.__qualname__}"
        unknown = set(cls.observes) - OBSERVABLES
        if unknown:
            raise AbilityError(f"{where}: observes {sorted(unknown)}, not among {sorted(OBSERVABLES)}")
        if "label" in cls.observes and not cls.upper_bound:
            raise AbilityError(f"{where}: observes 'label' but is not declared upper_bound = True: a method that "
                               "sees the labels is an upper bound, never a baseline")
        if cls.reader not in READERS:
            raise AbilityError(f"{where}: reader must be one of {READERS}, not {cls.reader!r}")
        if cls.learns != (cls.prepare is not Sampler.prepare):
            raise AbilityError(f"{where}: learns = {cls.learns} but it {'does not define' if cls.learns else 'defines'} "
                               "prepare(env); declare learns = True exactly when the method trains")
        if cls.reader == "head" and (cls.head_logits is Sampler.head_logits or cls.head_flops is Sampler.head_flops):
            raise AbilityError(f"{where}: reader = 'head' needs head_logits() and head_flops()")

    @classmethod
    def describe(cls) -> str:
        """The method's own one-line description: the first paragraph of its class docstring."""
        doc = inspect.getdoc(cls) or ""
        if not doc or doc.startswith(f"{cls.__name__}("):  # a dataclass's generated signature
            return ""
        return " ".join(doc.split("\n\n")[0].split())

    def select(self, view: VideoView, budget: Budget, rng: np.random.Generator) -> Selection:
        raise NotImplementedError

    def prepare(self, env) -> dict | None:
        """Train (or load from the checkpoint cache) what the method learns; ``learns`` methods only."""
        raise NotImplementedError

    def random_init(self, frames: int, num_classes: int, seed: int = 0) -> None:
        """``learns`` methods: untrained weights, for timing without a training run (throughput
        benchmarks: speed does not depend on the weights). Nothing to do for the others."""
        if self.learns:
            raise NotImplementedError(f"{type(self).__name__} learns but has no random_init")

    def cost_modules(self) -> dict[str, Any]:
        """The modules this method runs per video (after :meth:`prepare` or :meth:`random_init`),
        by the role a paper's cost preset gives them (``samplerbench.cost.papers``): what a paper
        suite is checked against, parameter for parameter and FLOP for FLOP."""
        return {}

    def head_logits(self, feats):
        """``reader = "head"``: (B, k, D) features of the encoded frames -> (B, C) logits."""
        raise NotImplementedError

    def head_flops(self, k: int) -> float:
        """``reader = "head"``: FLOPs of the head on k encoded frames."""
        raise NotImplementedError

    def parts(self) -> tuple[Sampler, ...]:
        """Samplers this one is composed of (SLLM's ``base``): their abilities and code count too."""
        return ()

    def forget(self) -> None:
        """Drop this instance's per-video memos (:class:`VideoMemo` fields) and its parts': new
        weights make them stale, and a benchmark that reuses one instance must time the work."""
        for value in vars(self).values():
            if isinstance(value, VideoMemo):
                value.clear()
        for p in self.parts():
            p.forget()

    def check(self) -> None:
        """Instance-level declarations (a composition's observations are its parts'): a sampler
        that observes ``label``, or is built on an upper bound, must be marked an upper bound."""
        where = f"{type(self).__module__}.{type(self).__qualname__}"
        if ("label" in self.observes or any(p.upper_bound for p in self.parts())) and not self.upper_bound:
            raise AbilityError(f"{where}: observes the labels (itself or through {[type(p).__name__ for p in self.parts()]}) "
                               "but is not marked upper_bound")
        unknown = set(self.observes) - OBSERVABLES
        if unknown:
            raise AbilityError(f"{where}: observes {sorted(unknown)}, not among {sorted(OBSERVABLES)}")
        for p in self.parts():
            p.check()

    def config(self) -> dict:
        from dataclasses import asdict, is_dataclass

        # fields starting with "_" are per-instance memos (deterministic per video), not config
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")} if is_dataclass(self) else {}


_T = TypeVar("_T")


class VideoMemo(dict):
    """A sampler instance's per-video memo (:func:`per_video`); :meth:`Sampler.forget` clears it."""


def per_video(memo: VideoMemo, view: VideoView, compute: Callable[[], _T]) -> _T:
    """A sampler's work on one video that no budget or seed changes (a scorer's per-frame
    scores, a policy's keep mask), computed once per sampler instance: the runner keeps one
    instance per method for all its cells (5 budgets x 3 seeds would otherwise score every
    video 15 times) and times with a fresh one, so timing still pays for it. Keep only what is
    small per video (the memo lives as long as the instance); the view charges its observations
    on every call as before, since the sampler reads them first. A sampler that observes the
    reader's features or probabilities keeps one entry per reader (each seed's replicate has its
    own), one that sees pixels only one for every seed."""
    # features and frame probabilities are the replicate's reader's: work on them is its own
    reader = view.reader if view.allowed & {"features", "frame_probs"} else ""
    key = (view.video_id, view.num_candidates, view.frame_size, reader)
    if key not in memo:
        memo[key] = compute()
    return memo[key]


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
