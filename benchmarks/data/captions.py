"""Captions for synth-events, written from each video's scene plan (no rendering): what crosses,
in which colour and direction, when, and what drifts in the background, in varied wording
(synonyms, clause order, optional details), several per video.

A caption needs more than one keyword to pick its video out: ten classes share the test split,
colours and directions repeat, and the distractors are common to every class. Stored in the
MSR-VTT / CLIP4Clip JSON layout (``{"sentences": [{"video_id", "caption", "sen_id"}]}``) as
``<split>_captions.json`` beside the other annotations; the vocabulary is closed and ships with
the project (:data:`VOCAB`), so the text encoder needs no downloaded tokenizer.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from samplerbench.data.synth import SynthConfig, plan_scene
from samplerbench.seeding import derive_seed

SHAPE_WORDS = {
    "square": ("square", "box", "block"),
    "triangle": ("triangle", "wedge", "pyramid"),
    "plus": ("plus", "cross", "plus sign"),
    "ring": ("ring", "hoop", "donut"),
    "diamond": ("diamond", "rhombus", "lozenge"),
}
COLOUR_WORDS = (("red", "crimson"), ("green", "lime"), ("blue", "navy"), ("yellow", "golden"),
                ("magenta", "purple"), ("cyan", "turquoise"), ("white", "pale"))
DIRECTION_WORDS = {  # (axis, sign of the step)
    (0, 1): ("from left to right", "rightwards", "towards the right"),
    (0, -1): ("from right to left", "leftwards", "towards the left"),
    (1, 1): ("from top to bottom", "downwards", "towards the bottom"),
    (1, -1): ("from bottom to top", "upwards", "towards the top"),
}
VERBS = ("moves", "crosses the frame", "slides", "passes", "travels")
WHEN_WORDS = (("early in the clip", "near the start", "at the beginning"),
              ("midway through", "in the middle of the clip", "halfway through"),
              ("late in the clip", "near the end", "towards the end"))
DISTRACTOR_WORDS = {"disc": ("disc", "circle", "ball"), "ellipse": ("ellipse", "oval", "blob")}
EXTRA = ("while", "drifts", "drift", "in", "the", "background", "a", "an", "with", "and", "there", "is", "are",
         "two", "three", "several", "shapes", "clip", "video", "frame", "then", "of", "one", "as")
NUMBER = {1: "one", 2: "two", 3: "three"}


def _words(*groups) -> set[str]:
    out: set[str] = set()
    for g in groups:
        for phrase in g:
            out.update(phrase.split())
    return out


#: The closed vocabulary of every caption the generator can write (the text tokenizer's).
VOCAB = sorted(
    _words(*SHAPE_WORDS.values(), *COLOUR_WORDS, *DIRECTION_WORDS.values(), VERBS, *WHEN_WORDS,
           *DISTRACTOR_WORDS.values(), [w + "s" for ws in DISTRACTOR_WORDS.values() for w in ws], EXTRA)
)


def tokenize(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def describe(scene, rng: np.random.Generator) -> str:
    """One caption of a scene: the (first) event, optionally when it happens and the background."""
    ev = scene.events[0]
    axis, sign = ev.label % 2, 1 if ev.velocity[0] > 0 else -1
    shape = _pick(rng, SHAPE_WORDS[ev.kind])
    colour = _pick(rng, COLOUR_WORDS[ev.colour])
    direction = _pick(rng, DIRECTION_WORDS[(axis, sign)])
    verb = _pick(rng, VERBS)
    thing = f"{_article(colour)} {colour} {shape}"
    centre = (ev.start + ev.end) / 2 / scene.num_frames
    when = _pick(rng, WHEN_WORDS[min(2, int(centre * 3))])
    order = int(rng.integers(3))
    if order == 0:
        main = f"{thing} {verb} {direction}"
    elif order == 1:
        main = f"{direction} {thing} {verb}"
    else:
        main = f"{when} {thing} {verb} {direction}"
    if order != 2 and rng.random() < 0.5:
        main += f" {when}"
    if scene.distractors and rng.random() < 0.5:
        kinds = sorted({d.kind for d in scene.distractors})
        noun = _pick(rng, DISTRACTOR_WORDS[kinds[0]]) + "s" if len(kinds) == 1 else "shapes"
        count = NUMBER.get(len(scene.distractors), "several")
        main += _pick(rng, (f" while {count} {noun} drift in the background",
                            f" with {count} {noun} in the background"))
    for extra in scene.events[1:]:  # multi-label videos: the other events, briefly
        main += f" then {_article(COLOUR_WORDS[extra.colour][0])} {COLOUR_WORDS[extra.colour][0]} {extra.kind}"
    return main


def captions_for(cfg: SynthConfig, video_id: str, per_video: int) -> list[str]:
    """``per_video`` distinct-as-possible captions of one video, seeded by (dataset, video)."""
    scene, _ = plan_scene(cfg, video_id)
    rng = np.random.Generator(np.random.PCG64(derive_seed("captions", cfg.digest(), video_id)))
    out: list[str] = []
    for _ in range(per_video * 4):
        c = describe(scene, rng)
        if c not in out:
            out.append(c)
        if len(out) == per_video:
            break
    while len(out) < per_video:
        out.append(out[-1])
    return out


def write_captions(root: Path, split: str, video_ids: list[str], cfg: SynthConfig, per_video: int = 5) -> Path:
    """``<root>/<split>_captions.json`` in the MSR-VTT layout (written once, atomically)."""
    path = Path(root) / f"{split}_captions.json"
    if path.is_file():
        data = json.loads(path.read_text())
        if data.get("per_video") == per_video:
            return path
    sentences = []
    for vid in video_ids:
        for i, c in enumerate(captions_for(cfg, vid, per_video)):
            sentences.append({"video_id": vid, "caption": c, "sen_id": len(sentences), "index": i})
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"per_video": per_video, "sentences": sentences}, indent=0))
    tmp.replace(path)
    return path


def load_captions(path: Path) -> list[tuple[str, str]]:
    """[(video_id, caption)] from an MSR-VTT-layout JSON; errors name the file."""
    try:
        data = json.loads(Path(path).read_text())
        return [(s["video_id"], s["caption"]) for s in data["sentences"]]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a captions file ({type(e).__name__}: {e})") from e


def split_captions(split, per_video: int = 5) -> list[tuple[str, str]]:
    """A split's [(video_id, caption)]: ``<root>/<split>_captions.json`` (MSR-VTT layout), which
    is written from the scene plans first for synth-events. Errors name the file."""
    if "captions" in split.meta:  # a real dataset's adapter read them (MSR-VTT, ActivityNet Captions, DiDeMo)
        return list(split.meta["captions"])
    root = Path(split.meta.get("root", "."))
    path = root / f"{split.split}_captions.json"
    config = split.meta.get("config")
    if config is not None and split.name.startswith("synth-events"):
        cfg = SynthConfig(**{**config, "num_distractors": tuple(config["num_distractors"])})
        write_captions(root, split.split, [r.video_id for r in split.records], cfg, per_video)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no captions for the {split.split} split (MSR-VTT layout expected)")
    return load_captions(path)
