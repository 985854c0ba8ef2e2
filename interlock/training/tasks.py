"""Tasks: what the training program needs from a data set, for images and for text.

A task yields resumable training batches (the batch of (epoch, step) never depends on
what ran before), evaluation splits, the number of classes, and the keyword arguments a
model needs to fit the data (input channels and size, or vocabulary and context length).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

import torch

from .config import DataConfig
from ..data import (
    CIFAR10_HOWTO,
    CharCorpus,
    ImageDataset,
    batches_per_epoch,
    detect_cifar,
    find_data_root,
    iterate_batches,
    iterate_labels,
    iterate_text_batches,
    load_char_corpus,
    load_eval_text,
    load_images,
    sequential_text_batches,
)

__all__ = ["Task", "ImageTask", "TextTask", "build_task", "resolve_data"]

log = logging.getLogger(__name__)


class Task:
    is_text: bool
    num_classes: int
    steps_per_epoch: int
    model_kwargs: dict

    def train_batches(self, *, epoch: int, start_step: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def eval_splits(self) -> dict[str, Iterable[tuple[torch.Tensor, torch.Tensor]]]:
        raise NotImplementedError

    def drop_inputs(self) -> None:
        """This process never feeds the network (a distributed rank past the first): batches may
        carry ``None`` for the inputs, and the task may free them. The targets stay."""


@dataclass
class ImageTask(Task):
    data: ImageDataset
    config: DataConfig
    seed: int
    is_text: bool = False
    inputs: bool = True  # False after drop_inputs(): batches are (None, y)

    def __post_init__(self) -> None:
        if self.config.train_limit and self.config.train_limit < len(self.data.train_x):
            self.data = self.data.limit_train(self.config.train_limit)
        self.num_classes = self.data.num_classes
        if len(self.data.train_x) < self.config.batch_size:
            raise ValueError(
                f"data.batch_size={self.config.batch_size} exceeds the {len(self.data.train_x)} training images; lower it"
            )
        self.steps_per_epoch = batches_per_epoch(len(self.data.train_x), self.config.batch_size, drop_last=True)
        c, h, w = self.data.train_x.shape[1:]
        self.model_kwargs = {"num_classes": self.num_classes, "in_channels": int(c), "image_size": int(h)}
        # 4-pixel padding for 32x32 CIFAR, proportionally less for small images (8x8 digits: 1 pixel).
        self.padding = max(1, int(h) // 8)

    def drop_inputs(self) -> None:
        # The images are most of a rank's memory; ranks past the first only need the labels.
        self.inputs = False
        d = self.data
        # The same shapes, in one image's memory (a copy, so the full tensors can be freed).
        stub = lambda x: x[:1].clone().expand(len(x), *x.shape[1:])
        self.data = replace(d, train_x=stub(d.train_x), val_x=stub(d.val_x), test_x=stub(d.test_x))

    def train_batches(self, *, epoch: int, start_step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        d = self.data
        if not self.inputs:
            return iterate_labels(d.train_y, self.config.batch_size, shuffle=True, seed=self.seed, epoch=epoch,
                                  start_step=start_step, drop_last=True)
        return iterate_batches(
            d.train_x, d.train_y, self.config.batch_size, shuffle=True, seed=self.seed, epoch=epoch,
            start_step=start_step, drop_last=True, augment=self.config.augment, padding=self.padding,
            mean=d.mean, std=d.std,
        )

    def eval_splits(self) -> dict[str, Iterable[tuple[torch.Tensor, torch.Tensor]]]:
        d = self.data
        size = self.config.eval_batch_size

        def batches(x, y):
            if not self.inputs:
                return _Replayable(lambda: iterate_labels(y, size))
            return _Replayable(lambda: iterate_batches(x, y, size, mean=d.mean, std=d.std))

        splits = {}
        if len(d.val_x):
            splits["val"] = batches(d.val_x, d.val_y)
        splits["test"] = batches(d.test_x, d.test_y)
        return splits


@dataclass
class TextTask(Task):
    corpus: CharCorpus
    config: DataConfig
    seed: int
    is_text: bool = True

    def __post_init__(self) -> None:
        self.num_classes = len(self.corpus.vocab)
        # Random windows have no natural epoch: call one "epoch" a pass over as many tokens as the corpus has.
        self.steps_per_epoch = max(1, len(self.corpus.train) // (self.config.batch_size * self.config.block_size))
        self.model_kwargs = {"vocab_size": self.num_classes, "block_size": self.config.block_size}
        self.eval_text = None
        if self.config.eval_text:
            self.eval_text = load_eval_text(self.config.eval_text, self.corpus.vocab, self.config.root)

    def train_batches(self, *, epoch: int, start_step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        step = epoch * self.steps_per_epoch + start_step
        return iterate_text_batches(
            self.corpus.train, batch_size=self.config.batch_size, block_size=self.config.block_size,
            seed=self.seed, start_step=step, num_steps=self.steps_per_epoch - start_step,
        )

    def eval_splits(self) -> dict[str, Iterable[tuple[torch.Tensor, torch.Tensor]]]:
        c = self.config

        def limited(tokens):
            return _Replayable(lambda: itertools.islice(
                sequential_text_batches(tokens, batch_size=c.eval_batch_size, block_size=c.block_size), c.eval_batches))

        # The held-out end of the training corpus is the "test" split; an evaluation text
        # (e.g. WikiText-2) is scored with the training vocabulary as a further split.
        splits = {"test": limited(self.corpus.val)}
        if self.eval_text is not None:
            splits[self.config.eval_text] = limited(self.eval_text.test)
        return splits


class _Replayable:
    """An iterable that makes a fresh iterator each time (every evaluation walks the split anew)."""

    def __init__(self, make) -> None:
        self._make = make

    def __iter__(self):
        return iter(self._make())


def resolve_data(config: DataConfig, *, seed: int = 0) -> DataConfig:
    """``config`` as it will really be used: CIFAR-10 or, when it is missing and ``data.fallback``
    asks for one, the fallback data set, recorded as such (``name`` is the fallback's,
    ``substitute_for`` the missing set's), so config.json, metrics and plot titles say what ran.

    Without ``data.fallback`` a missing CIFAR-10 is an error that says how to get it. The
    result is a fixed point (resolving it again changes nothing), so a launcher can resolve
    once and every rank trains on the same data.
    """
    if config.name != "cifar10" or config.substitute_for or config.factory:  # (data.factory: your own data)
        return config
    root = find_data_root(config.root)
    if detect_cifar(root) is not None:
        return config
    where = f"in {root}" if root is not None else "(no data folder: --data, $INTERLOCK_DATA and ../shared/data are all absent)"
    if not config.fallback:
        raise FileNotFoundError(
            f"CIFAR-10 was not found {where}: {CIFAR10_HOWTO}. To train on scikit-learn's bundled handwritten "
            f"digits instead (recorded as digits, not cifar10), set data.fallback=digits"
        )
    log.warning("CIFAR-10 was not found %s: %s. data.fallback=%s: running on %r instead (recorded as such).",
                where, CIFAR10_HOWTO, config.fallback, config.fallback)
    val_size = config.val_size
    if val_size:  # a validation split sized for CIFAR-10 may not fit the small stand-in: hold out 10% at most
        val_size = min(val_size, len(load_images(config.fallback, config.root, val_size=0, seed=seed).train_x) // 10)
    return replace(config, name=config.fallback, substitute_for="cifar10", val_size=val_size)


def build_task(config: DataConfig, *, seed: int) -> Task:
    """The task for ``config`` (after :func:`resolve_data`: a missing CIFAR-10 is an error or the asked-for fallback)."""
    config = resolve_data(config, seed=seed)
    if config.is_text:
        name = "tinyshakespeare"
        return TextTask(load_char_corpus(name, config.root, val_fraction=0.1), config, seed)
    return ImageTask(load_images(config.name, config.root, val_size=config.val_size, seed=seed), config, seed)
