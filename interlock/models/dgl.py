"""'dgl_cnn': the 6-layer CNN of Decoupled Greedy Learning (Belilovsky et al. 2020, sec. 4.1).

Read from the paper and its reference code: every block is 3x3 conv + BatchNorm + ReLU;
the first has 128 filters; the blocks listed in ``downsample`` (0-based, (1, 3) as in the
reference code) start with a 2x2 max-pool and double the filters. So for CIFAR: 128 @
32x32, 256 @ 16x16, 256, 512 @ 8x8, 512, 512. ``width`` multiplies every layer's filters,
as for the other models. The network's own head is the reference code's last
classifier: MLP-aux with two hidden layers ('mlp' head, layers=2).
Convolutions have no bias (the reference code keeps one; BatchNorm makes it redundant).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .. import heads
from ..checks import is_count

from ._registry import ImageConfig, Network, check_width, config, positive_int, register, scaled

__all__ = ["DGLCNNConfig", "dgl_cnn"]


@dataclass(frozen=True)
class DGLCNNConfig(ImageConfig):
    depth: int = 6
    width: float = 1.0  # multiplies every layer's filters (128 in the first layer)
    downsample: tuple[int, ...] = (1, 3)  # 0-based blocks that begin with a 2x2 max-pool
    head_layers: int = 2  # hidden layers of the final MLP head

    def __post_init__(self) -> None:
        super().__post_init__()
        positive_int(self.depth, "depth")
        check_width(self.width)
        positive_int(self.head_layers, "head_layers")
        ds = tuple(self.downsample)
        object.__setattr__(self, "downsample", ds)  # frozen: store lists as tuples
        if not all(is_count(i, 1, self.depth - 1) for i in ds) or list(ds) != sorted(set(ds)):
            raise ValueError(f"downsample={self.downsample!r} must be increasing block indices in 1..{self.depth - 1}")
        if self.image_size < 2 ** len(ds):
            raise ValueError(f"image_size={self.image_size} is too small for {len(ds)} 2x2 max-pools; use >= {2 ** len(ds)}")


@register("dgl_cnn")
def dgl_cnn(*, components: int, **kw) -> Network:
    cfg = config(DGLCNNConfig, "dgl_cnn", kw)
    blocks: list[nn.Module] = []
    c_in, filters, size = cfg.in_channels, 128, cfg.image_size
    for i in range(cfg.depth):
        layers: list[nn.Module] = []
        if i in cfg.downsample:
            layers.append(nn.MaxPool2d(2))
            size //= 2
            filters *= 2
        c_out = scaled(filters, cfg.width)
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        blocks.append(nn.Sequential(*layers))  # (B, c_in, H, W) -> (B, c_out, H', W')
        c_in = c_out
    final = heads.create("mlp", in_shape=(c_in, size, size), num_classes=cfg.num_classes, layers=cfg.head_layers)
    return Network(blocks=blocks, final_head=final, sample_input=cfg.sample_input(), num_classes=cfg.num_classes)
