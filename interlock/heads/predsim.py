"""PredSim (Nøkland & Eidnes 2019, "Training neural networks with local error signals"): SEDONA's baseline.

Two heads on a component's output h (B, C, H, W), read from the paper and its reference code:

- **prediction** ('pred'): average pooling that halves the height, then the width, alternately,
  until C * H' * W' <= ``max_features`` (4096, the reference code's ``--dim-in-decoder``; SEDONA,
  appendix D.2, uses 512 on CIFAR-10 and 2048 on (Tiny-)ImageNet, which its tables pass), then a
  linear classifier whose weight starts at zero (as in the reference code). We pool adaptively to
  (ceil(H / k_h), ceil(W / k_w)), which is the reference's padded ``AvgPool2d`` whenever the
  kernel divides the size.
- **similarity**: a 3x3 convolution C -> C (no bias), then the similarity matrix S of its output
  (below), matched to the similarity matrix of the one-hot labels by mean squared error.

S(x) (the reference's ``similarity_matrix``): a feature map with more than 3 channels and more
than one row is first summarised by each channel's standard deviation over positions (B, C);
anything else is flattened (B, D). Each row is centred (minus its mean over features) and scaled
to unit length (plus 1e-8), and S = X X^T clamped to [-1, 1]: the (B, B) matrix of correlations
between the samples of the batch.

The 'predsim' head owns its local loss (``local_loss``; the worker calls it instead of
``loss_fn(head(h), y)``): (1 - sim_weight) * loss_fn(prediction, y) + sim_weight * MSE(S(conv(h)),
S(onehot(y))), sim_weight = 0.99 (the paper's beta). Its ``forward`` is the prediction head, so
evaluation and ensembles read its predictions like any other head's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import number
from ._registry import image_shape, positive_int, register

__all__ = ["similarity_matrix", "similarity_loss", "PredHead", "PredSimHead", "pred", "predsim"]


def similarity_matrix(x: torch.Tensor) -> torch.Tensor:
    """(B, B) correlations between the samples of ``x`` (B, ...); see the module docstring."""
    if x.dim() == 4 and x.size(1) > 3 and x.size(2) > 1:
        x = x.flatten(2).std(dim=2)  # (B, C): each channel's spread over positions
    else:
        x = x.flatten(1)  # (B, D)
    xc = x - x.mean(dim=1, keepdim=True)
    xn = xc / (1e-8 + xc.pow(2).sum(dim=1, keepdim=True).sqrt())
    return (xn @ xn.t()).clamp(-1, 1)


def similarity_loss(features: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """MSE between the similarity matrices of ``features`` (B, ...) and of the one-hot labels ``y`` (B,)."""
    target = similarity_matrix(F.one_hot(y, num_classes).to(features.dtype))
    return F.mse_loss(similarity_matrix(features), target)


def _pooled_size(C: int, H: int, W: int, max_features: int) -> tuple[int, int]:
    """The reference code's pooling: double the kernel's height, then its width, until C*H'*W' fits."""
    kh = kw = 1
    oh, ow = H, W
    while C * oh * ow > max_features and kh < H:
        kh *= 2
        oh = math.ceil(H / kh)
        if C * oh * ow > max_features:
            kw *= 2
            ow = math.ceil(W / kw)
    return oh, ow


class PredHead(nn.Module):
    """Average pool to at most ``max_features`` features, then a zero-initialised linear classifier."""

    def __init__(self, in_shape: tuple[int, ...], num_classes: int, max_features: int, zero_init: bool = True) -> None:
        super().__init__()
        C, H, W = image_shape(in_shape, "pred")
        oh, ow = _pooled_size(C, H, W, max_features)
        self.pool = nn.AdaptiveAvgPool2d((oh, ow)) if (oh, ow) != (H, W) else nn.Identity()
        self.linear = nn.Linear(C * oh * ow, num_classes)
        if zero_init:  # the reference code's start: no gradient reaches the component through it at first
            nn.init.zeros_(self.linear.weight)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, classes)
        return self.linear(self.pool(h).flatten(1))


class PredSimHead(nn.Module):
    """The prediction head plus the similarity-matching branch; owns its mixed local loss."""

    def __init__(
        self, in_shape: tuple[int, ...], num_classes: int, *, sim_weight: float, max_features: int, zero_init: bool = True
    ) -> None:
        super().__init__()
        C, _, _ = image_shape(in_shape, "predsim")
        self.pred = PredHead(in_shape, num_classes, max_features, zero_init)
        self.sim = nn.Conv2d(C, C, 3, padding=1, bias=False)
        self.num_classes = num_classes
        self.sim_weight = float(sim_weight)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.pred(h)

    def local_loss(self, h: torch.Tensor, y: torch.Tensor, loss_fn) -> torch.Tensor:
        """(1 - sim_weight) * loss_fn(prediction, y) + sim_weight * similarity-matching loss."""
        w = self.sim_weight
        loss = loss_fn(self.pred(h), y) if w < 1 else None
        if w > 0:
            sim = similarity_loss(self.sim(h), y, self.num_classes)
            loss = w * sim if loss is None else (1 - w) * loss + w * sim
        return loss


def _check_options(sim_weight, max_features, head: str) -> None:
    number(sim_weight, f"head {head!r}: sim_weight={sim_weight!r} must be in [0, 1] (the paper uses 0.99)", low=0, high=1)
    positive_int(max_features, "max_features", f"head {head!r}")


@register("pred")
def pred(*, in_shape: tuple[int, ...], num_classes: int, max_features: int = 4096, zero_init: bool = True) -> nn.Module:
    """PredSim's prediction head alone (Nøkland & Eidnes' 'pred' loss): pool + linear (zero weight: ``zero_init``)."""
    _check_options(0.0, max_features, "pred")
    return PredHead(tuple(in_shape), num_classes, max_features, bool(zero_init))


@register("predsim")
def predsim(
    *, in_shape: tuple[int, ...], num_classes: int, sim_weight: float = 0.99, max_features: int = 4096,
    zero_init: bool = True,
) -> nn.Module:
    """Prediction + similarity-matching heads with the mixed loss (weight ``sim_weight`` on similarity)."""
    _check_options(sim_weight, max_features, "predsim")
    return PredSimHead(tuple(in_shape), num_classes, sim_weight=sim_weight, max_features=max_features,
                       zero_init=bool(zero_init))
