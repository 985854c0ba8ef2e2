"""The head registry and the checks every head builder shares (in_shape kinds, options)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

from torch import nn

from ..checks import count, is_count
from ..registry import Registry

__all__ = ["register", "names", "create", "takes", "local_loss", "image_shape", "token_shape", "check_options", "positive_int"]

HeadBuilder = Callable[..., nn.Module]
HEADS: Registry[HeadBuilder] = Registry("head")


def register(name: str) -> Callable[[HeadBuilder], HeadBuilder]:
    """Decorator: ``@register("mlp")`` on ``builder(*, in_shape, num_classes, **options) -> nn.Module``."""
    return HEADS.register(name)


def names() -> list[str]:
    """Registered head names, sorted."""
    return HEADS.names()


def create(name: str, *, in_shape: Sequence[int], num_classes: int, **kw) -> nn.Module:
    """Head ``name`` mapping a component's output (B, *in_shape) to predictions.

    ``in_shape`` is the component's output shape without the batch: (C, H, W) for images,
    (T, C) for tokens, (C,) for feature vectors. Predictions are (B, num_classes), or
    (B, T, num_classes) for tokens (num_classes is then the vocabulary size).
    """
    builder = HEADS.get(name)
    shape = tuple(in_shape)
    if not shape or not all(is_count(d) for d in shape):
        raise ValueError(f"head {name!r}: in_shape={tuple(in_shape)} must be positive ints without the batch, e.g. (C, H, W) or (T, C)")
    positive_int(num_classes, "num_classes", f"head {name!r}")
    check_options(builder, kw, f"head {name!r}", reserved=("in_shape", "num_classes"))
    return builder(in_shape=shape, num_classes=num_classes, **kw)


def takes(name: str, option: str) -> bool:
    """Whether head ``name``'s builder accepts keyword ``option`` (e.g. predsim's sim_weight)."""
    params = inspect.signature(HEADS.get(name)).parameters
    return option in params and params[option].kind is inspect.Parameter.KEYWORD_ONLY


def local_loss(head: nn.Module, h, y, loss_fn):
    """L_k of ``head`` on the component output ``h``: the head's own ``local_loss(h, y, loss_fn)`` if it
    has one (PredSim's mixed loss), else ``loss_fn(head(h), y)``."""
    own = getattr(head, "local_loss", None)
    return own(h, y, loss_fn) if own is not None else loss_fn(head(h), y)


def check_options(builder: Callable, kw: dict, what: str, *, reserved: Sequence[str] = ()) -> None:
    """ValueError (not TypeError) naming the options ``builder`` accepts when ``kw`` has others."""
    params = inspect.signature(builder).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    options = [n for n, p in params.items() if p.kind is p.KEYWORD_ONLY and n not in reserved]
    unknown = sorted(set(kw) - set(options))
    if unknown:
        raise ValueError(f"{what} does not take option(s) {', '.join(unknown)}; its options are: {', '.join(options) or 'none'}")


def positive_int(value, name: str, what: str) -> int:
    return count(value, f"{what}: {name}={value!r} must be a positive int")


def image_shape(in_shape: tuple[int, ...], head: str) -> tuple[int, int, int]:
    """(C, H, W) or a ValueError saying which heads take other inputs."""
    if len(in_shape) != 3:
        raise ValueError(
            f"head {head!r} needs an image input in_shape=(C, H, W); got {in_shape}. "
            f"For tokens (T, C) use 'linear' or 'transformer'; for vectors (C,) use 'linear'"
        )
    return in_shape  # type: ignore[return-value]


def token_shape(in_shape: tuple[int, ...], head: str) -> tuple[int, int]:
    """(T, C) or a ValueError."""
    if len(in_shape) != 2:
        raise ValueError(f"head {head!r} needs a token input in_shape=(T, C); got {in_shape}; for images use e.g. 'linear', 'conv', 'mlp'")
    return in_shape  # type: ignore[return-value]
