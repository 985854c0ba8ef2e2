"""Batched image augmentation on (B, C, H, W) float tensors, on whatever device the batch is.

The standard CIFAR recipe: a random crop of the image padded with ``padding`` zero pixels
on every side (a random shift of up to ``padding`` pixels, with zeros shifted in), and a
random horizontal flip. Both are vectorised over the batch (one gather, one ``where``; no
Python loop over images). Random numbers are drawn from a CPU ``torch.Generator`` and moved
to the batch's device, so a seed gives the same augmentation on CPU and GPU.

Augment before normalising: the padding is zero in pixel space (black), as in
torchvision's ``RandomCrop(32, padding=4)`` followed by ``Normalize``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["pad_crop", "random_crop", "random_flip", "augment_batch", "normalize", "to_float"]


def _check_batch(x: torch.Tensor) -> None:
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"expected a float batch of shape (B, C, H, W); got {x.dtype} of shape {tuple(x.shape)}")


def pad_crop(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, *, padding: int = 4) -> torch.Tensor:
    """Crop image i of ``x`` padded by ``padding`` zeros at rows top[i].., columns left[i]..

    x: (B, C, H, W); top, left: (B,) integers in 0..2*padding. top = left = padding is the
    identity; top = 0 shifts the image down by ``padding`` rows (zeros enter at the top).
    """
    _check_batch(x)
    B, C, H, W = x.shape
    if padding < 0:
        raise ValueError(f"padding={padding} must be >= 0")
    top, left = top.to(device=x.device, dtype=torch.long), left.to(device=x.device, dtype=torch.long)
    if top.shape != (B,) or left.shape != (B,):
        raise ValueError(f"top and left must have shape ({B},), one offset per image; got {tuple(top.shape)} and {tuple(left.shape)}")
    padded = F.pad(x, (padding, padding, padding, padding))  # (B, C, H+2p, W+2p), zeros around
    rows = top[:, None] + torch.arange(H, device=x.device)  # (B, H)
    cols = left[:, None] + torch.arange(W, device=x.device)  # (B, W)
    batch = torch.arange(B, device=x.device)[:, None, None]  # (B, 1, 1)
    # Advanced indices around a slice: the indexed dims come first -> (B, H, W, C).
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)


def random_crop(x: torch.Tensor, *, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random shift by up to ``padding`` pixels in each direction, zeros shifted in. (B, C, H, W) -> same."""
    _check_batch(x)
    B = x.shape[0]
    offsets = torch.randint(0, 2 * padding + 1, (2, B), generator=generator, device=generator.device)
    return pad_crop(x, offsets[0], offsets[1], padding=padding)


def random_flip(x: torch.Tensor, *, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Mirror each image left-right with probability ``p``. (B, C, H, W) -> same."""
    _check_batch(x)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p={p} must be a probability in [0, 1]")
    flip = torch.rand(x.shape[0], generator=generator, device=generator.device) < p  # (B,)
    return torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)


def augment_batch(x: torch.Tensor, *, generator: torch.Generator, padding: int = 4, flip: bool = True) -> torch.Tensor:
    """Random crop (zero padding ``padding``), then random horizontal flip if ``flip``."""
    x = random_crop(x, generator=generator, padding=padding) if padding else x
    return random_flip(x, generator=generator) if flip else x


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels 0..255 -> float32 in [0, 1]; a float tensor is returned unchanged."""
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    if not x.is_floating_point():
        raise ValueError(f"images must be uint8 (0..255) or floating point; got {x.dtype}")
    return x


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std per channel. x: (B, C, H, W) float; mean, std: (C,) on the [0, 1] scale."""
    _check_batch(x)
    C = x.shape[1]
    if mean.shape != (C,) or std.shape != (C,):
        raise ValueError(f"mean and std must have shape ({C},), one value per channel; got {tuple(mean.shape)} and {tuple(std.shape)}")
    mean = mean.to(device=x.device, dtype=x.dtype)[:, None, None]
    std = std.to(device=x.device, dtype=x.dtype)[:, None, None]
    return (x - mean) / std
