"""What the study-made encoders share: configuration checks, the cache folder,
seeded training and the steps of a training run.

Each study-made encoder (:mod:`semalign.models.radiology_bert`,
:mod:`semalign.models.phantom_ssl`) is a folder under
``paths.cache_dir()/encoders/<prefix><key>/`` (:func:`build_cached`), the key
hashing everything its weights depend on. Randomness is local: batch order
comes from an explicit ``torch.Generator``, and initialisation and dropout run
inside a seeded fork of the global RNG (:func:`seeded_training`), on a fixed
number of threads, so a build gives the same weights on every machine.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from semalign.core.errors import SemalignError
from semalign.core import cache, paths

ENCODER_FILE = "semalign_encoder.json"


def check_ranges(config: Any, checks: dict[str, bool], see: str = "its docstring") -> None:
    """Raise naming the first field of ``config`` whose check is False."""
    for name, ok in checks.items():
        if not ok:
            raise SemalignError(f"{type(config).__name__}.{name}={getattr(config, name)!r} is out of range; see {see}")


def encoder_folder(prefix: str, inputs: dict[str, Any]) -> Path:
    """Where the study-made encoder whose cache inputs are ``inputs`` is kept:
    ``paths.cache_dir()/encoders/<prefix><key>``, the key hashing ``inputs``."""
    return paths.cache_dir() / "encoders" / f"{prefix}{cache.hash_key(inputs)}"


def build_cached(prefix: str, inputs: dict[str, Any], names: tuple[str, ...],
                 write: Callable[[Path], dict[str, Any]]) -> Path:
    """The encoder folder for ``inputs`` (see :func:`encoder_folder`; weights in
    ``model.safetensors``, description in ``semalign_encoder.json``), built by
    ``write`` on first use through :func:`semalign.core.cache.build_folder`."""
    return cache.build_folder(encoder_folder(prefix, inputs), write, description=ENCODER_FILE,
                              checked="model.safetensors", names=names)


@contextlib.contextmanager
def seeded_training(seed: int, threads: int, progress: bool, **bar_options):
    """A training run's progress bar (counting steps), on ``threads`` torch threads,
    inside a fork of the global RNG seeded with ``seed + 1``: initialisation and
    dropout draw from the global CPU generator, and the fork restores the caller's
    state on exit."""
    from semalign.core.progress import progress_bar

    with (progress_bar(unit="step", disable=not progress, **bar_options) as bar,
          torch.random.fork_rng(devices=[]), torch_threads(threads)):
        torch.random.default_generator.manual_seed(seed + 1)
        yield bar


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Run with ``threads`` intra-op threads (None: leave as is); restore the setting after."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return max(0.0, (total - step) / max(1, total - warmup))


def length_grouped_batches(lengths: list[int], batch_size: int, steps: int, generator: torch.Generator, group: int):
    """``steps`` full batches of pair indices, drawn epoch by epoch from ``generator``.

    Each epoch is a seeded permutation (the remainder that does not fill a batch
    is left out). With ``group`` > 1 the permutation is cut into runs of
    ``group * batch_size`` pairs, each run is sorted by ``lengths`` and cut into
    batches, and the batches are shuffled: batches of similar length need less
    padding and stay random in content.
    """
    n_pairs = len(lengths)
    per_epoch = n_pairs // batch_size
    step = 0
    while True:
        order = torch.randperm(n_pairs, generator=generator).tolist()[: per_epoch * batch_size]
        if group > 1:
            run = group * batch_size
            order = [i for s in range(0, len(order), run) for i in sorted(order[s : s + run], key=lambda i: lengths[i])]
        batches = [order[b * batch_size : (b + 1) * batch_size] for b in range(per_epoch)]
        if group > 1:
            batches = [batches[b] for b in torch.randperm(per_epoch, generator=generator).tolist()]
        for batch in batches:
            if step == steps:
                return
            yield batch
            step += 1


def warmup_adamw(model: torch.nn.Module, lr: float, weight_decay: float, steps: int, warmup_fraction: float,
                 betas: tuple[float, float] = (0.9, 0.999)):
    """(trained parameters, AdamW, schedule): AdamW over the parameters that require
    gradients, without weight decay on biases and LayerNorm; the rate warms up
    linearly over ``warmup_fraction`` of the ``steps``, then decays linearly to 0."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=betas)
    warmup = int(warmup_fraction * steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps, warmup))
    return params, optimizer, schedule


def run_stage(step_fn, batches, optimizer_parts, max_grad_norm: float, bar, what: str, fix: str,
              **postfix) -> tuple[list[float], float]:
    """A training step per batch of indices (``step_fn(index)`` is the loss) with
    the :func:`warmup_adamw` parts, the gradient norm clipped; returns the losses and
    the seconds taken. A non-finite loss is an error naming ``what`` loss it is and the ``fix``."""
    params, optimizer, schedule = optimizer_parts
    started = time.perf_counter()
    losses: list[float] = []
    for index in batches:
        loss = step_fn(index)
        if not torch.isfinite(loss):
            raise SemalignError(f"{what} loss became {loss.item()} at step {len(losses)}; {fix}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.item()))
        bar.update(1)
        bar.set_postfix(**postfix, loss=f"{losses[-1]:.3f}")
    return losses, time.perf_counter() - started


def stage_summary(losses: list[float], batch_size: int, n_items: int, seconds: float) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "steps": len(losses),
        "epochs": len(losses) * batch_size / n_items,
        "seconds": round(seconds, 2),
    }
    if losses:
        summary["loss"] = _loss_summary(losses)
    return summary


def _loss_summary(losses: list[float], points: int = 20) -> dict[str, Any]:
    n = len(losses)
    k = max(1, n // 10)
    edges = np.linspace(0, n, min(points, n) + 1).round().astype(int)
    return {
        "first": losses[0],
        "last": losses[-1],
        "mean_first_10pct": float(np.mean(losses[:k])),
        "mean_last_10pct": float(np.mean(losses[-k:])),
        "min": float(np.min(losses)),
        "curve": [
            {"steps": [int(lo), int(hi)], "mean": float(np.mean(losses[lo:hi]))} for lo, hi in zip(edges[:-1], edges[1:])
        ],
    }

