"""Split any ``nn.Module`` into K components: at named split points, from a block list, or automatically.

``split(model, components=K, sample_input=x)`` walks the module tree instead of tracing it,
so a model that ``torch.distributed.pipelining`` cannot capture as a graph still splits:

- an ``nn.Sequential`` runs its children one after another, so it can be cut between any two;
- any other module can be cut between its children only if a run on ``sample_input``
  shows its forward to be a chain of them (each child called once, the first on the
  module's input, each next one on the previous one's output, the module returning the
  last one's output). A residual block, or a forward that mixes children's outputs,
  stays whole: cut before or after it.

Cuts are chosen one of three ways: ``points=["layers.4", ...]`` (module paths, each starting
a component, as ``SplitPoint.BEGINNING`` does in ``torch.distributed.pipelining``), an
explicit flat ``blocks=[...]`` list with ``cuts``, or automatically: ``balance="flops"`` or
``"time"`` measures every block on the sample batch and picks, by an exact dynamic program,
the cuts that minimise the costliest component (``"uniform"``: equal numbers of blocks with
parameters). Every component must hold parameters; cuts that would leave one without any
are never chosen, and explicit ones are refused with the component named.

Auxiliary heads (``heads=``): a registered head name, built for each cut from the shape of
the cut's output (``interlock.heads``); the user's own modules, one per cut; a function
``(k, out_shape) -> module``; or None (no auxiliary heads: end-to-end training only). The
final head is ``final_head`` (default ``nn.Identity()``: the model's own last layer, in the
last component, makes the prediction). :class:`SplitPlan` says which blocks, cost and head
each component got (``net.split_plan.describe()``).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..checks import count
from .net import ComponentNet, group_blocks, parameter_count, uniform_cuts  # (uniform_cuts: re-exported)

__all__ = ["split", "SplitPlan", "flatten_blocks", "balanced_cuts", "uniform_cuts", "block_costs", "BALANCES"]

logger = logging.getLogger(__name__)

BALANCES = ("flops", "time", "params", "uniform")


@dataclass(frozen=True)
class SplitPlan:
    """Where a model was cut: block names, each block's cost, the cuts, and each component's head."""

    names: tuple[str, ...]  # module path of every block, in order
    costs: tuple[float, ...]  # each block's cost under ``balance`` (1 per parameterised block for uniform)
    cuts: tuple[int, ...]  # component k holds blocks[cuts[k-1]:cuts[k]]
    balance: str
    heads: tuple[str, ...]  # what head each component got

    @property
    def component_costs(self) -> list[float]:
        edges = (0, *self.cuts, len(self.names))
        return [sum(self.costs[a:b]) for a, b in zip(edges, edges[1:])]

    def describe(self) -> str:
        edges = (0, *self.cuts, len(self.names))
        lines = []
        for k, (a, b) in enumerate(zip(edges, edges[1:])):
            span = self.names[a] if b - a == 1 else f"{self.names[a]} .. {self.names[b - 1]}"
            lines.append(f"component {k + 1}: {span} ({b - a} blocks, {self.balance} {sum(self.costs[a:b]):.4g}); head: {self.heads[k]}")
        return "\n".join(lines)


# -- the module tree -------------------------------------------------------------------------


def flatten_blocks(
    model: nn.Module, *, sample_input: torch.Tensor | None = None, points: Sequence[str] | None = None
) -> tuple[list[str], list[nn.Module]]:
    """``model`` as a flat list of blocks that run one after another, and their module paths.

    ``points=None``: expand every module that can be cut inside (see the module docstring);
    else expand only the modules on the way to a split point, so each point is a block.
    """
    chains = _observed_chains(model, sample_input) if sample_input is not None else {}
    names: list[str] = []
    blocks: list[nn.Module] = []

    def wanted(path: str) -> bool:
        if points is None:
            return True
        return any(p.startswith(path + ".") if path else True for p in points)

    def visit(module: nn.Module, path: str) -> None:
        children = _children_in_order(module, chains)
        if not children or not wanted(path):
            names.append(path or "(model)")
            blocks.append(module)
            return
        if children is _NOT_A_CHAIN:
            if points is not None:
                inside = [p for p in points if p.startswith(path + ".") or not path]
                raise ValueError(_why_not(module, path, inside, sample_input))
            names.append(path or "(model)")
            blocks.append(module)
            return
        for name, child in children:
            visit(child, f"{path}.{name}" if path else name)

    visit(model, "")
    return names, blocks


_NOT_A_CHAIN = object()


def _children_in_order(module: nn.Module, chains: dict[int, list[str]]):
    kids = dict(module.named_children())
    if not kids:
        return []
    if type(module).forward is nn.Sequential.forward:
        return list(kids.items())
    order = chains.get(id(module))
    if order is None:
        return _NOT_A_CHAIN
    return [(n, kids[n]) for n in order]


def _why_not(module: nn.Module, path: str, inside: list[str], sample_input) -> str:
    where = path or "the model"
    if sample_input is None:
        return (f"split points {inside} lie inside {where} ({type(module).__name__}), which is not an nn.Sequential: pass "
                f"sample_input= so its forward can be checked to be a chain of its children, or cut at a Sequential's child")
    return (f"split points {inside} lie inside {where} ({type(module).__name__}), whose forward is not a chain of its "
            f"children on the sample batch (a child's output is combined with another tensor, e.g. a residual, or a "
            f"child is called twice or not at all): cut before or after {where}, or pass a flat list of blocks")


def _observed_chains(model: nn.Module, x: torch.Tensor) -> dict[int, list[str]]:
    """For every module whose forward on ``x`` was a chain of its direct children: their names in call order."""
    calls: dict[int, list] = {}  # id(parent) -> [(child name, input, output)]
    io: dict[int, tuple] = {}  # id(module) -> (input, output)
    hooks = []
    parent_of = {id(c): (m, n) for m in model.modules() for n, c in m.named_children()}

    def hook(mod, args, out):
        inp = args[0] if len(args) == 1 else None
        io[id(mod)] = (inp, out)
        if id(mod) in parent_of:
            parent, name = parent_of[id(mod)]
            calls.setdefault(id(parent), []).append((name, inp, out))

    for m in model.modules():
        hooks.append(m.register_forward_hook(hook))
    try:  # in eval mode and without gradients: BatchNorm statistics do not move, dropout draws nothing
        was = model.training
        model.eval()
        with torch.no_grad(), torch.random.fork_rng():
            model(x)
        model.train(was)
    finally:
        for h in hooks:
            h.remove()
    chains = {}
    for m in model.modules():
        seq = calls.get(id(m))
        if not seq or id(m) not in io:
            continue
        inp, out = io[id(m)]
        names = [n for n, _, _ in seq]
        if len(set(names)) != len(names) or len(names) != len(dict(m.named_children())):
            continue
        ok = seq[0][1] is inp and seq[-1][2] is out and all(b[1] is a[2] for a, b in zip(seq, seq[1:]))
        if ok:
            chains[id(m)] = names
    return chains


# -- costs and cuts --------------------------------------------------------------------------


def block_costs(blocks: Sequence[nn.Module], sample_input: torch.Tensor, balance: str, *, repeats: int = 3) -> list[float]:
    """Each block's cost on the sample batch: forward FLOPs, measured forward+backward seconds
    (the fastest of ``repeats``, on a copy), or parameter count."""
    if balance not in ("flops", "time", "params"):
        raise ValueError(f"balance={balance!r}: use one of {', '.join(BALANCES)}")
    if balance == "params":
        return [float(parameter_count(b)) for b in blocks]
    if balance == "flops":
        from ..measure.flops import profile_blocks

        return [float(p.flops) for p in profile_blocks(blocks, sample_input)]
    costs, x = [], sample_input
    for i, block in enumerate(blocks):
        twin = copy.deepcopy(block)  # timed on a copy: the block's own weights and statistics stay put
        best = float("inf")
        for _ in range(repeats):
            inp = x.detach().requires_grad_(x.is_floating_point())
            start = time.perf_counter()
            out = twin(inp)
            if out.requires_grad:
                out.float().sum().backward()
            best = min(best, time.perf_counter() - start)
        costs.append(best)
        x = out.detach()
    return costs


def balanced_cuts(costs: Sequence[float], components: int, *, has_params: Sequence[bool] | None = None) -> tuple[int, ...]:
    """The K-1 cuts minimising the costliest component's total cost, every component holding a
    block with parameters (``has_params``; None: every block has). Exact dynamic program, O(K n^2)."""
    n = len(costs)
    has = [True] * n if has_params is None else list(has_params)
    count(components, f"components={components}: need at least one component")
    if sum(has) < components:
        raise ValueError(f"components={components}, but only {sum(has)} of the {n} blocks have parameters: every "
                         f"component needs some; use components <= {sum(has)}")
    if any(c < 0 for c in costs):
        raise ValueError("block costs must be non-negative")
    prefix, pcount = [0.0], [0]
    for c, h in zip(costs, has):
        prefix.append(prefix[-1] + float(c))
        pcount.append(pcount[-1] + int(h))
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(components + 1)]
    arg = [[0] * (n + 1) for _ in range(components + 1)]
    best[0][0] = 0.0
    for k in range(1, components + 1):
        for i in range(1, n + 1):
            for j in range(k - 1, i):
                if best[k - 1][j] == inf or pcount[i] == pcount[j]:  # blocks j..i-1 would hold no parameters
                    continue
                cand = max(best[k - 1][j], prefix[i] - prefix[j])
                if cand < best[k][i]:
                    best[k][i], arg[k][i] = cand, j
    cuts, i = [], n
    for k in range(components, 1, -1):
        i = arg[k][i]
        cuts.append(i)
    return tuple(reversed(cuts))


# -- the split -----------------------------------------------------------------------------------


def split(
    model: nn.Module | Sequence[nn.Module],
    *,
    components: int | None = None,
    points: Sequence[str] | None = None,
    cuts: Sequence[int] | None = None,
    balance: str = "flops",
    sample_input: torch.Tensor | None = None,
    heads="linear",
    final_head: nn.Module | None = None,
    num_classes: int | None = None,
    head_kw: dict | None = None,
) -> ComponentNet:
    """``model`` (a module, or a flat list of blocks) cut into components; see the module docstring.

    Give ``points`` (module paths that start components 2..K), ``cuts`` (K-1 block indices), or
    ``components=K`` with ``balance`` ("flops", "time", "params" or "uniform"). ``sample_input``
    (a small batch the model accepts) is needed for automatic balance by flops or time, for
    registry heads (their input shapes), and to cut inside modules that are not ``nn.Sequential``.
    ``num_classes``: what registry heads predict (default: the last size of the model's output).
    """
    if sum(v is not None for v in (components, points, cuts)) != 1:
        raise ValueError("give exactly one of components=K (automatic), points=[module paths] or cuts=[block indices]")
    if isinstance(model, nn.Module):
        names, blocks = flatten_blocks(model, sample_input=sample_input, points=points)
    else:
        blocks = list(model)
        if not blocks or not all(isinstance(b, nn.Module) for b in blocks):
            raise ValueError("model must be an nn.Module or a non-empty list of nn.Module blocks")
        names = [f"[{i}]" for i in range(len(blocks))]
        if points is not None:
            raise ValueError("points= names module paths; with a list of blocks give cuts=[indices] or components=K")
    has = [parameter_count(b) > 0 for b in blocks]
    costs: list[float] = [float(h) for h in has]
    used_balance = "parameterised blocks" if components is None else "uniform"
    if points is not None:
        missing = [p for p in points if p not in names]
        if missing:
            raise ValueError(f"split points {missing} are not modules of the model that can start a component; "
                             f"the blocks around them are: {', '.join(names[:40])}")
        found = tuple(names.index(p) for p in points)
        if list(found) != sorted(set(found)) or 0 in found:
            raise ValueError(f"split points {list(points)} must be distinct, in forward order, and after the first block ({names[0]})")
        chosen = found
    elif cuts is not None:
        chosen = tuple(cuts)
    else:
        if balance not in BALANCES:
            raise ValueError(f"balance={balance!r}: use one of {', '.join(BALANCES)}")
        if balance == "uniform":
            chosen = uniform_cuts(blocks, components)
        else:
            if balance in ("flops", "time") and sample_input is None:
                raise ValueError(f"balance={balance!r} measures the blocks on a sample batch: pass sample_input=, or balance='params'/'uniform'")
            costs = block_costs(blocks, sample_input, balance)
            if balance == "flops" and not any(costs):
                raise ValueError("the blocks count no FLOPs on the sample batch (no matrix products); use balance='time' or 'params'")
            chosen = balanced_cuts(costs, components, has_params=has)
            used_balance = balance
    grouped = group_blocks(blocks, chosen)
    edges = (0, *chosen, len(blocks))
    for k, (a, b) in enumerate(zip(edges, edges[1:])):
        if not any(has[a:b]):
            raise ValueError(f"component {k + 1} ({', '.join(names[a:b])}) has no parameters and could not train: move "
                             f"the cut so that it holds a block with parameters")
    K = len(grouped)
    shapes = _out_shapes(grouped, sample_input) if sample_input is not None else None
    aux, described = _aux_heads(heads, K, shapes, sample_input, num_classes, head_kw or {})
    final = nn.Identity() if final_head is None else final_head
    described.append("the model's own output" if final_head is None else f"final_head ({type(final_head).__name__})")
    plan = SplitPlan(names=tuple(names), costs=tuple(costs), cuts=tuple(chosen), balance=used_balance, heads=tuple(described))
    net = ComponentNet(blocks=grouped, heads=[*aux, final], sample_input=sample_input)
    net.split_plan = plan
    logger.info("split into %d components:\n%s", K, plan.describe())
    return net


def _out_shapes(grouped: Sequence[nn.Module], x: torch.Tensor) -> list[tuple[int, ...]]:
    from ..measure.flops import dry_run

    shapes = []
    for block in grouped:
        x = dry_run(block, x)
        shapes.append(tuple(x.shape[1:]))
    return shapes


def _aux_heads(heads, K: int, shapes, sample_input, num_classes, head_kw) -> tuple[list, list[str]]:
    if heads is None:
        return [None] * (K - 1), ["none"] * (K - 1)
    if isinstance(heads, str):
        from .. import heads as registry

        if heads not in registry.names():
            raise ValueError(f"unknown head {heads!r}; known heads: {', '.join(registry.names())}")
        if K == 1:
            return [], []
        if shapes is None:
            raise ValueError(f"heads={heads!r} builds each head from its cut's output shape: pass sample_input=")
        if num_classes is None:
            num_classes = int(shapes[-1][-1])  # what the model predicts: the last size of its output
        out = [registry.create(heads, in_shape=shapes[k], num_classes=num_classes, **head_kw) for k in range(K - 1)]
        return out, [f"{heads} on {shapes[k]} -> {num_classes} classes" for k in range(K - 1)]
    if callable(heads) and not isinstance(heads, nn.Module):
        out = [heads(k, None if shapes is None else shapes[k]) for k in range(K - 1)]
    else:
        out = list(heads)
        if len(out) != K - 1:
            raise ValueError(f"heads has {len(out)} modules; give one per cut ({K - 1}), None where a component has no head")
    for k, h in enumerate(out):
        if h is not None and not isinstance(h, nn.Module):
            raise ValueError(f"the head of component {k + 1} is a {type(h).__name__}; give an nn.Module or None")
    return out, ["none" if h is None else f"yours ({type(h).__name__})" for h in out]
