"""VGG with BatchNorm (Simonyan & Zisserman 2015; the '_bn' variants) as block lists.

Every 3x3 conv + BatchNorm + ReLU is a block, with the 2x2 max-pool that follows it (if
any) folded into the same block. The final head is the classifier:

- ``classifier="cifar"`` (default): the common CIFAR VGG classifier, a single linear layer
  on the 512 features left after five pools of a 32x32 input (global average pooling in
  front is the identity there and lets other image sizes work).
- ``classifier="imagenet"``: torchvision's, adaptive average pool to 7x7 then
  linear-ReLU-dropout x2 (4096 units) and a linear layer.
- ``classifier="mlp"``: SEDONA's (Pyeon et al. 2021, appendix D.1): the final 3-layer MLP, with
  no dropout, on the flattened 1x1 map a 32x32 input leaves: linear-ReLU x2 of 4096 x ``width``
  units (1,024 at SEDONA's 0.25x width on CIFAR-10, the width the authors' code gives it), then
  a linear layer. The authors' code also puts dropout between them; the text says none: we follow
  the text.

Convolutions have no bias (BatchNorm follows; torchvision keeps one, so parameter counts
are 5,504 lower at width 1, e.g. vgg19_bn: 20,035,018 here vs 20,040,522). Initialisation
follows torchvision. ``width`` multiplies every layer's filters and the classifier's hidden units.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .. import heads
from ..checks import number
from ._registry import ImageConfig, Network, check_choice, check_width, config, register, scaled
from .init import init_weights

__all__ = ["VGGConfig", "LAYOUTS"]

M = "M"  # a 2x2 max-pool
LAYOUTS = {
    "vgg11_bn": [64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M],
    "vgg13_bn": [64, 64, M, 128, 128, M, 256, 256, M, 512, 512, M, 512, 512, M],
    "vgg16_bn": [64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512, M],
    "vgg19_bn": [64, 64, M, 128, 128, M, 256, 256, 256, 256, M, 512, 512, 512, 512, M, 512, 512, 512, 512, M],
}


@dataclass(frozen=True)
class VGGConfig(ImageConfig):
    width: float = 1.0
    classifier: str = "cifar"
    dropout: float = 0.5  # the ImageNet classifier's

    def __post_init__(self) -> None:
        super().__post_init__()
        check_width(self.width)
        check_choice(self.classifier, "classifier", ("cifar", "imagenet", "mlp"))
        number(self.dropout, f"dropout={self.dropout!r} must be in [0, 1)", low=0.0, high=1.0, high_open=True)
        pools = sum(1 for v in LAYOUTS["vgg19_bn"] if v == M)
        if self.image_size < 2**pools:
            raise ValueError(f"image_size={self.image_size} is too small for {pools} 2x2 max-pools; use image_size >= {2**pools}")


def _vgg(name: str, kw: dict) -> Network:
    cfg = config(VGGConfig, name, kw)
    layout = LAYOUTS[name]
    blocks: list[nn.Module] = []
    c_in = cfg.in_channels
    for i, v in enumerate(layout):
        if v == M:
            continue
        c_out = scaled(v, cfg.width)
        layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        if i + 1 < len(layout) and layout[i + 1] == M:
            layers.append(nn.MaxPool2d(2))
        blocks.append(nn.Sequential(*layers))  # (B, c_in, H, W) -> (B, c_out, H or H/2, W or W/2)
        c_in = c_out
    if cfg.classifier == "cifar":
        final = heads.create("pool_linear", in_shape=(c_in, 1, 1), num_classes=cfg.num_classes)
    elif cfg.classifier == "mlp":
        hidden = scaled(4096, cfg.width)
        final = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # (B, C): the identity pool for a 32x32 input
            nn.Linear(c_in, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, cfg.num_classes),
        )
    else:
        hidden = scaled(4096, cfg.width)
        final = nn.Sequential(
            nn.AdaptiveAvgPool2d(7), nn.Flatten(),  # (B, C * 49)
            nn.Linear(c_in * 49, hidden), nn.ReLU(inplace=True), nn.Dropout(cfg.dropout),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(cfg.dropout),
            nn.Linear(hidden, cfg.num_classes),
        )
    for m in [*blocks, final]:
        init_weights(m, linear_std=0.01)
    return Network(blocks=blocks, final_head=final, sample_input=cfg.sample_input(), num_classes=cfg.num_classes)


def _register(name: str) -> None:
    @register(name)
    def build(*, components: int, **kw) -> Network:
        return _vgg(name, kw)


for _name in LAYOUTS:
    _register(_name)
