"""From a flat block list to a ComponentNet: choose the cuts, build the auxiliary heads."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from .. import heads as head_registry
from ..checks import is_count
from ..measure.flops import BlockProfile, profile_blocks
from ..network.net import ComponentNet, group_blocks, partition_balanced, partition_uniform
from ._registry import Network, build

__all__ = ["create", "choose_cuts", "PARTITIONS"]

logger = logging.getLogger(__name__)

PARTITIONS = ("uniform", "params", "flops")


def create(
    name: str,
    *,
    components: int,
    heads: str | Sequence[str | None] | None = "linear",
    partition: str | Sequence[int] = "uniform",
    head_kw: dict | Sequence[dict | None] | None = None,
    **kw,
) -> ComponentNet:
    """Model ``name`` cut into ``components`` components, each with a head.

    ``partition``: "uniform" (equal numbers of blocks), "params" or "flops" (balanced by
    each block's parameters, or forward FLOPs on the model's sample input), or an explicit
    list of K-1 cut indices (component k holds blocks[cuts[k-1]:cuts[k]]).
    ``heads``: the auxiliary heads of components 1..K-1: one registered head name for all,
    a list of K-1 names (None: no head), or None for none. Component K's head is always
    the network's own output head. ``head_kw``: options for every auxiliary head, or a list
    of K-1 dicts; they override the model's defaults (e.g. GPT's n_head).
    ``kw``: the model's options (num_classes, in_channels, image_size, width, ...).
    """
    network = build(name, components=components, **kw)
    n = len(network.blocks)
    if components > n:
        raise ValueError(f"model {name!r} has {n} blocks; components={components} exceeds them: use components <= {n}")
    profile = profile_blocks(network.blocks, network.sample_input)
    cuts = choose_cuts(partition, profile, components, model=name)
    logger.debug("model %s: %d blocks cut at %s (%s)", name, n, cuts, partition)
    aux = _aux_heads(heads, head_kw, network, profile, cuts, model=name)
    return ComponentNet(blocks=group_blocks(network.blocks, cuts), heads=[*aux, network.final_head], sample_input=network.sample_input)


def choose_cuts(
    partition: str | Sequence[int], profile: Sequence[BlockProfile], components: int, *, model: str = "the model"
) -> tuple[int, ...]:
    """K-1 cut indices for ``partition`` (see :func:`create`) given each block's profile."""
    if isinstance(partition, str):
        if partition == "uniform":
            return partition_uniform(len(profile), components)
        if partition == "params":
            return partition_balanced([p.params for p in profile], components)
        if partition == "flops":
            return partition_balanced([p.flops for p in profile], components)
        raise ValueError(f"partition={partition!r}; choose one of {', '.join(PARTITIONS)} or a list of {components - 1} cut indices")
    cuts = tuple(partition)
    if len(cuts) != components - 1 or not all(is_count(c, minimum=None) for c in cuts):
        raise ValueError(f"partition={list(cuts)} for {model}: components={components} needs {components - 1} int cut indices")
    return cuts  # group_blocks checks their range and order


def _aux_heads(heads, head_kw, network: Network, profile: Sequence[BlockProfile], cuts: tuple[int, ...], *, model: str) -> list:
    K1 = len(cuts)
    if heads is None:
        heads = [None] * K1
    elif isinstance(heads, str):
        if heads not in head_registry.names():  # also when K = 1: a typo should not pass silently
            raise ValueError(f"unknown head {heads!r}; known heads: {', '.join(head_registry.names())}")
        heads = [heads] * K1
    heads = list(heads)
    if len(heads) != K1 or any(h is not None and not isinstance(h, str) for h in heads):
        raise ValueError(f"heads={heads!r} for {model}: give one head name (or None) per auxiliary component, {K1} in all")
    if head_kw is None or isinstance(head_kw, dict):
        head_kw = [head_kw or {}] * K1
    head_kw = list(head_kw)
    if len(head_kw) != K1:
        raise ValueError(f"head_kw has {len(head_kw)} entries; give one dict for all auxiliary heads or one per auxiliary head ({K1})")
    out = []
    for k, (h, opts) in enumerate(zip(heads, head_kw)):
        if h is None:
            out.append(None)
            continue
        in_shape = profile[cuts[k] - 1].out_shape
        options = {**network.head_options.get(h, {}), **(opts or {})}
        start = cuts[k - 1] if k else 0
        if "tie_to" in options and "tie" not in options and network.tied_block is not None:
            # Share the tied tensor only with a head in the same component (see models/gpt.py).
            options["tie"] = "share" if start <= network.tied_block < cuts[k] else "copy"
        try:
            out.append(head_registry.create(h, in_shape=in_shape, num_classes=network.num_classes, **options))
        except ValueError as err:
            raise ValueError(f"{model}, head of component {k + 1} (input {in_shape}): {err}") from err
    return out
