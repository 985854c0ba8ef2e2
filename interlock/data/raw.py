"""The official train and test splits of an image data set, as read from its files."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["RawSplits"]


@dataclass(frozen=True, eq=False)
class RawSplits:
    """What a reader hands to :func:`interlock.data.load_images` (before any validation split).

    ``train_x``/``test_x``: (N, C, H, W) uint8; ``train_y``/``test_y``: (N,) int64.
    ``source`` says which files were read (for logs and result records).
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    class_names: tuple[str, ...]
    source: str
