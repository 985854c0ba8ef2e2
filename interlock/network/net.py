"""ComponentNet: a network cut into K components, each with an optional head.

A network is written as a list of blocks (single-device code). Partition helpers group
consecutive blocks into components; ``ComponentNet`` holds the components and their
heads and knows nothing about strategies or engines.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain

import torch
from torch import nn

from ..checks import count

__all__ = [
    "ComponentNet",
    "partition_uniform",
    "partition_balanced",
    "group_blocks",
    "merge_adjacent",
    "parameter_count",
    "check_ties",
]


class ComponentNet(nn.Module):
    """K components (``blocks[k]``) and their heads (``heads[k]``, ``None`` allowed but for the last).

    ``net(x)`` runs every component then the final head ``heads[-1]``; ``net.heads_forward(x)``
    gives every head's prediction. ``sample_input`` (optional) checks with a dry run that
    each component accepts the previous one's output and each head its component's.
    ``ties``: groups of parameters, in different components, that stand for one tied tensor
    (an embedding matrix that is also the output projection): equal copies whose gradients
    the engines sum before every update (see :mod:`interlock.network.ties`).
    """

    def __init__(
        self,
        *,
        blocks: Sequence[nn.Module],
        heads: Sequence[nn.Module | None],
        sample_input: torch.Tensor | None = None,
        ties: Sequence[Sequence[nn.Parameter]] = (),
    ) -> None:
        super().__init__()
        blocks, heads = list(blocks), list(heads)
        if not blocks:
            raise ValueError("ComponentNet needs at least one component: pass blocks=[...] with one module per component")
        if len(heads) != len(blocks):
            raise ValueError(
                f"got {len(blocks)} components (blocks) but {len(heads)} heads; pass one head per "
                f"component, None where the strategy never uses that component's loss, heads[-1] the final head"
            )
        for k, b in enumerate(blocks):
            if not isinstance(b, nn.Module):
                raise ValueError(f"blocks[{k}] is a {type(b).__name__}, not an nn.Module; wrap it in a module")
        for k, h in enumerate(heads):
            if h is not None and not isinstance(h, nn.Module):
                raise ValueError(f"heads[{k}] is a {type(h).__name__}; a head is an nn.Module or None")
        if heads[-1] is None:
            raise ValueError("heads[-1] is the network's final head and cannot be None")
        self.blocks = nn.ModuleList(blocks)
        self.heads = nn.ModuleList(heads)
        self._check_not_shared()
        # Tied copies (interlock.network.ties): plain lists, not registered, so state dicts are unchanged.
        self.ties: list[list[nn.Parameter]] = check_ties(self, ties)
        if sample_input is not None:
            self.check(sample_input)

    @classmethod
    def from_blocks(
        cls,
        blocks: Sequence[nn.Module],
        *,
        heads: Sequence[nn.Module | None],
        components: int | None = None,
        cuts: Sequence[int] | None = None,
        sample_input: torch.Tensor | None = None,
    ) -> "ComponentNet":
        """Group a flat list of blocks into components: ``components=K`` (uniform) or explicit ``cuts``.

        The uniform partition counts only blocks with parameters: a parameter-free block
        (ReLU, Flatten, pooling) rides with its neighbour, so no component is left without
        parameters (interlock.network.split.partition_units).
        """
        if (components is None) == (cuts is None):
            raise ValueError("give exactly one of components=K (uniform partition) or cuts=[...] (explicit boundaries)")
        if cuts is None:
            cuts = uniform_cuts(blocks, components)
        return cls(blocks=group_blocks(blocks, cuts), heads=heads, sample_input=sample_input)

    @property
    def num_components(self) -> int:
        return len(self.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.heads[-1](x)

    def heads_forward(self, x: torch.Tensor) -> list[torch.Tensor | None]:
        """Every head's prediction in one pass through the blocks (None where a head is missing)."""
        outs: list[torch.Tensor | None] = []
        for block, head in zip(self.blocks, self.heads):
            x = block(x)
            outs.append(None if head is None else head(x))
        return outs

    def component_parameters(self, k: int) -> list[nn.Parameter]:
        """Trainable parameters of component k's blocks and head (deduplicated, in module order)."""
        head = self.heads[k]
        params = self.blocks[k].parameters() if head is None else chain(self.blocks[k].parameters(), head.parameters())
        return _unique(p for p in params if p.requires_grad)

    def _check_not_shared(self) -> None:
        # Components live on different devices; a parameter in two of them would be updated
        # by two optimizers from two different gradients.
        owner: dict[int, int] = {}
        for k in range(self.num_components):
            for p in self.component_parameters(k):
                if owner.setdefault(id(p), k) != k:
                    raise ValueError(
                        f"a parameter of shape {tuple(p.shape)} is shared by components {owner[id(p)] + 1} "
                        f"and {k + 1}; each component must own its parameters (untie or copy it)"
                    )

    def check(self, sample_input: torch.Tensor) -> None:
        """Dry-run every component and head on ``sample_input``; ValueError naming the misfit.

        Runs on the meta device (no compute, no state change); if an op has no meta kernel,
        runs for real on two samples with copies of the buffers (running stats do not move).
        """
        try:
            self._dry_run(_to_meta(sample_input), meta=True)
        except Exception:  # a misfit, or an op without a meta kernel: a real dry run confirms and reports
            self._dry_run(sample_input[:2], meta=False)

    def _dry_run(self, x: torch.Tensor, *, meta: bool) -> None:
        for k, (block, head) in enumerate(zip(self.blocks, self.heads)):
            what = "the network input" if k == 0 else f"the output of component {k}"
            x = _call(block, x, meta=meta, error=f"component {k + 1}'s blocks do not accept {what} (shape {tuple(x.shape)})")
            if head is not None:
                _call(
                    head, x, meta=meta,
                    error=f"head {k + 1} does not accept the output of component {k + 1} (shape {tuple(x.shape)}); "
                    f"change head {k + 1}'s input size or move the boundary",
                )


def _to_meta(t: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(t, device="meta")


def _call(module: nn.Module, x: torch.Tensor, *, meta: bool, error: str) -> torch.Tensor:
    # functional_call with fresh tensors leaves the module's own parameters and buffers untouched.
    state = {name: (_to_meta(t) if meta else t.detach().clone()) for name, t in chain(module.named_parameters(), module.named_buffers())}
    try:
        with torch.no_grad():
            return torch.func.functional_call(module, state, (x,))
    except Exception as err:
        if meta:
            raise
        raise ValueError(f"{error}: {err}") from err


def _unique(params) -> list[nn.Parameter]:
    seen: set[int] = set()
    out = []
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in _unique(module.parameters()))


def partition_uniform(num_blocks: int, components: int) -> tuple[int, ...]:
    """Cut points for ``components`` runs of consecutive blocks as equal in length as possible.

    Returns K-1 increasing indices; component k holds blocks[cuts[k-1]:cuts[k]]. Earlier
    components get the extra block when the division is not exact.
    """
    _check_k(num_blocks, components)
    base, extra = divmod(num_blocks, components)
    cuts, at = [], 0
    for k in range(components - 1):
        at += base + (1 if k < extra else 0)
        cuts.append(at)
    return tuple(cuts)


def partition_balanced(costs: Sequence[float], components: int) -> tuple[int, ...]:
    """Cut points minimising the largest component's total cost (e.g. parameters or FLOPs per block).

    Exact linear-partition dynamic program, O(K n^2) for n blocks: cheap for real networks.
    """
    n = len(costs)
    _check_k(n, components)
    if any(c < 0 for c in costs):
        raise ValueError("block costs must be non-negative")
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + float(c))
    inf = float("inf")
    # best[k][i]: minimal max-cost splitting the first i blocks into k components.
    best = [[inf] * (n + 1) for _ in range(components + 1)]
    arg = [[0] * (n + 1) for _ in range(components + 1)]
    best[0][0] = 0.0
    for k in range(1, components + 1):
        for i in range(k, n - (components - k) + 1):
            for j in range(k - 1, i):
                cand = max(best[k - 1][j], prefix[i] - prefix[j])
                if cand < best[k][i]:
                    best[k][i], arg[k][i] = cand, j
    cuts, i = [], n
    for k in range(components, 1, -1):
        i = arg[k][i]
        cuts.append(i)
    return tuple(reversed(cuts))


def uniform_cuts(blocks: Sequence[nn.Module], components: int) -> tuple[int, ...]:
    """Cuts giving each component as equal a number of parameterised blocks as possible; a
    parameter-free block (ReLU, Flatten) rides with the parameterised block before it (the
    first such blocks with the first parameterised one)."""
    has = [parameter_count(b) > 0 for b in blocks]
    if not any(has):  # nothing to balance by: plain block counts (the engine refuses parameter-free components)
        return partition_uniform(len(blocks), components)
    if sum(has) < components:
        raise ValueError(f"components={components}, but only {sum(has)} of the {len(blocks)} blocks have parameters "
                         f"(the others, e.g. ReLU or Flatten, cannot train alone): use components <= {sum(has)}")
    starts = [i for i, h in enumerate(has) if h]  # each parameterised block starts a unit ...
    starts[0] = 0  # ... and leading parameter-free blocks join the first unit
    base, extra = divmod(len(starts), components)
    cuts, at = [], 0
    for k in range(components - 1):
        at += base + (1 if k < extra else 0)
        cuts.append(starts[at])
    return tuple(cuts)


def group_blocks(blocks: Sequence[nn.Module], cuts: Sequence[int]) -> list[nn.Module]:
    """Group ``blocks`` into components at ``cuts`` (from the partition helpers or explicit)."""
    cuts = tuple(cuts)
    if any(not 0 < c < len(blocks) for c in cuts) or list(cuts) != sorted(set(cuts)):
        raise ValueError(
            f"cuts {cuts} must be strictly increasing indices in 1..{len(blocks) - 1}, one per boundary, "
            f"so that every component holds at least one block"
        )
    edges = (0, *cuts, len(blocks))
    return [nn.Sequential(*blocks[a:b]) for a, b in zip(edges, edges[1:])]


def merge_adjacent(net: ComponentNet, size: int = 2) -> ComponentNet:
    """``net`` with each run of ``size`` adjacent components merged into one (K -> ceil(K/size)).

    Component groups start at the bottom: (1..size), (size+1..2 size), ...; the last group may
    be shorter. A merged group keeps the head of its top member (so the final head stays the
    final head); the other members' heads are dropped. The modules are ``net``'s own: training
    the merged network trains them in place. Used by 1-wise double size (``LocalDouble``).
    """
    count(size, f"size={size!r}: merge groups of an integer number >= 1 of components")
    K = net.num_components
    blocks, heads = [], []
    for start in range(0, K, size):
        members = range(start, min(start + size, K))
        group = [net.blocks[k] for k in members]
        blocks.append(group[0] if len(group) == 1 else nn.Sequential(*group))
        heads.append(net.heads[members[-1]])
    merged = ComponentNet(blocks=blocks, heads=heads)
    # Merging may bring a tie group's copies into one component (still summed, still equal) and
    # drops the heads of merged members, and the copies they held.
    kept = {id(p) for k in range(merged.num_components) for p in merged.component_parameters(k)}
    groups = [[p for p in g if id(p) in kept] for g in net.ties]
    merged.ties = check_ties(merged, [g for g in groups if len(g) > 1], one_component_ok=True)
    return merged


def check_ties(net: ComponentNet, ties, *, one_component_ok: bool = False) -> list[list[nn.Parameter]]:
    """``ties`` as lists of parameters, each group's copies equal in shape and value (ValueError otherwise)."""
    out = []
    owner = {id(p): k for k in range(net.num_components) for p in net.component_parameters(k)}
    for i, group in enumerate(ties):
        group = list(group)
        if len(group) < 2 or not all(isinstance(p, nn.Parameter) for p in group):
            raise ValueError(f"ties[{i}] must list two or more parameters of the network (the copies of one tied tensor)")
        if len({id(p) for p in group}) != len(group):
            raise ValueError(f"ties[{i}] lists a parameter twice; list each copy once")
        for p in group:
            if id(p) not in owner:
                raise ValueError(f"ties[{i}]: a parameter of shape {tuple(p.shape)} is not a trainable parameter of any component")
            if p.shape != group[0].shape or not torch.equal(p.detach(), group[0].detach()):
                raise ValueError(
                    f"ties[{i}]: the copies must start equal (same shape and values); a parameter of shape "
                    f"{tuple(p.shape)} differs from the first, of shape {tuple(group[0].shape)}: copy the values over"
                )
        if len({owner[id(p)] for p in group}) < 2 and not one_component_ok:
            raise ValueError(f"ties[{i}]: every copy lives in component {owner[id(group[0])] + 1}; within one component "
                             f"share one parameter instead of tying copies")
        out.append(group)
    return out


def _check_k(num_blocks: int, components: int) -> None:
    count(components, f"components={components}: need at least one component")
    if components > num_blocks:
        raise ValueError(f"components={components} exceeds the {num_blocks} blocks; use components <= {num_blocks}")
