"""One training loop for every trained piece of the harness (the frame classifier and its frame
pretraining, token ViTs, SOSampler's scorer, SLLM's head, the retrieval model, mmSampler's
policy, the segmentation net): seeded data order, AdamW with a one-cycle schedule, a progress
bar, early stopping on a validation score, the best epoch kept, the training record returned;
and one disk cache of the result keyed by everything it depends on (:func:`cached_fit`).
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

from samplerbench.devices import rng_devices
from samplerbench.seeding import derive_seed
from samplerbench.training import checkpoints

log = logging.getLogger(__name__)

#: batch_loss(model, ids, epoch, step, rng) -> scalar loss; ``rng`` is the epoch's data-order
#: generator, for random choices that belong to the batch (TSN offsets, flips, frame picks)
BatchLoss = Callable[[nn.Module, np.ndarray, int, int, np.random.Generator], torch.Tensor]


@dataclass(frozen=True)
class FitConfig:
    epochs: int = 10
    batch: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup: float = 0.1  # share of the steps the one-cycle schedule warms up for
    patience: int = 4  # epochs without a better validation score before stopping
    seed: int = 0
    #: "permutation": each epoch visits a seeded permutation of the items in batches;
    #: "replacement": each step draws ``batch`` items with replacement (fixed-step training)
    draw: str = "permutation"
    steps: int | None = None  # steps per epoch (default: ceil(items / batch))


def _order_rng(key: tuple, seed: int, epoch: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(derive_seed(*key, seed, epoch)))


def epoch_steps(cfg: FitConfig, num_train: int) -> int:
    """Steps per epoch: ``cfg.steps``, else enough batches to visit every item once."""
    return cfg.steps or int(np.ceil(num_train / cfg.batch))


def epoch_batches(cfg: FitConfig, num_train: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A ``permutation`` epoch's items per step, from the first draw of the epoch's order
    generator (:func:`fit`'s own; a caller preparing an epoch's inputs ahead calls it on a
    generator made the same way)."""
    order = rng.permutation(num_train)
    return [order[s * cfg.batch:(s + 1) * cfg.batch] for s in range(epoch_steps(cfg, num_train))]


def default_order_rng(cfg: FitConfig) -> Callable[[int], np.random.Generator]:
    """The epochs' order generators :func:`fit` uses unless given its own."""
    return lambda epoch: _order_rng(("fit-order",), cfg.seed, epoch)


def fit(model: nn.Module, cfg: FitConfig, num_train: int, batch_loss: BatchLoss,
        validate: Callable[[nn.Module], float] | None, desc: str, progress: bool = True,
        initial_score: bool = True, order_rng: Callable[[int], np.random.Generator] | None = None) -> dict:
    """Train ``model`` in place. Each epoch draws its items from ``order_rng(epoch)`` (default:
    seeded by ("fit-order", seed, epoch)) and calls ``batch_loss`` per step; ``validate(model)``
    (higher is better) after each epoch, and before the first when ``initial_score`` (a
    pretrained start may be the best). With a validation, the best epoch's weights are kept and
    training stops after ``patience`` epochs without improvement; without, the last weights.
    Leaves the model in eval mode; returns the training record."""
    if cfg.draw not in ("permutation", "replacement"):
        raise ValueError(f"FitConfig.draw must be permutation or replacement, not {cfg.draw!r}")
    t0 = time.perf_counter()
    order_rng = order_rng or default_order_rng(cfg)
    steps = epoch_steps(cfg, num_train)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    total = max(cfg.epochs * steps, 1)
    # OneCycleLR divides by (warmup x total - 1): a warm-up of exactly one step (10 steps at 0.1)
    # raises ZeroDivisionError; a hair more (none for a single step) keeps that schedule and leaves
    # every other one as it is
    warmup = cfg.warmup
    if warmup * total == 1:
        warmup = (1 + 1e-6) / total if total > 1 else 0.0
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=warmup)
    history, best, best_epoch, best_state = [], -np.inf, 0, None
    if validate is not None and initial_score:
        model.eval()
        best = validate(model)
        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        history.append({"epoch": 0, "val": best})
    for epoch in range(cfg.epochs):
        model.train()
        rng = order_rng(epoch)
        batches = epoch_batches(cfg, num_train, rng) if cfg.draw == "permutation" else None
        losses = []
        bar = tqdm(range(steps), desc=f"{desc} epoch {epoch + 1}/{cfg.epochs}", disable=not progress, mininterval=1.0)
        for step in bar:
            ids = batches[step] if batches is not None else rng.integers(0, num_train, size=cfg.batch)
            loss = batch_loss(model, ids, epoch, step, rng)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
        model.eval()
        entry = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "final_loss": float(np.mean(losses[-10:]))}
        if validate is None:
            history.append(entry)
            continue
        score = validate(model)
        history.append({**entry, "val": score})
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
    record = {"fit": asdict(cfg), "history": history, "epochs_run": len([h for h in history if h["epoch"] > 0]),
              "fit_wall_s": time.perf_counter() - t0}
    if validate is not None:
        record.update(best_epoch=best_epoch, val=float(best))
    return record


def cached_fit(kind: str, key_parts: list, build: Callable[[], nn.Module],
               train: Callable[[nn.Module], dict], cache_dir: Path, init_seed: int | None = None,
               device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Load ``<cache>/models/<kind>-<key>.pt`` if it is there and sound, else build, train and
    save it (a corrupt or incomplete file is reported with its path and retrained). ``build``
    and ``train`` run under a forked torch RNG seeded with ``init_seed`` (default: from the
    content key, which leaves out the cache version, so that a version bump keeps the weights),
    so the caller's RNG state is untouched and a retrain gives the same weights on CPU. Returns
    the model frozen in eval mode and its record (with ``cached``, ``key`` and ``checkpoint``).

    ``device``: where the model trains and is returned (``train`` moves its batches to the
    model's device). It is built on the CPU under the seed, so every device starts from the same
    weights; the key leaves the device out (a checkpoint serves every device) and the record
    names the one it trained on."""
    key = checkpoints.key_of(kind, *key_parts)
    path = Path(cache_dir) / "models" / f"{kind}-{key}.pt"
    stored = checkpoints.load_or_none(path)
    content = checkpoints.content_key(kind, *key_parts)
    if stored is not None:
        state, meta = stored
        with torch.random.fork_rng(devices=rng_devices(device)):  # building draws init weights: not the caller's RNG
            model = build()
        try:  # a well-formed file of another model (or another key's weights) is retrained, not loaded
            if meta.get("content_key", content) != content:
                raise ValueError(f"it holds the weights of key {meta.get('content_key')}, not {content}")
            model.load_state_dict(state)
        except (RuntimeError, ValueError) as e:
            checkpoints.set_aside(path, f"does not fit its model ({(str(e).splitlines() or [''])[0][:160]})")
        else:
            model.to(device).eval().requires_grad_(False)
            return model, {**meta, "content_key": content, "checkpoint": str(path), "cached": True}
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=rng_devices(device)):
        seed = derive_seed("init", kind, content) if init_seed is None else init_seed
        torch.manual_seed(seed)
        model = build().to(device)
        meta = train(model)
    meta = {**meta, "key": key, "content_key": content, "kind": kind,
            "wall_s": time.perf_counter() - t0, "torch": torch.__version__, "device": str(device)}
    checkpoints.save(path, model.state_dict(), meta)
    model.eval().requires_grad_(False)
    return model, {**meta, "checkpoint": str(path), "cached": False}
