"""Convolutional auxiliary heads: 'conv' (the interlocking paper's appendix B.2) and 'conv_uniform'."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ._registry import image_shape, positive_int, register

__all__ = ["conv", "conv_uniform"]


def _conv_head(C: int, widths: Sequence[int], num_classes: int) -> nn.Sequential:
    # Convolutions have no bias: the BatchNorm shift that follows replaces it.
    mods: list[nn.Module] = []
    c_in = C
    for w in widths:
        mods += [nn.Conv2d(c_in, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        c_in = w
    return nn.Sequential(*mods, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes))


@register("conv")
def conv(*, in_shape: tuple[int, ...], num_classes: int, widths: Sequence[int] = (128, 64)) -> nn.Module:
    """Paper B.2: 3x3 conv with 128 filters + BN + ReLU, 3x3 conv with 64 filters + BN + ReLU,
    global average pool, linear. Stride 1, padding 1 (resolution kept).

    (B, C, H, W) -> (B, 128, H, W) -> (B, 64, H, W) -> (B, 64) -> (B, classes). ``widths``
    changes the filter counts (one conv per entry) for ablations; the default is the paper's.
    """
    C, _, _ = image_shape(in_shape, "conv")
    widths = tuple(widths)
    if not widths:
        raise ValueError("head 'conv': widths must name at least one conv width, e.g. (128, 64)")
    for w in widths:
        positive_int(w, "widths", "head 'conv'")
    return _conv_head(C, widths, num_classes)


@register("conv_uniform")
def conv_uniform(*, in_shape: tuple[int, ...], num_classes: int, width: int | None = None, layers: int = 2) -> nn.Module:
    """Our earlier reading of B.2 (not the paper's head): ``layers`` 3x3 convs that all have
    ``width`` filters (default: the component's channels C), then pool + linear."""
    C, _, _ = image_shape(in_shape, "conv_uniform")
    width = C if width is None else positive_int(width, "width", "head 'conv_uniform'")
    positive_int(layers, "layers", "head 'conv_uniform'")
    return _conv_head(C, [width] * layers, num_classes)
