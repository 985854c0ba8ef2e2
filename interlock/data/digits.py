"""The handwritten digits bundled with scikit-learn: the small image set that needs no download.

``sklearn.datasets.load_digits`` ships 1797 8x8 greyscale images (pixel values 0..16,
10 classes) inside the package. The training program falls back to them when no CIFAR-10
is found (and says so). They come without an official test split, so one is fixed here:
a permutation from a constant seed, independent of the run's seed, so that every run
reports accuracy on the same 360 test images.
"""

from __future__ import annotations

import logging

import torch

from .raw import RawSplits
from .seeding import make_generator

__all__ = ["load_digits", "DIGITS_TEST_SIZE"]

logger = logging.getLogger(__name__)

DIGITS_TEST_SIZE = 360  # 20% of 1797
_SPLIT_SEED = 0


def load_digits() -> RawSplits:
    """1437 training and 360 test images, (N, 1, 8, 8) uint8 scaled from 0..16 to 0..255."""
    try:
        from sklearn.datasets import load_digits as _sklearn_digits
    except ImportError as e:
        raise ImportError(
            "the 'digits' data set comes with scikit-learn, which is not installed; "
            "install it with `pip install scikit-learn`, or use CIFAR-10/MNIST files instead"
        ) from e
    bunch = _sklearn_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float64)  # (1797, 8, 8), values 0..16
    x = (images * (255.0 / 16.0)).round().to(torch.uint8).unsqueeze(1)  # (1797, 1, 8, 8)
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    order = torch.randperm(len(x), generator=make_generator(_SPLIT_SEED, "digits-test-split"))
    test_idx, train_idx = order[:DIGITS_TEST_SIZE].sort().values, order[DIGITS_TEST_SIZE:].sort().values
    logger.info("digits (scikit-learn): %d training and %d test images of 8x8", len(train_idx), len(test_idx))
    names = tuple(str(d) for d in range(10))
    return RawSplits(x[train_idx], y[train_idx], x[test_idx], y[test_idx], names, "sklearn.datasets.load_digits")
