"""Resumable mini-batches of images: the same (seed, epoch, step) always gives the same batch.

The permutation of epoch e comes from a generator seeded with (seed, "shuffle", e); the
augmentation of step s of epoch e from one seeded with (seed, "augment", e, s). No random
state runs from one step to the next, so ``iterate_batches(..., epoch=e, start_step=s)``
yields exactly what an uninterrupted epoch e yields from its step s on: a resumed
training run sees the data an uninterrupted one sees.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from .augment import augment_batch, normalize, to_float
from .seeding import make_generator
from ..checks import count

__all__ = ["iterate_batches", "iterate_labels", "batches_per_epoch"]


def batches_per_epoch(num: int, batch_size: int, *, drop_last: bool) -> int:
    """How many batches one epoch over ``num`` examples has."""
    count(batch_size, f"batch_size={batch_size!r} must be an integer >= 1")
    return num // batch_size if drop_last else math.ceil(num / batch_size)


def iterate_batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
    start_step: int = 0,
    drop_last: bool = False,
    augment: bool = False,
    padding: int = 4,
    mean: torch.Tensor | None = None,
    std: torch.Tensor | None = None,
    device: torch.device | str | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches (x, y) of epoch ``epoch`` from step ``start_step`` on.

    x: (N, C, H, W) uint8 (scaled to [0, 1]) or float; y: (N,). Yields x float32
    (B, C, H, W), augmented (random crop with ``padding`` zero pixels, random flip) when
    ``augment``, then normalised with ``mean``/``std`` (C,) when given; y int64 (B,). Both are
    moved to ``device`` (default: where x is) before any float work, so uint8 crosses to an
    accelerator, not float32.
    """
    if x.dim() != 4 or y.shape != (len(x),):
        raise ValueError(f"expected images (N, C, H, W) and labels (N,); got {tuple(x.shape)} and {tuple(y.shape)}")
    steps = _check_start(len(x), batch_size, start_step, drop_last)
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std (normalise) or neither")
    if mean is not None and (mean.shape != (x.shape[1],) or std.shape != (x.shape[1],)):
        raise ValueError(f"mean and std must have shape ({x.shape[1]},); got {tuple(mean.shape)} and {tuple(std.shape)}")
    # Fail here, not at the first batch: a bad seed or epoch is a configuration error.
    order = _order(len(x), shuffle, seed, epoch)
    make_generator(seed, "augment", epoch, start_step)
    device = x.device if device is None else torch.device(device)
    return _batches(x, y, batch_size, order, seed, epoch, start_step, steps, augment, padding, mean, std, device)


def _batches(x, y, batch_size, order, seed, epoch, start_step, steps, augment, padding, mean, std, device):
    for step in range(start_step, steps):
        idx = _indices(step, batch_size, len(x), order)
        xb = to_float(x[idx].to(device, non_blocking=True))  # (B, C, H, W) float32
        yb = y[idx].to(device=device, dtype=torch.int64, non_blocking=True)  # (B,)
        if augment:
            xb = augment_batch(xb, generator=make_generator(seed, "augment", epoch, step), padding=padding)
        if mean is not None:
            xb = normalize(xb, mean, std)
        yield xb, yb


def iterate_labels(
    y: torch.Tensor,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
    start_step: int = 0,
    drop_last: bool = False,
) -> Iterator[tuple[None, torch.Tensor]]:
    """The labels of :func:`iterate_batches` with the same arguments, batch for batch, as ``(None, y)``.

    For a process that needs the targets but not the images (a distributed rank that does
    not hold the first component): same permutation, no image work at all.
    """
    steps = _check_start(len(y), batch_size, start_step, drop_last)
    return _labels(y, batch_size, _order(len(y), shuffle, seed, epoch), start_step, steps)


def _labels(y, batch_size, order, start_step, steps):
    for step in range(start_step, steps):
        yield None, y[_indices(step, batch_size, len(y), order)].to(torch.int64)


# What iterate_batches and iterate_labels share, so that both walk an epoch in the same order.


def _check_start(num: int, batch_size: int, start_step, drop_last: bool) -> int:
    """The epoch's number of batches, after checking that ``start_step`` lies within it."""
    steps = batches_per_epoch(num, batch_size, drop_last=drop_last)
    count(start_step, f"start_step={start_step!r} must be in 0..{steps} (epoch of {steps} batches of {batch_size})", minimum=0, maximum=steps)
    return steps


def _order(num: int, shuffle: bool, seed: int, epoch: int) -> torch.Tensor | None:
    """The epoch's permutation of the examples (None: in order)."""
    return torch.randperm(num, generator=make_generator(seed, "shuffle", epoch)) if shuffle else None


def _indices(step: int, batch_size: int, num: int, order: torch.Tensor | None):
    lo, hi = step * batch_size, min((step + 1) * batch_size, num)
    return order[lo:hi] if order is not None else slice(lo, hi)
