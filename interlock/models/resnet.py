"""ResNets as block lists: the CIFAR ResNet-(6n+2) family and the ImageNet family (18 to 152).

Blocks: the stem is a block and every residual block is a block; global average pool +
linear (the 'pool_linear' head) is the final head. Convolutions have no bias (BatchNorm
follows each); initialisation follows torchvision (Kaiming normal, fan-out, for
convolutions; BatchNorm weight 1, bias 0; PyTorch's default for the linear layer).

- CIFAR ResNet-(6n+2) (He et al. 2016, sec. 4.2): 3x3 conv stem with 16 filters, then 3
  stages of n basic blocks with 16, 32, 64 filters (stride 2 entering stages 2 and 3).
  ``shortcut="A"`` (the paper's CIFAR choice, default): identity shortcuts, subsampled
  and zero-padded with extra channels where the shape changes (no parameters), so
  resnet20 has the published 0.27M parameters; ``"B"``: 1x1 conv + BatchNorm projections there.
- resnet18/34 (basic blocks) and resnet50/101/152 (bottlenecks, expansion 4) with 64, 128,
  256, 512 base filters and projection (option B) shortcuts; the stride sits in the
  bottleneck's 3x3 conv (torchvision's "v1.5"). ``stem="cifar"`` (default): 3x3 conv,
  stride 1, no max-pool; ``"imagenet"``: 7x7 conv stride 2 + 3x3 max-pool stride 2.

``width`` multiplies every layer's filters (SEDONA trains 0.25x ResNets).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import heads
from ._registry import ImageConfig, Network, check_choice, check_width, config, register, scaled
from .init import init_weights

__all__ = ["BasicBlock", "Bottleneck", "CifarResNetConfig", "ResNetConfig", "StageResNetConfig", "STAGE_LAYOUT"]


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False), nn.BatchNorm2d(c_out)]


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample by ``stride`` and zero-pad the extra channels (no parameters)."""

    def __init__(self, *, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        if c_out < c_in:
            raise ValueError(f"an option-A shortcut cannot shrink {c_in} channels to {c_out}; use shortcut='B'")
        self.stride = stride
        self.before = (c_out - c_in) // 2
        self.after = c_out - c_in - self.before

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]  # (B, C_in, H/s, W/s)
        return F.pad(x, (0, 0, 0, 0, self.before, self.after))  # (B, C_out, H/s, W/s)


def _shortcut(c_in: int, c_out: int, stride: int, kind: str) -> nn.Module:
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    if kind == "A":
        return PadShortcut(c_in=c_in, c_out=c_out, stride=stride)
    return nn.Sequential(*_conv_bn(c_in, c_out, 1, stride))


class BasicBlock(nn.Module):
    """relu(bn(conv3x3(relu(bn(conv3x3(x))))) + shortcut(x)): (B, c_in, H, W) -> (B, planes, H/stride, W/stride)."""

    expansion = 1

    def __init__(self, *, c_in: int, planes: int, stride: int = 1, shortcut: str = "B") -> None:
        super().__init__()
        self.residual = nn.Sequential(*_conv_bn(c_in, planes, 3, stride), nn.ReLU(inplace=True), *_conv_bn(planes, planes, 3))
        self.shortcut = _shortcut(c_in, planes, stride, shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.residual(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (stride here), 1x1 expand to 4 x planes; projection shortcut where the shape changes."""

    expansion = 4

    def __init__(self, *, c_in: int, planes: int, stride: int = 1, shortcut: str = "B") -> None:
        super().__init__()
        c_out = planes * self.expansion
        self.residual = nn.Sequential(
            *_conv_bn(c_in, planes, 1), nn.ReLU(inplace=True),
            *_conv_bn(planes, planes, 3, stride), nn.ReLU(inplace=True),
            *_conv_bn(planes, c_out, 1),
        )
        self.shortcut = _shortcut(c_in, c_out, stride, shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.residual(x) + self.shortcut(x))


def _stages(c_in: int, widths: list[int], counts: list[int], strides: list[int], block: type, shortcut: str) -> tuple[list[nn.Module], int]:
    blocks: list[nn.Module] = []
    for planes, count, stride in zip(widths, counts, strides):
        for i in range(count):
            blocks.append(block(c_in=c_in, planes=planes, stride=stride if i == 0 else 1, shortcut=shortcut))
            c_in = planes * block.expansion
    return blocks, c_in


def _network(cfg: ImageConfig, blocks: list[nn.Module], c_out: int) -> Network:
    for b in blocks:
        init_weights(b)
    # Pool + linear: the head accepts any spatial size, so the output size needs no arithmetic.
    final = heads.create("pool_linear", in_shape=(c_out, 1, 1), num_classes=cfg.num_classes)
    return Network(blocks=blocks, final_head=final, sample_input=cfg.sample_input(), num_classes=cfg.num_classes)


# -- CIFAR ResNet-(6n+2) ------------------------------------------------------------------------


@dataclass(frozen=True)
class CifarResNetConfig(ImageConfig):
    width: float = 1.0
    shortcut: str = "A"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_width(self.width)
        check_choice(self.shortcut, "shortcut", ("A", "B"))


def _cifar_resnet(depth: int, kw: dict) -> Network:
    name = f"resnet{depth}"
    cfg = config(CifarResNetConfig, name, kw)
    n = (depth - 2) // 6
    widths = [scaled(c, cfg.width) for c in (16, 32, 64)]
    stem = nn.Sequential(*_conv_bn(cfg.in_channels, widths[0], 3), nn.ReLU(inplace=True))
    body, c_out = _stages(widths[0], widths, [n, n, n], [1, 2, 2], BasicBlock, cfg.shortcut)
    return _network(cfg, [stem, *body], c_out)


def _register_cifar(depth: int) -> None:
    @register(f"resnet{depth}")
    def build(*, components: int, **kw) -> Network:
        return _cifar_resnet(depth, kw)


for _depth in (20, 32, 56, 110):
    _register_cifar(_depth)


# -- ResNet-18 .. 152 ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ResNetConfig(ImageConfig):
    width: float = 1.0
    stem: str = "cifar"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_width(self.width)
        check_choice(self.stem, "stem", ("cifar", "imagenet"))


_LAYOUTS = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
    152: (Bottleneck, [3, 8, 36, 3]),
}


def _resnet(depth: int, kw: dict) -> Network:
    cfg = config(ResNetConfig, f"resnet{depth}", kw)
    block, counts = _LAYOUTS[depth]
    widths = [scaled(c, cfg.width) for c in (64, 128, 256, 512)]
    if cfg.stem == "imagenet":  # (B, 3, H, W) -> (B, 64, H/4, W/4)
        stem = nn.Sequential(*_conv_bn(cfg.in_channels, widths[0], 7, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1))
    else:  # (B, 3, H, W) -> (B, 64, H, W)
        stem = nn.Sequential(*_conv_bn(cfg.in_channels, widths[0], 3), nn.ReLU(inplace=True))
    body, c_out = _stages(widths[0], widths, counts, [1, 2, 2, 2], block, "B")
    return _network(cfg, [stem, *body], c_out)


def _register(depth: int) -> None:
    @register(f"resnet{depth}")
    def build(*, components: int, **kw) -> Network:
        return _resnet(depth, kw)


for _depth in _LAYOUTS:
    _register(_depth)


# -- the interlocking paper's "ResNet-32": ResNet-34's layout, one block per stage ------------------


@dataclass(frozen=True)
class StageResNetConfig(ImageConfig):
    width: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_width(self.width)


STAGE_LAYOUT = ((64, 3), (128, 4), (256, 6), (512, 3))  # (filters, basic blocks) of each stage


class Stage(nn.Sequential):
    """One stage of basic blocks (the first may be preceded by the stem): one block of the flat list."""


@register("resnet34_cifar_stages")
def resnet34_cifar_stages(*, components: int, **kw) -> Network:
    """The network behind the interlocking paper's Table 1 (the paper's "ResNet-32"), built to the
    authors' public code (``examples/train_resnet.py`` and ``resnet_builder.py`` of
    oscarkey/interlocking-backprop): a 3x3, 64-filter, stride-1 stem with BatchNorm and ReLU, then
    basic-block stages ``64,3/128,4/256,6/512,3`` (stride 2 entering stages 2-4, 1x1 conv + BatchNorm
    projection shortcuts where the shape changes), global average pool and a linear layer; Kaiming
    normal (fan-out) convolutions, BatchNorm weight 1 and bias 0. That is ResNet-34's layout on a
    CIFAR stem (21.3M parameters), not He et al.'s 16/32/64-filter ResNet-32 (``resnet32``, 0.46M).

    The flat list has exactly 4 blocks, one per stage, the stem inside the first (the authors'
    builder counts the input layers with the first block and accepts exactly 4 components on
    CIFAR; the paper's sec. 4.2: one ResNet block per component, four components). So K = 4 puts
    one stage on each component under any partition; fewer components merge whole stages.
    """
    cfg = config(StageResNetConfig, "resnet34_cifar_stages", kw)
    if components > len(STAGE_LAYOUT):
        raise ValueError(f"resnet34_cifar_stages has {len(STAGE_LAYOUT)} stages, one per component; "
                         f"use components <= {len(STAGE_LAYOUT)} (the paper's Table 1 uses 4), not {components}")
    widths = [scaled(c, cfg.width) for c, _ in STAGE_LAYOUT]
    counts = [n for _, n in STAGE_LAYOUT]
    stem = nn.Sequential(*_conv_bn(cfg.in_channels, widths[0], 3), nn.ReLU(inplace=True))
    stages: list[nn.Module] = []
    c_in = widths[0]
    for i, (planes, count) in enumerate(zip(widths, counts)):
        body, c_in = _stages(c_in, [planes], [count], [1 if i == 0 else 2], BasicBlock, "B")
        stages.append(Stage(*([stem] if i == 0 else []), *body))
    return _network(cfg, stages, c_in)
