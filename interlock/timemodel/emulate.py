"""Emulated compute: blocks whose work is a sleep, so K processes overlap on a few CPU cores.

``time.sleep`` releases the CPU, so four component processes sleeping "in parallel" on
two cores take as long as one: schedule efficiency (how well a strategy pipelines) can be
measured on a small machine without real compute getting in the way.

The accounting, per emulated block and training step (the same as
:class:`interlock.timemodel.clock.ComputeCosts`, so predictions and measurements agree):

- forward: ``forward_s``;
- a backward pass from the block's output asking only the input gradient: ``input_grad_s``;
- a backward pass from the block's output asking the weight gradient (with or without the
  input gradient): ``input_grad_s + weight_grad_s`` (the gradient must still propagate
  through the block's internal layers to reach their weights);
- a weight pass from the gradients an input pass kept where the weight enters
  (:class:`interlock.core.backward.KeptGradients`): ``weight_grad_s`` only, whether it carries one
  stream or the sum of several.

The block is two autograd nodes, as a real block is a stack of layers: ``x * w`` (the node
where the weight enters; its backward sleeps ``weight_grad_s`` when the weight gradient is
asked, nothing for the input gradient) under an identity whose backward sleeps
``input_grad_s`` (the propagation through the internal layers, which every pass from the
output runs, and a weight pass from the kept gradients skips).

So with ``forward_s = input_grad_s + weight_grad_s = 1`` unit, local (1-wise) learning
costs 2 units per component and step, forward 1 and backward 1, as in the paper's model.
What a pass asks is read from the autograd engine during the backward, not from
``ctx.needs_input_grad``: the latter is fixed at forward time (whether the input
required grad) and cannot tell ``autograd.grad(out, a_in)`` from
``backward(inputs=params)``.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from .._torch_compat import will_engine_execute_node
from .clock import ComputeCosts
from ..network.net import ComponentNet
from ..checks import count, number

__all__ = ["EmulatedBlock", "emulated_net", "emulated_batch", "emulated_costs"]


class _SleepyScale(torch.autograd.Function):
    """y = x * w (w broadcast over the last dim); the backward sleeps ``weight_grad_s`` if the weight gradient is asked."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, costs: ComputeCosts) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        ctx.costs = costs
        return x * w

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        want_input, want_weight = _asked(ctx)
        if want_weight:
            time.sleep(ctx.costs.weight_grad_s)
        x, w = ctx.saved_tensors
        grad_x = grad * w if want_input else None
        grad_w = (grad * x).reshape(-1, w.shape[0]).sum(0) if want_weight else None
        return grad_x, grad_w, None


class _Propagate(torch.autograd.Function):
    """The identity; its backward sleeps ``input_grad_s``: the propagation through a block's internal layers."""

    @staticmethod
    def forward(ctx, y: torch.Tensor, seconds: float) -> torch.Tensor:
        ctx.seconds = seconds
        return y.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        time.sleep(ctx.seconds)  # once per call, batched (vmapped) streams included
        return grad, None


def _asked(ctx) -> tuple[bool, bool]:
    """(input gradient wanted, weight gradient wanted) by the backward pass now running.

    The engine knows which graph nodes this pass will execute; the nodes feeding x and w
    are non-leaf views (see EmulatedBlock.forward), which the engine can be asked about
    inside ``autograd.grad`` too (it refuses to answer for leaves there).
    """
    return tuple(fn is not None and will_engine_execute_node(fn) for fn, _ in ctx.next_functions)


class EmulatedBlock(nn.Module):
    """A block whose forward and backward sleep set times; computes ``x * w`` over the last dim.

    ``w`` is a real parameter of shape (features,) (ones at first), so a weight gradient
    exists and optimizers have something to update. Input (..., features), output alike.
    On the meta device (``ComponentNet.check``'s dry run) nothing sleeps.
    """

    def __init__(self, *, forward_s: float, input_grad_s: float, weight_grad_s: float, features: int) -> None:
        super().__init__()
        count(features, f"features={features!r}: must be an integer >= 1")
        # ComputeCosts validates the times (finite, >= 0) and is the accounting the clock uses.
        self.costs = ComputeCosts(forward_s=forward_s, input_grad_s=input_grad_s, weight_grad_s=weight_grad_s)
        self.features = features
        self.weight = nn.Parameter(torch.ones(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., features) -> (..., features)
        if x.shape[-1] != self.features:
            raise ValueError(f"EmulatedBlock expects inputs of shape (..., {self.features}), got {tuple(x.shape)}")
        if x.device.type != "meta":
            time.sleep(self.costs.forward_s)
        # Views make the nodes feeding the product non-leaves, so _asked works under autograd.grad.
        y = _SleepyScale.apply(x.view_as(x), self.weight.view_as(self.weight), self.costs)
        return _Propagate.apply(y, self.costs.input_grad_s)

    def extra_repr(self) -> str:
        c = self.costs
        return f"features={self.features}, forward_s={c.forward_s}, input_grad_s={c.input_grad_s}, weight_grad_s={c.weight_grad_s}"


def _split(backward_s: float, split: float) -> tuple[float, float]:
    number(split, f"split={split!r}: the input-gradient share of a backward pass must be in [0, 1]", low=0.0, high=1.0)
    return split * backward_s, (1.0 - split) * backward_s


def emulated_costs(*, forward_s: float, backward_s: float, split: float = 0.5) -> ComputeCosts:
    """The clock's cost model for :func:`emulated_net` with the same arguments (heads, messages, updates: 0)."""
    input_grad_s, weight_grad_s = _split(backward_s, split)
    return ComputeCosts(forward_s=forward_s, input_grad_s=input_grad_s, weight_grad_s=weight_grad_s)


def emulated_net(
    components: int,
    *,
    forward_s: float,
    backward_s: float,
    split: float = 0.5,
    features: int = 8,
    classes: int = 4,
    seed: int = 0,
) -> ComponentNet:
    """K emulated components, each with a cheap linear head (negligible next to the sleeps).

    Each component's forward sleeps ``forward_s``, its full backward ``backward_s``, of
    which ``split`` is the input-gradient part. ``seed`` fixes the heads' initial weights
    (without touching the global RNG), so every process builds the same network.
    """
    count(components, f"components={components!r}: must be an integer >= 1")
    count(classes, f"classes={classes!r}: must be an integer >= 2", minimum=2)
    input_grad_s, weight_grad_s = _split(backward_s, split)
    blocks = [
        EmulatedBlock(forward_s=forward_s, input_grad_s=input_grad_s, weight_grad_s=weight_grad_s, features=features)
        for _ in range(components)
    ]
    g = torch.Generator().manual_seed(seed)
    heads = []
    for _ in range(components):
        head = nn.Linear(features, classes)
        with torch.no_grad():
            head.weight.copy_(torch.randn(classes, features, generator=g) / features**0.5)
            head.bias.zero_()
        heads.append(head)
    return ComponentNet(blocks=blocks, heads=heads)


def emulated_batch(batch: int, *, features: int = 8, classes: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch (x: (batch, features), y: (batch,) class indices) for :func:`emulated_net`.

    The values do not matter for emulated timing, only the sleeps do; they are seeded so
    that every process (and every engine) sees the same batch.
    """
    count(batch, f"batch={batch!r}: must be an integer >= 1")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, features, generator=g)
    y = torch.randint(0, classes, (batch,), generator=g)
    return x, y
