"""Image data sets as one bundle: train / validation / test tensors, classes, normalisation stats.

    data = load_images("cifar10", root=None, val_size=5000, seed=0)
    data.train_x  # (N, 3, 32, 32) uint8
    data.mean     # (3,) float32, of train_x / 255: the training split only

Names: "cifar10", "cifar100" (fine labels), "mnist", "digits" (scikit-learn's bundled 8x8
digits; no files needed). The validation split is carved out of the official training
split by a permutation seeded with ``seed``; the test split is the official one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..checks import count
from .cifar import CIFAR10_HOWTO, load_cifar
from .digits import load_digits
from .mnist import load_mnist
from .paths import ENV_VAR, find_data_root
from .raw import RawSplits
from .seeding import make_generator

__all__ = ["ImageDataset", "load_images", "channel_stats", "split_validation", "IMAGE_DATASETS"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """One image data set, split and ready for :func:`interlock.data.iterate_batches`.

    Images are uint8 (N, C, H, W), labels int64 (N,). With no validation split, ``val_x`` is
    (0, C, H, W) and ``val_y`` (0,). ``mean``/``std`` are float32 (C,) on the [0, 1] pixel
    scale, computed from ``train_x`` only (never from validation or test images).
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    class_names: tuple[str, ...]
    mean: torch.Tensor
    std: torch.Tensor
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{self.name}: {len(self.class_names)} class names for num_classes={self.num_classes}")
        shape = None
        for split in ("train", "val", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if x.dtype != torch.uint8 or x.dim() != 4:
                raise ValueError(f"{self.name}: {split}_x must be uint8 (N, C, H, W); got {x.dtype} of shape {tuple(x.shape)}")
            if shape is not None and x.shape[1:] != shape:
                raise ValueError(f"{self.name}: {split}_x images are {tuple(x.shape[1:])} but train_x images are {tuple(shape)}")
            shape = x.shape[1:]
            if y.dtype != torch.int64 or y.shape != (len(x),):
                raise ValueError(f"{self.name}: {split}_y must be int64 of shape ({len(x)},); got {y.dtype} of shape {tuple(y.shape)}")
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise ValueError(f"{self.name}: {split}_y has labels outside 0..{self.num_classes - 1}")
        if len(self.train_x) == 0:
            raise ValueError(f"{self.name}: the training split is empty")
        C = self.train_x.shape[1]
        for stat in ("mean", "std"):
            value = getattr(self, stat)
            if value.shape != (C,) or value.dtype != torch.float32:
                raise ValueError(f"{self.name}: {stat} must be float32 of shape ({C},); got {value.dtype} of shape {tuple(value.shape)}")
        if not bool((self.std > 0).all()):
            raise ValueError(f"{self.name}: std {self.std.tolist()} has a zero: a channel of train_x is constant")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        C, H, W = self.train_x.shape[1:]
        return (C, H, W)

    @property
    def in_channels(self) -> int:
        return self.train_x.shape[1]

    def limit_train(self, num: int) -> ImageDataset:
        """A copy that trains on the first ``num`` training images only (quick runs), with
        mean/std recomputed from them; validation and test splits unchanged. (The dataset is
        frozen: replacing train_x in place would leave stats of images no longer trained on.)"""
        count(num, f"num={num!r} must be an integer in 1..{len(self.train_x)} (the training split's size)", maximum=len(self.train_x))
        x = self.train_x[:num]
        mean, std = channel_stats(x)
        return replace(self, train_x=x, train_y=self.train_y[:num], mean=mean, std=std, source=f"{self.source}; first {num} training images")


def channel_stats(x: torch.Tensor, *, chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (population) std of uint8 images (N, C, H, W), on the [0, 1] scale.

    Computed exactly from per-channel histograms of the 256 pixel values (chunked, so a large
    set needs no float copy), then returned as float32 (C,) tensors.
    """
    if x.dtype != torch.uint8 or x.dim() != 4 or len(x) == 0:
        raise ValueError(f"channel_stats needs uint8 images (N, C, H, W) with N > 0; got {x.dtype} of shape {tuple(x.shape)}")
    C = x.shape[1]
    hist = torch.zeros(C * 256, dtype=torch.int64)
    offsets = (torch.arange(C) * 256)[None, :, None]  # (1, C, 1): channel c counts into bins c*256..
    for part in x.split(chunk):
        values = part.reshape(len(part), C, -1).to(torch.int64) + offsets  # (n, C, H*W)
        hist += torch.bincount(values.flatten(), minlength=C * 256)
    hist = hist.view(C, 256).to(torch.float64)
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    pixels = hist.sum(dim=1)  # per channel
    mean = (hist * levels).sum(dim=1) / pixels
    var = (hist * (levels[None, :] - mean[:, None]) ** 2).sum(dim=1) / pixels
    return mean.to(torch.float32), var.sqrt().to(torch.float32)


def split_validation(num: int, val_size: int, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, val) of a random split of ``num`` examples, each sorted; the same for the
    same (num, val_size, seed)."""
    count(val_size, f"val_size={val_size!r} must be an integer in 0..{num - 1} (the training split has {num} images)",
          minimum=0, maximum=num - 1)
    order = torch.randperm(num, generator=make_generator(seed, "validation-split"))
    return order[val_size:].sort().values, order[:val_size].sort().values


def _needs_root(name: str, root: Path | None, howto: str) -> Path:
    if root is None:
        raise FileNotFoundError(
            f"no data folder for {name}: pass one (--data / root=...), set ${ENV_VAR}, "
            f"or put the data in ../shared/data beside the checkout; {howto}"
        )
    return root


def _cifar10(root: Path | None) -> RawSplits:
    return load_cifar(_needs_root("cifar10", root, CIFAR10_HOWTO), "cifar10")


def _cifar100(root: Path | None) -> RawSplits:
    return load_cifar(_needs_root("cifar100", root, "the folder must hold cifar-100-binary/ or cifar-100-python/"), "cifar100")


def _mnist(root: Path | None) -> RawSplits:
    return load_mnist(_needs_root("mnist", root, "the folder must hold mnist/ with the four IDX files"))


def _digits(root: Path | None) -> RawSplits:
    return load_digits()


_LOADERS: dict[str, Callable[[Path | None], RawSplits]] = {
    "cifar10": _cifar10,
    "cifar100": _cifar100,
    "mnist": _mnist,
    "digits": _digits,
}
_NEEDS_FILES = {"cifar10", "cifar100", "mnist"}
IMAGE_DATASETS = tuple(_LOADERS)


def load_images(name: str, root: str | Path | None = None, *, val_size: int = 0, seed: int = 0) -> ImageDataset:
    """Load ``name`` from ``root`` (default: :func:`find_data_root`), hold out ``val_size``
    training images for validation (0: none), and compute the normalisation stats from
    what remains for training."""
    if name not in _LOADERS:
        raise ValueError(f"unknown image data set {name!r}; use one of {list(IMAGE_DATASETS)}")
    folder = find_data_root(root) if name in _NEEDS_FILES else None
    raw = _LOADERS[name](folder)
    train_idx, val_idx = split_validation(len(raw.train_x), val_size, seed=seed)
    if val_size:
        train_x, train_y = raw.train_x[train_idx], raw.train_y[train_idx]
        val_x, val_y = raw.train_x[val_idx], raw.train_y[val_idx]
    else:
        train_x, train_y = raw.train_x, raw.train_y
        val_x, val_y = raw.train_x[:0], raw.train_y[:0]
    mean, std = channel_stats(train_x)
    logger.info(
        "%s: %d train, %d validation, %d test images of %s; mean %s std %s",
        name, len(train_x), len(val_x), len(raw.test_x), tuple(train_x.shape[1:]),
        [round(v, 4) for v in mean.tolist()], [round(v, 4) for v in std.tolist()],
    )
    return ImageDataset(
        name=name,
        train_x=train_x,
        train_y=train_y,
        val_x=val_x,
        val_y=val_y,
        test_x=raw.test_x,
        test_y=raw.test_y,
        num_classes=len(raw.class_names),
        class_names=raw.class_names,
        mean=mean,
        std=std,
        source=raw.source,
    )
