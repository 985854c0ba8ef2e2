"""What each head costs next to its component: parameters and forward FLOPs, side by side."""

from __future__ import annotations

import math

import torch

from ..measure.flops import measure
from ..network.net import ComponentNet, parameter_count

__all__ = ["cost"]


def cost(net: ComponentNet, sample_input: torch.Tensor) -> list[dict]:
    """For each component k: its parameters and forward FLOPs, its head's, and head/component ratios.

    FLOPs are for the batch ``sample_input`` (count on the meta device: nothing is computed,
    no state moves; see ``interlock.measure.flops``). DGL aims for auxiliary heads well under 5% of
    their component's FLOPs; this reports the numbers and enforces nothing. A missing head
    costs 0. Keys: component (1-based), out_shape, component_params, head_params,
    component_flops, head_flops, head_params_ratio, head_flops_ratio.
    """
    if not isinstance(net, ComponentNet):
        raise ValueError(f"cost() needs an interlock.ComponentNet, got {type(net).__name__}")
    rows: list[dict] = []
    x = sample_input
    for k, (block, head) in enumerate(zip(net.blocks, net.heads)):
        x, block_flops = measure(block, x)
        head_flops = 0 if head is None else measure(head, x)[1]
        block_params = parameter_count(block)
        head_params = 0 if head is None else parameter_count(head)
        rows.append(
            {
                "component": k + 1,
                "out_shape": tuple(x.shape[1:]),
                "component_params": block_params,
                "head_params": head_params,
                "component_flops": block_flops,
                "head_flops": head_flops,
                "head_params_ratio": _ratio(head_params, block_params),
                "head_flops_ratio": _ratio(head_flops, block_flops),
            }
        )
    return rows


def _ratio(head: int, component: int) -> float:
    if component == 0:
        return 0.0 if head == 0 else math.inf
    return head / component
