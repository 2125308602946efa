"""Text-video retrieval metrics, as the retrieval papers' tables report them: R@1/5/10 (percent),
median rank and mean rank (1-based), text-to-video and video-to-text, with several captions per
video.

Ranks under ties are a rule, not an accident of a sort (the reference implementations rank with
``argsort``, so a tie's rank depends on the order of the videos):
- ``pessimistic`` (default): every other candidate scoring *at least* as high counts above;
- ``optimistic``: only those scoring strictly higher count above.
A constant similarity matrix is ranked last under the pessimistic rule and first under the
optimistic one; the true rank of a random tie-break lies between the two.

Text-to-video ranks each caption's video among all videos. Video-to-text, where a video has
several captions, has two definitions in use (:data:`V2T`):
- ``clip4clip`` (default): CLIP4Clip's ``tensor_video_to_text_sim`` (``metrics.py``): each video's
  score for a caption group is that group's best caption, so a video's best own caption is ranked
  among the other videos' best captions: a gallery of one entry per video;
- ``all-captions``: the video's best own caption ranked among every caption of the other videos
  (a gallery of all their captions).
With one caption per video both are the same.
"""

from __future__ import annotations

import numpy as np

TIES = ("pessimistic", "optimistic")
#: the video-to-text definitions (module docstring)
V2T = ("clip4clip", "all-captions")


def _check(sim: np.ndarray, caption_video: np.ndarray, ties: str) -> tuple[np.ndarray, np.ndarray]:
    sim = np.asarray(sim, dtype=np.float64)
    cv = np.asarray(caption_video, dtype=np.int64)
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, not {ties!r}")
    if sim.ndim != 2 or sim.shape[0] != len(cv):
        raise ValueError(f"similarity {sim.shape} does not match {len(cv)} captions")
    if len(cv) and (cv.min() < 0 or cv.max() >= sim.shape[1]):
        raise ValueError("caption_video points outside the videos")
    if not np.isfinite(sim).all():  # a NaN compares false: its caption would rank its video first
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(sim))[0])
        raise ValueError(f"similarities must be finite: {sim[where]} at (caption, video) {where}")
    return sim, cv


def t2v_ranks(sim: np.ndarray, caption_video: np.ndarray, ties: str = "pessimistic") -> np.ndarray:
    """(captions, videos) similarity -> (captions,) 1-based rank of each caption's video."""
    sim, cv = _check(sim, caption_video, ties)
    own = sim[np.arange(len(cv)), cv][:, None]
    above = sim >= own if ties == "pessimistic" else sim > own
    above[np.arange(len(cv)), cv] = False
    return 1 + above.sum(axis=1)


def v2t_ranks(sim: np.ndarray, caption_video: np.ndarray, ties: str = "pessimistic",
              v2t: str = "clip4clip") -> np.ndarray:
    """(captions, videos) similarity -> (videos,) 1-based rank of each video's best caption, among
    the other videos' best captions (``clip4clip``) or all their captions (``all-captions``). A
    video without captions gets rank 0 (left out of the summaries by :func:`retrieval_metrics`)
    and is in no other video's gallery."""
    sim, cv = _check(sim, caption_video, ties)
    if v2t not in V2T:
        raise ValueError(f"v2t must be one of {V2T}, not {v2t!r}")
    v = sim.shape[1]
    ranks = np.zeros(v, dtype=np.int64)
    if not len(cv):
        return ranks
    if v2t == "clip4clip":
        # best[g, j]: the best similarity to video j among the captions of video g (-inf: none)
        order = np.argsort(cv, kind="stable")
        groups, starts = np.unique(cv[order], return_index=True)
        best = np.full((v, v), -np.inf)
        best[groups] = np.maximum.reduceat(sim[order], starts, axis=0)
        own = best[np.arange(v), np.arange(v)]
        above = best >= own[None, :] if ties == "pessimistic" else best > own[None, :]
        above[np.arange(v), np.arange(v)] = False
        above[~np.isfinite(best)] = False
        has = np.isin(np.arange(v), groups)
        ranks[has] = 1 + above.sum(axis=0)[has]
        return ranks
    for j in range(v):
        mine = cv == j
        if not mine.any():
            continue
        best_own = sim[mine, j].max()
        others = sim[~mine, j]
        ranks[j] = 1 + int((others >= best_own).sum() if ties == "pessimistic" else (others > best_own).sum())
    return ranks


def summarise(ranks: np.ndarray, ks=(1, 5, 10)) -> dict[str, float]:
    """R@k in percent, median rank (MdR) and mean rank (MnR)."""
    r = np.asarray(ranks, dtype=np.float64)
    out = {f"R@{k}": float(100.0 * np.mean(r <= k)) for k in ks}
    out["MdR"] = float(np.median(r))
    out["MnR"] = float(np.mean(r))
    return out


def retrieval_metrics(sim: np.ndarray, caption_video: np.ndarray, ties: str = "pessimistic",
                      v2t: str = "clip4clip") -> dict[str, float]:
    """Both directions: ``t2v_R@1``, ..., ``t2v_MnR``, ``v2t_R@1``, ..., ``v2t_MnR`` (video-to-text
    by the ``v2t`` definition)."""
    t2v = t2v_ranks(sim, caption_video, ties)
    v2t_r = v2t_ranks(sim, caption_video, ties, v2t)
    v2t_r = v2t_r[v2t_r > 0]
    return {**{f"t2v_{k}": v for k, v in summarise(t2v).items()},
            **{f"v2t_{k}": v for k, v in summarise(v2t_r).items()}}
