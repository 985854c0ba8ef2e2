"""Tied parameters across components: equal copies whose gradients are summed before every update.

A tied tensor (GPT-2's token embedding, which is also its output projection) cannot be one
parameter in two components: they run on different devices under different optimizers. As
the embedding group of pipeline-parallel trainers (Megatron-LM) does, each component that uses
it holds a copy; every step, once all of their backward passes are done and before any of
them updates, every copy's gradient is replaced by the sum of all copies' gradients. The copies
start equal and get equal gradients, and every component's optimizer makes the same
element-wise update from them, so they stay equal and the network trains as the tied one
would: the gradient of a tied tensor is the sum of the gradients of its uses.

The sum is taken in one fixed order (per component, its copies in order; then the components
in order), on the simulated engine and on the distributed one (an all-gather among the ranks
that hold copies, then that same sum on each), so the two agree bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["TieGroup", "tie_groups", "sum_in_order", "check_engine_supports_ties"]


@dataclass
class TieGroup:
    """One tied tensor: its copies, each with the component that holds it (sorted by component)."""

    members: list[tuple[int, nn.Parameter]]

    @property
    def components(self) -> list[int]:
        return sorted({k for k, _ in self.members})

    def local(self, k: int) -> list[nn.Parameter]:
        return [p for j, p in self.members if j == k]


def tie_groups(net) -> list[TieGroup]:
    """The network's tie groups with each copy's component (``net.ties``; empty when nothing is tied)."""
    ties = getattr(net, "ties", None) or []
    if not ties:
        return []
    owner = {}
    for k in range(net.num_components):
        for p in net.component_parameters(k):
            owner.setdefault(id(p), k)
    return [TieGroup(sorted(((owner[id(p)], p) for p in group), key=lambda m: m[0])) for group in ties]


def _grad(p: nn.Parameter) -> torch.Tensor:
    return torch.zeros_like(p) if p.grad is None else p.grad  # a copy unused this step contributes nothing


def local_sum(params: list[nn.Parameter]) -> torch.Tensor:
    total = _grad(params[0])
    for p in params[1:]:
        total = total + _grad(p)
    return total


def sum_in_order(partials: list[torch.Tensor]) -> torch.Tensor:
    """The components' partial sums added in component order (the one order every engine uses)."""
    total = partials[0]
    for g in partials[1:]:
        total = total + g
    return total


def set_grads(params: list[nn.Parameter], total: torch.Tensor) -> None:
    for p in params:
        p.grad = total.detach().clone()


def check_engine_supports_ties(net, engine: str) -> None:
    """A ValueError for engines that do not sum tied gradients (so copies would drift apart silently)."""
    if getattr(net, "ties", None):
        raise ValueError(
            f"this network has tied parameters (net.ties: e.g. an embedding that is also the output projection); "
            f"{engine} does not sum their gradients. Use the simulated or distributed engine with a synchronous "
            f"strategy (end-to-end, local, n-wise), or untie them (give each copy its own parameter and leave ties out)"
        )
