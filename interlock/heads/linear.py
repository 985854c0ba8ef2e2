"""The cheapest heads: 'linear' (paper B.1: flatten + linear) and 'pool_linear' (global average pool + linear)."""

from __future__ import annotations

import torch
from torch import nn

from ._registry import image_shape, register
from .transformer import token_linear

__all__ = ["linear", "pool_linear"]


@register("linear")
def linear(
    *,
    in_shape: tuple[int, ...],
    num_classes: int,
    bias: bool = True,
    tie_to: torch.Tensor | None = None,
    tie: str = "copy",
    vocab_size: int | None = None,
) -> nn.Module:
    """Flatten + linear for images (C, H, W) and vectors (C,) (interlocking paper, appendix B.1).

    For tokens (T, C) flattening would mix positions (and break causality), so the head
    is applied per token instead: LayerNorm + linear to the vocabulary (``num_classes``),
    i.e. GPT-2's own output head; ``tie_to`` (vocab, C) is the token embedding the projection
    shares (``tie="share"``) or starts as a copy of (``tie="copy"``); ``bias`` is then the LayerNorm's. For images ``bias`` is the linear layer's.
    """
    if len(in_shape) == 2:
        return token_linear(C=in_shape[1], num_classes=num_classes, bias=bias, tie_to=tie_to, tie=tie, vocab_size=vocab_size)
    if tie_to is not None or vocab_size is not None or tie != "copy":
        raise ValueError(f"head 'linear': tie_to, tie and vocab_size apply to token inputs (T, C) only; got in_shape {in_shape}")
    features = 1
    for d in in_shape:
        features *= d
    return nn.Sequential(nn.Flatten(), nn.Linear(features, num_classes, bias=bias))  # (B, *in_shape) -> (B, classes)


@register("pool_linear")
def pool_linear(*, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Global average pool + linear: (B, C, H, W) -> (B, C) -> (B, classes). A cheap baseline."""
    C, _, _ = image_shape(in_shape, "pool_linear")
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(C, num_classes))
