"""The model registry, what a model builder returns, and the option checks builders share."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..checks import count, number
from ..registry import Registry

__all__ = ["Network", "ImageConfig", "register", "names", "build", "config", "positive_int", "scaled", "check_width", "check_choice"]


@dataclass
class Network:
    """A model as single-device code: a flat list of blocks and the network's own output head.

    ``sample_input`` (2, ...) is an input the blocks accept (dry runs use it: shapes, FLOPs);
    ``num_classes`` is what auxiliary heads predict (the vocabulary size for a language model);
    ``head_options[name]`` are default options for auxiliary heads called ``name`` (e.g. the
    GPT's token embedding for 'transformer' heads); the caller's win. ``tied_block``: the
    block holding the ``tie_to`` tensor of those options; an auxiliary head in the component
    holding that block shares the tensor (``tie="share"``), every other head copies it.
    """

    blocks: list[nn.Module]
    final_head: nn.Module
    sample_input: torch.Tensor
    num_classes: int
    head_options: dict[str, dict] = field(default_factory=dict)
    tied_block: int | None = None

    def __post_init__(self) -> None:
        if not self.blocks or not all(isinstance(b, nn.Module) for b in self.blocks):
            raise ValueError("a Network needs a non-empty list of nn.Module blocks")
        if not isinstance(self.final_head, nn.Module):
            raise ValueError(f"final_head must be an nn.Module, got {type(self.final_head).__name__}")


Builder = Callable[..., Network]
MODELS: Registry[Builder] = Registry("model")


def register(name: str) -> Callable[[Builder], Builder]:
    """Decorator: ``@register("name")`` on ``builder(*, components, **options) -> Network``.

    ``components`` is passed for the few models whose structure depends on it (toy_cnn's
    depth, GPT's weight tying); most ignore it.
    """

    return MODELS.register(name)


def names() -> list[str]:
    """Registered model names, sorted."""
    return MODELS.names()


def build(name: str, *, components: int = 1, **kw) -> Network:
    """Model ``name`` as a flat :class:`Network` (no components yet); ``create`` groups it."""
    builder = MODELS.get(name)
    count(components, f"components={components!r} must be a positive int (the number of components K)")
    return builder(components=components, **kw)


@dataclass(frozen=True)
class ImageConfig:
    """Options every image model takes. Subclasses add their own and extend ``__post_init__``."""

    num_classes: int = 10
    in_channels: int = 3
    image_size: int = 32

    def __post_init__(self) -> None:
        for name in ("num_classes", "in_channels", "image_size"):
            positive_int(getattr(self, name), name)

    def sample_input(self) -> torch.Tensor:
        # Two samples: BatchNorm in training mode needs more than one value per channel.
        return torch.zeros(2, self.in_channels, self.image_size, self.image_size)  # (B, C, H, W)


def config(cls: type, model: str, kw: dict):
    """``cls(**kw)`` with errors that name the model and the options it takes."""
    options = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(kw) - set(options))
    if unknown:
        raise ValueError(f"model {model!r} does not take option(s) {', '.join(unknown)}; its options are: {', '.join(options)}")
    try:
        return cls(**kw)
    except ValueError as err:
        raise ValueError(f"model {model!r}: {err}") from err


def positive_int(value, name: str) -> int:
    return count(value, f"{name}={value!r} must be a positive int")


def scaled(channels: int, width: float) -> int:
    """``channels * width`` rounded, at least 1 (the width multiplier of wide/thin variants)."""
    return max(1, int(round(channels * width)))


def check_width(width) -> None:
    number(width, f"width={width!r} must be a positive number (a channel multiplier; 1.0 is the published network)", low=0, low_open=True)


def check_choice(value, name: str, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r}; choose one of {', '.join(map(repr, choices))}")
