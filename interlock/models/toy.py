"""'toy_cnn': the interlocking paper's toy convnet (Gomez et al. 2022, appendix B.1).

Every block is 3x3 conv + BatchNorm + ReLU; the paper's four components have 32, 32, 64
and 64 filters, with 2x2 max-pooling in the last two, and a flatten + linear head.

Our reading for any depth D (``depth`` defaults to the number of components, one conv
layer per component as in the paper): the first floor(D/2) layers have 32 filters and
the rest 64 (for odd D the middle layer takes 64); the last min(2, D) layers end with a
2x2 max-pool. The final head is the paper's flatten + linear (no adaptive pooling needed:
a 32x32 input gives 64 x 8 x 8 = 4096 features). Convolutions have no bias: the
BatchNorm that follows makes it redundant (its gradient is identically zero).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .. import heads
from ._registry import ImageConfig, Network, config, positive_int, register

__all__ = ["ToyCNNConfig", "toy_cnn"]


@dataclass(frozen=True)
class ToyCNNConfig(ImageConfig):
    depth: int | None = None  # conv layers; None: one per component

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.depth is not None:
            positive_int(self.depth, "depth")


@register("toy_cnn")
def toy_cnn(*, components: int, **kw) -> Network:
    cfg = config(ToyCNNConfig, "toy_cnn", kw)
    depth = components if cfg.depth is None else cfg.depth
    pools = min(2, depth)
    if cfg.image_size < 2**pools:
        raise ValueError(f"model 'toy_cnn': image_size={cfg.image_size} is too small for {pools} 2x2 max-pools; use image_size >= {2**pools}")
    blocks: list[nn.Module] = []
    c_in, size = cfg.in_channels, cfg.image_size
    for i in range(depth):
        c_out = 32 if i < depth // 2 else 64
        layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        if i >= depth - pools:
            layers.append(nn.MaxPool2d(2))
            size //= 2
        blocks.append(nn.Sequential(*layers))  # (B, c_in, H, W) -> (B, c_out, H', W')
        c_in = c_out
    final = heads.create("linear", in_shape=(c_in, size, size), num_classes=cfg.num_classes)
    return Network(blocks=blocks, final_head=final, sample_input=cfg.sample_input(), num_classes=cfg.num_classes)
