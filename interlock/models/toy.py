"""The interlocking paper's toy convnet (Gomez et al. 2022, appendix B.1), and our earlier reading.

'toy_cnn' is appendix B.1 as written. With K components (one conv layer each):

- component 1: 3x3 conv, 32 filters, padding 1, stride 1, BatchNorm, ReLU;
- components 2..K-2: the same 32-filter conv;
- components K-1 and K: 3x3 conv, 64 filters, padding 1, stride 1, BatchNorm, ReLU, then a
  2x2 max-pool with **stride 1** (32x32 -> 31x31 -> 30x30);
- every head, the final one included, is a single linear layer on the flattened output
  (the final head reads 64 x 30 x 30 = 57,600 features).

So K >= 3. ``depth`` (default: K) builds the same network with more conv layers than
components; the layers are then grouped into components by the model's partition.
Convolutions have no bias: the BatchNorm that follows makes it redundant (its gradient
is identically zero), which is the one place where the parameter count departs from a
literal PyTorch transcription (by 32 or 64 per layer).

'toy_cnn_strided' keeps our earlier reading, which is *not* the paper's network: the first
floor(D/2) layers have 32 filters and the rest 64, and the last two layers end with a 2x2
max-pool of stride 2 (32 -> 16 -> 8; 4,096 features for the final head). It trains about
7x faster per image than the faithful network, which is why the earlier results used it.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .. import heads
from ._registry import ImageConfig, Network, config, positive_int, register

__all__ = ["ToyCNNConfig", "toy_cnn", "toy_cnn_strided"]


@dataclass(frozen=True)
class ToyCNNConfig(ImageConfig):
    depth: int | None = None  # conv layers; None: one per component

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.depth is not None:
            positive_int(self.depth, "depth")


def _conv(c_in: int, c_out: int, pool_stride: int | None) -> nn.Sequential:
    # (B, c_in, H, W) -> (B, c_out, H, W) [-> max-pool 2x2 with the given stride]
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    if pool_stride is not None:
        layers.append(nn.MaxPool2d(2, stride=pool_stride))
    return nn.Sequential(*layers)


def _network(cfg: ToyCNNConfig, widths: list[int], pool_stride: int) -> Network:
    depth = len(widths)
    blocks, c_in, size = [], cfg.in_channels, cfg.image_size
    for i, c_out in enumerate(widths):
        pooled = i >= depth - 2  # the last two layers pool
        blocks.append(_conv(c_in, c_out, pool_stride if pooled else None))
        if pooled:
            size = (size - 2) // pool_stride + 1
        c_in = c_out
    final = heads.create("linear", in_shape=(c_in, size, size), num_classes=cfg.num_classes)
    return Network(blocks=blocks, final_head=final, sample_input=cfg.sample_input(), num_classes=cfg.num_classes)


@register("toy_cnn")
def toy_cnn(*, components: int, **kw) -> Network:
    cfg = config(ToyCNNConfig, "toy_cnn", kw)
    depth = components if cfg.depth is None else cfg.depth
    if depth < 3:
        raise ValueError(
            f"model 'toy_cnn' (paper B.1) has at least 3 conv layers (a 32-filter one, then two 64-filter ones); "
            f"got {depth}. Use components >= 3, or set model.kwargs.depth >= 3 to group several layers per component"
        )
    if cfg.image_size < 3:
        raise ValueError(f"model 'toy_cnn': image_size={cfg.image_size} is too small for two 2x2 max-pools; use image_size >= 3")
    return _network(cfg, [32] * (depth - 2) + [64, 64], pool_stride=1)


@register("toy_cnn_strided")
def toy_cnn_strided(*, components: int, **kw) -> Network:
    cfg = config(ToyCNNConfig, "toy_cnn_strided", kw)
    depth = components if cfg.depth is None else cfg.depth
    pools = min(2, depth)
    if cfg.image_size < 2**pools:
        raise ValueError(f"model 'toy_cnn_strided': image_size={cfg.image_size} is too small for {pools} 2x2 max-pools; use image_size >= {2**pools}")
    return _network(cfg, [32 if i < depth // 2 else 64 for i in range(depth)], pool_stride=2)
