"""'conv': the interlocking paper's convolutional auxiliary head (appendix B.2)."""

from __future__ import annotations

from torch import nn

from ._registry import image_shape, positive_int, register

__all__ = ["conv"]


@register("conv")
def conv(*, in_shape: tuple[int, ...], num_classes: int, width: int | None = None, layers: int = 2) -> nn.Module:
    """``layers`` (2) x [3x3 conv (stride 1) + BatchNorm + ReLU] + global average pool + linear.

    Our reading of appendix B.2: the convolutions keep the resolution and have ``width``
    filters (default: the component's channels C); the convolutions have no bias because
    BatchNorm's shift replaces it. (B, C, H, W) -> (B, width, H, W) -> (B, width) -> (B, classes).
    """
    C, _, _ = image_shape(in_shape, "conv")
    width = C if width is None else positive_int(width, "width", "head 'conv'")
    positive_int(layers, "layers", "head 'conv'")
    mods: list[nn.Module] = []
    for i in range(layers):
        mods += [nn.Conv2d(C if i == 0 else width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
    return nn.Sequential(*mods, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))
