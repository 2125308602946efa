"""Shared fixtures: a tiny synth-events dataset generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from samplerbench.data.synth import SynthConfig, generate

TINY = dict(seed=3, size=32, min_frames=24, max_frames=40, min_event=4, max_event=8,
            splits={"train": 24, "val": 8, "test": 12})


def tiny_suite_head(name: str) -> str:
    """The first lines of a suite file on the TINY dataset at 32x32: its name and ``[dataset]``."""
    splits = TINY["splits"]
    params = ", ".join(f"{k} = {v}" for k, v in TINY.items() if k != "splits")
    return (f'name = "{name}"\n[dataset]\nname = "synth-events"\nframe_size = [32, 32]\n'
            f"params = {{ {params}, splits = {{ train = {splits['train']}, val = {splits['val']}, "
            f"test = {splits['test']} }} }}\n")


@pytest.fixture(scope="session")
def tiny_cfg() -> SynthConfig:
    return SynthConfig(**TINY)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory, tiny_cfg) -> Path:
    return generate(tiny_cfg, tmp_path_factory.mktemp("data") / "tiny", workers=1, progress=False)


def cache_with_a_corrupt_video(cache: Path, to: Path, pattern: str) -> tuple[Path, Path]:
    """A copy of the run cache ``cache`` at ``to`` in which the first video matching ``pattern``
    (under ``datasets/``) is not a video any more: (the copy, the corrupted file)."""
    import shutil

    shutil.copytree(cache, to)
    victim = sorted((to / "datasets").glob(pattern))[0]
    victim.write_bytes(b"not a video")
    return to, victim
