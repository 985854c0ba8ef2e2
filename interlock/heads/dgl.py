"""The auxiliary heads of Decoupled Greedy Learning (Belilovsky et al. 2020): MLP-aux, MLP-SR-aux, CNN-aux.

Read from the paper's description and its reference code (``auxillary_classifier2``):

- MLP-aux: adaptive average pool to 2x2, then ``layers`` (3) hidden fully-connected layers
  of ``width`` (default 4C, i.e. the pooled feature size) units with BatchNorm and ReLU,
  then a linear classifier. (The reference code pools to ceil(H/4) first and then to 2x2,
  which is the same average whenever H and W are multiples of 8; we pool to 2x2 at once.)
- MLP-SR-aux ("spatial resolution" reduced first): adaptive average pool by a factor of 4
  in each dimension, to (ceil(H/4), ceil(W/4)), so the 1x1 convolutions run on 16x fewer
  positions; then ``convs`` (3) x [1x1 conv C->C + BatchNorm + ReLU]; then MLP-aux's
  2x2 pool and MLP. Cheap because the pooling comes before any convolution.
- CNN-aux: ``convs`` (2) x [3x3 conv C->C + BatchNorm + ReLU] at full resolution, adaptive
  average pool to 2x2, BatchNorm, then a linear classifier on the 4C features.

Layers followed by BatchNorm have no bias (the reference code keeps one on its linear
layers; BatchNorm's shift makes it redundant and its gradient is identically zero).
"""

from __future__ import annotations

import math

from torch import nn

from ..checks import count
from ._registry import image_shape, positive_int, register

__all__ = ["mlp", "mlp_sr", "cnn"]


def _mlp(in_features: int, *, width: int, layers: int, num_classes: int) -> list[nn.Module]:
    """``layers`` x [linear + BatchNorm1d + ReLU] + linear: (B, in_features) -> (B, classes)."""
    mods: list[nn.Module] = []
    for i in range(layers):
        mods += [nn.Linear(in_features if i == 0 else width, width, bias=False), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
    mods.append(nn.Linear(width if layers else in_features, num_classes))
    return mods


def _convs(C: int, *, count: int, kernel: int) -> list[nn.Module]:
    mods: list[nn.Module] = []
    for _ in range(count):
        mods += [nn.Conv2d(C, C, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(C), nn.ReLU(inplace=True)]
    return mods


def _options(head: str, in_shape, width, layers, *, count_name: str = "layers") -> tuple[int, int, int, int]:
    C, H, W = image_shape(in_shape, head)
    width = 4 * C if width is None else positive_int(width, "width", f"head {head!r}")
    count(layers, f"head {head!r}: {count_name}={layers!r} must be an int >= 0", minimum=0)
    return C, H, W, width


@register("mlp")
def mlp(*, in_shape: tuple[int, ...], num_classes: int, width: int | None = None, layers: int = 3) -> nn.Module:
    """DGL's MLP-aux: (B, C, H, W) -> pool (B, C, 2, 2) -> (B, 4C) -> MLP -> (B, classes)."""
    C, _, _, width = _options("mlp", in_shape, width, layers)
    return nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), *_mlp(4 * C, width=width, layers=layers, num_classes=num_classes))


@register("mlp_sr")
def mlp_sr(
    *, in_shape: tuple[int, ...], num_classes: int, width: int | None = None, layers: int = 3, convs: int = 3
) -> nn.Module:
    """DGL's MLP-SR-aux: pool to (ceil(H/4), ceil(W/4)), ``convs`` 1x1 conv layers, then MLP-aux."""
    C, H, W, width = _options("mlp_sr", in_shape, width, layers)
    _options("mlp_sr", in_shape, None, convs, count_name="convs")
    return nn.Sequential(
        nn.AdaptiveAvgPool2d((math.ceil(H / 4), math.ceil(W / 4))),  # (B, C, H/4, W/4)
        *_convs(C, count=convs, kernel=1),
        nn.AdaptiveAvgPool2d(2),  # (B, C, 2, 2)
        nn.Flatten(),
        *_mlp(4 * C, width=width, layers=layers, num_classes=num_classes),
    )


@register("cnn")
def cnn(*, in_shape: tuple[int, ...], num_classes: int, convs: int = 2) -> nn.Module:
    """DGL's CNN-aux: ``convs`` 3x3 conv layers at full resolution, pool to 2x2, BatchNorm, linear."""
    C, _, _, _ = _options("cnn", in_shape, None, convs, count_name="convs")
    return nn.Sequential(
        *_convs(C, count=convs, kernel=3),
        nn.AdaptiveAvgPool2d(2),  # (B, C, 2, 2)
        nn.BatchNorm2d(C),
        nn.Flatten(),
        nn.Linear(4 * C, num_classes),
    )
