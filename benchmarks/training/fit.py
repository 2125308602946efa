"""One training loop for every learned piece of the harness (token classifiers, samplers):
seeded data order, AdamW with a one-cycle schedule, a progress bar, early stopping on a
validation score, the best epoch kept; and a disk cache of the result keyed by everything
it depends on (:func:`cached_fit`), loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from samplerbench.seeding import derive_seed
from samplerbench.training import checkpoints as checkpoints

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitConfig:
    epochs: int = 10
    batch: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup: float = 0.1
    patience: int = 4  # epochs without a better validation score before stopping
    seed: int = 0


def fit(model: nn.Module, cfg: FitConfig, num_train: int,
        batch_loss: Callable[[nn.Module, np.ndarray, int, int], torch.Tensor],
        validate: Callable[[nn.Module], float], desc: str, progress: bool = True,
        initial_score: bool = True) -> dict:
    """Train ``model`` in place: each step ``batch_loss(model, ids, epoch, step)`` on a seeded
    permutation of ``range(num_train)``; ``validate(model)`` (higher is better) after each
    epoch, and before the first when ``initial_score`` (a pretrained start may be the best).
    Leaves the best epoch's weights in the model, in eval mode; returns the training record."""
    t0 = time.perf_counter()
    steps = int(np.ceil(num_train / cfg.batch))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(cfg.epochs * steps, 1),
                                                pct_start=cfg.warmup)
    history, best, best_epoch, best_state = [], -np.inf, 0, None
    if initial_score:
        model.eval()
        best = validate(model)
        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        history.append({"epoch": 0, "val": best})
    for epoch in range(cfg.epochs):
        model.train()
        order = np.random.Generator(np.random.PCG64(derive_seed("fit-order", cfg.seed, epoch))).permutation(num_train)
        losses = []
        bar = tqdm(range(steps), desc=f"{desc} epoch {epoch + 1}/{cfg.epochs}", disable=not progress, mininterval=1.0)
        for step in bar:
            loss = batch_loss(model, order[step * cfg.batch:(step + 1) * cfg.batch], epoch, step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
        model.eval()
        score = validate(model)
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "val": score})
        log.info("%s epoch %d: loss %.3f, val %.3f", desc, epoch + 1, np.mean(losses), score)
        if progress:
            tqdm.write(f"{desc} epoch {epoch + 1}: train loss {np.mean(losses):.3f}, val {score:.3f}")
        if score > best:
            best, best_epoch = score, epoch + 1
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif epoch + 1 - best_epoch >= cfg.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return {"fit": asdict(cfg), "best_epoch": best_epoch, "val": float(best), "history": history,
            "epochs_run": len([h for h in history if h["epoch"] > 0]), "fit_wall_s": time.perf_counter() - t0}


def cached_fit(kind: str, key_parts: list, build: Callable[[], nn.Module],
               train: Callable[[nn.Module], dict], cache_dir: Path) -> tuple[nn.Module, dict]:
    """Load ``<cache>/models/<kind>-<key>.pt`` if present, else build, train and save it.
    ``build`` and ``train`` run under a forked torch RNG seeded from the key, so the caller's
    RNG state is untouched and a retrain gives the same weights on CPU. Returns the model
    frozen in eval mode and its record (with ``cached``, ``key`` and ``checkpoint``)."""
    key = checkpoints.key_of(kind, *key_parts)
    path = Path(cache_dir) / "models" / f"{kind}-{key}.pt"
    if path.is_file():
        model = build()
        state, meta = checkpoints.load(path)
        model.load_state_dict(state)
        model.eval().requires_grad_(False)
        return model, {**meta, "checkpoint": str(path), "cached": True}
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed("init", kind, key))
        model = build()
        meta = train(model)
    meta = {**meta, "key": key, "kind": kind, "wall_s": time.perf_counter() - t0, "torch": torch.__version__}
    checkpoints.save(path, model.state_dict(), meta)
    model.eval().requires_grad_(False)
    return model, {**meta, "checkpoint": str(path), "cached": False}
