"""Tasks: what the training program needs from a data set, for images and for text.

A task yields resumable training batches (the batch of (epoch, step) never depends on
what ran before), evaluation splits, the number of classes, and the keyword arguments a
model needs to fit the data (input channels and size, or vocabulary and context length).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from .config import DataConfig
from .data import (
    CIFAR10_HOWTO,
    CharCorpus,
    ImageDataset,
    batches_per_epoch,
    detect_cifar,
    find_data_root,
    iterate_batches,
    iterate_text_batches,
    load_char_corpus,
    load_eval_text,
    load_images,
    sequential_text_batches,
)

__all__ = ["Task", "ImageTask", "TextTask", "build_task"]

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


@dataclass
class ImageTask(Task):
    data: ImageDataset
    config: DataConfig
    seed: int
    is_text: bool = False

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

    def train_batches(self, *, epoch: int, start_step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        d = self.data
        return iterate_batches(
            d.train_x, d.train_y, self.config.batch_size, shuffle=True, seed=self.seed, epoch=epoch,
            start_step=start_step, drop_last=True, augment=self.config.augment, padding=self.padding,
            mean=d.mean, std=d.std,
        )

    def eval_splits(self) -> dict[str, Iterable[tuple[torch.Tensor, torch.Tensor]]]:
        d = self.data
        splits = {}
        if len(d.val_x):
            splits["val"] = _Replayable(lambda: iterate_batches(d.val_x, d.val_y, self.config.eval_batch_size, mean=d.mean, std=d.std))
        splits["test"] = _Replayable(lambda: iterate_batches(d.test_x, d.test_y, self.config.eval_batch_size, mean=d.mean, std=d.std))
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


def build_task(config: DataConfig, *, seed: int) -> Task:
    """The task for ``config``; CIFAR-10 with no data folder falls back to ``config.fallback``."""
    if config.is_text:
        name = "tinyshakespeare"
        return TextTask(load_char_corpus(name, config.root, val_fraction=0.1), config, seed)
    name, val_size = config.name, config.val_size
    if name == "cifar10" and config.root is None and config.fallback and not _has_cifar10():
        log.warning("CIFAR-10 was not found: %s. Running on the %r data set instead.", CIFAR10_HOWTO, config.fallback)
        name = config.fallback
        if val_size:  # a validation split sized for CIFAR-10 may not fit the small stand-in: hold out 10% at most
            val_size = min(val_size, len(load_images(name, val_size=0, seed=seed).train_x) // 10)
    return ImageTask(load_images(name, config.root, val_size=val_size, seed=seed), config, seed)


def _has_cifar10() -> bool:
    return detect_cifar(find_data_root(None)) is not None
