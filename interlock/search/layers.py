"""SEDONA's layers of a registry model (Pyeon et al. 2021, appendix D.1).

The search cuts between *layers*: every VGG conv (with its pool) is a layer, every ResNet residual
block is a layer, and a ResNet's first convolution belongs to its first layer, so the searched
ResNet-50/101/152 have L = 16/33/50 layers. interlock's ResNets keep the stem as a block of its
own (what ``model.partition`` counts and ``interlock train`` runs), so the search joins the stem
to the first residual block in its own view and shifts its cuts back by one when it writes a
config: a cut before SEDONA layer l+1 (0-based index l) is ``model.partition`` index l + 1.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

__all__ = ["stem_blocks", "sedona_layers", "to_model_cuts", "to_layer_cuts"]


def stem_blocks(model: str) -> int:
    """Registry blocks that SEDONA folds into the next one (a ResNet's stem: 1; others: 0)."""
    return 1 if model.startswith("resnet") else 0


def sedona_layers(model: str, blocks: Sequence[nn.Module]) -> list[nn.Module]:
    """The model's blocks as SEDONA's layers: a ResNet's stem and first residual block as one layer."""
    blocks = list(blocks)
    k = stem_blocks(model)
    if k == 0:
        return blocks
    if len(blocks) < k + 2:
        raise ValueError(f"{model}: {len(blocks)} blocks leave fewer than 2 SEDONA layers once the stem joins the first")
    return [nn.Sequential(*blocks[: k + 1]), *blocks[k + 1:]]


def to_model_cuts(model: str, layer_cuts: Sequence[int]) -> tuple[int, ...]:
    """SEDONA layer cuts (0-based layer where components 2..K start) as ``model.partition`` block indices."""
    return tuple(int(c) + stem_blocks(model) for c in layer_cuts)


def to_layer_cuts(model: str, cuts: Sequence[int]) -> tuple[int, ...]:
    """``model.partition`` block indices as SEDONA layer cuts (the inverse of :func:`to_model_cuts`)."""
    k = stem_blocks(model)
    if any(int(c) <= k for c in cuts):
        raise ValueError(f"{model}: cut(s) {list(cuts)} fall inside SEDONA's first layer (the stem and the first block)")
    return tuple(int(c) - k for c in cuts)
