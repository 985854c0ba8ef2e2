"""SEDONA's candidate auxiliary heads Aux 1-4 (Pyeon et al. 2021; the authors' ``PredConvLightDecoder``).

Read from the paper and the authors' public code. With ``planes = round(C * width)``
(``width`` 0.25 on CIFAR-10: the code's ``channels // expand_ratio`` with expand ratio 4),
head Aux L (L = 1..4) is:

- 1x1 conv C -> planes + BatchNorm + ReLU, then a depth-wise 3x3 stride-2 conv + BatchNorm + ReLU
  (a separable conv that halves the resolution before anything expensive runs);
- L - 1 MobileNetV2 inverted residual blocks (expansion ``expand``, 4): block i (0-based) has
  stride 2 when i is odd and the map is still at least 2 pixels wide, and then grows the
  channels by planes // 2 (planes when expand is 1); a stride-1 block of equal widths is residual;
- 1x1 conv -> ``final_width`` (the code's 512) + BatchNorm + ReLU, global average pool, linear.

Convolutions have no bias (BatchNorm follows each). The code tracks the map size as floor(H/2)
after a stride-2 conv; we track the real output size ceil(H/2). The two differ only for odd
sizes, where they may change which block strides (never on 32x32 CIFAR).
"""

from __future__ import annotations

from torch import nn

from ..checks import number
from ._registry import image_shape, positive_int, register

__all__ = ["aux", "InvertedResidual"]


def _conv_bn(c_in: int, c_out: int, *, kernel: int = 1, stride: int = 1, groups: int = 1, relu: bool = True) -> list[nn.Module]:
    mods: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
                             nn.BatchNorm2d(c_out)]
    if relu:
        mods.append(nn.ReLU(inplace=True))
    return mods


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand + depth-wise 3x3 (stride) + 1x1 project (no ReLU after it)."""

    def __init__(self, c_in: int, c_out: int, *, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        mods = _conv_bn(c_in, hidden) if expand != 1 else []
        mods += _conv_bn(hidden, hidden, kernel=3, stride=stride, groups=hidden)
        mods += _conv_bn(hidden, c_out, relu=False)
        self.conv = nn.Sequential(*mods)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):  # (B, c_in, H, W) -> (B, c_out, H / stride, W / stride)
        return x + self.conv(x) if self.residual else self.conv(x)


def aux(layers: int, *, in_shape: tuple[int, ...], num_classes: int, width: float = 0.25, final_width: int = 512,
        expand: int = 4) -> nn.Sequential:
    """Aux ``layers`` (see the module docstring): (B, C, H, W) -> (B, classes)."""
    name = f"aux{layers}"
    C, H, W = image_shape(in_shape, name)
    number(width, f"head {name!r}: width={width!r} must be a positive channel multiplier (0.25 on CIFAR-10)", low=0, low_open=True)
    positive_int(final_width, "final_width", f"head {name!r}")
    positive_int(expand, "expand", f"head {name!r}")
    planes = max(1, round(C * width))
    grow = planes // 2 if expand > 1 else planes
    mods = _conv_bn(C, planes) + _conv_bn(planes, planes, kernel=3, stride=2, groups=planes)  # (B, planes, H/2, W/2)
    size, c = (min(H, W) + 1) // 2, planes
    for i in range(layers - 1):
        stride = 2 if size >= 2 and i % 2 == 1 else 1
        c_out = c + grow if stride == 2 else c
        mods.append(InvertedResidual(c, c_out, stride=stride, expand=expand))
        size = (size + 1) // 2 if stride == 2 else size
        c = c_out
    mods += _conv_bn(c, final_width)
    return nn.Sequential(*mods, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(final_width, num_classes))


def _register(layers: int) -> None:
    @register(f"aux{layers}")
    def builder(*, in_shape: tuple[int, ...], num_classes: int, width: float = 0.25, final_width: int = 512,
                expand: int = 4) -> nn.Module:
        return aux(layers, in_shape=in_shape, num_classes=num_classes, width=width, final_width=final_width, expand=expand)

    builder.__doc__ = f"SEDONA's Aux {layers}: separable stride-2 conv, {layers - 1} inverted residual block(s), 1x1 conv, pool, linear."


for _layers in (1, 2, 3, 4):
    _register(_layers)
