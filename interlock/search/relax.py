"""SEDONA's relaxed search space (Pyeon et al. 2021, §3.2-3.3): every block may be cut, every cut may get any head.

A network of L blocks f_1..f_L, M candidate heads c_{l,1..M} after each block l < L, and the
network's own final head. Per block l < L the search owns

- a signal variable alpha_l in R^2, with gates (w_l, s_l) = softmax(alpha_l): how much of the error
  gradient entering block l comes from its own local loss (w_l) and from block l+1 above (s_l);
- a head variable beta_l in R^M, with b_l = softmax(beta_l): the auxiliary output of block l is
  the mixture sum_m b_{l,m} c_{l,m}(h_l) (Eq. 3), and L_l its loss.

The error gradient entering block l's output h_l is (Eq. 4), recursively from the top,

    delta_l = w_l * dL_l/dh_l + s_l * J_{l+1}^T delta_{l+1},    delta_L = dL_L/dh_L,

and block l's weights get J_l^T delta_l: gates (1, 0) everywhere give local (greedy block-wise)
learning, (0, 1) end-to-end backprop, anything else the exact affine mix. A head's weights get
their own loss's gradient, unscaled (the interlock contract: grad phi_l = dL_l/dphi_l).

:func:`mixed_gradients` computes exactly this recursion, one vector-Jacobian product per block
and head over the graph of a single forward pass (each block's forward runs once). Why not a
cheaper trick: scaling the gradient where it crosses a boundary (``d + s * (h - d)`` with d =
h.detach(), or an autograd.Function) gives the right first-order gradients but makes autograd
believe the activation above the boundary moves s times as fast as h does, so the second-order
terms the bilevel step needs come out wrong. The authors' code weights the losses by products
of gates and divides each block's gradient by such a product, which is exact but divides by
numbers that underflow in deep networks (and by zero for gates (1, 0)); the recursion needs neither.

Everything is differentiable w.r.t. the gates, so the bilevel step can differentiate through
the weight updates (see bilevel.py). Gates are passed in as probabilities; the search
parameterises them by softmax (:func:`gates`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .. import heads as head_registry
from ..measure.flops import profile_blocks
from ..models import build
from ..models._registry import Network

__all__ = ["SearchSpace", "Relaxed", "mixed_gradients", "gates", "CANDIDATES"]

CANDIDATES = ("aux1", "aux2", "aux3", "aux4")  # the paper's candidate heads (decoder depths 1..4)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Relaxed:
    """One relaxed forward pass: the activations and every head's loss, all in one autograd graph."""

    hs: list[torch.Tensor]  # x, then the output of each block: L + 1 tensors
    losses: list[torch.Tensor]  # L_1..L_{L-1} of the mixed auxiliary heads, then the final loss L_L


def gates(alpha: torch.Tensor, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(softmax(alpha), softmax(beta)) per block: signal gates (L-1, 2), head weights (L-1, M)."""
    return F.softmax(alpha, dim=-1), F.softmax(beta, dim=-1)


class SearchSpace(nn.Module):
    """L blocks, M candidate heads after each of blocks 1..L-1, and the final head.

    ``space(x)``: the network's prediction (blocks, then the final head; no auxiliary head runs).
    ``space(x, y, head_weights=..., loss_fn=...)``: the :class:`Relaxed` pass (Eq. 3's mixed heads),
    for :func:`mixed_gradients`. Both are plain ``forward`` calls, so
    ``torch.func.functional_call(space, state, ...)`` runs either on any weights.
    """

    def __init__(self, *, blocks: Sequence[nn.Module], candidates: Sequence[Sequence[nn.Module]], final_head: nn.Module,
                 head_names: Sequence[str]) -> None:
        super().__init__()
        blocks, candidates, head_names = list(blocks), [list(c) for c in candidates], tuple(head_names)
        if len(blocks) < 2:
            raise ValueError(f"the search needs a network of at least 2 blocks (it decides where to cut); got {len(blocks)}")
        if len(candidates) != len(blocks) - 1:
            raise ValueError(f"{len(blocks)} blocks need candidate heads after each of the first {len(blocks) - 1}; got {len(candidates)}")
        if not head_names or any(len(c) != len(head_names) for c in candidates):
            raise ValueError(f"every block needs one candidate per head name {head_names}")
        self.blocks = nn.ModuleList(blocks)
        self.candidates = nn.ModuleList(nn.ModuleList(c) for c in candidates)
        self.final_head = final_head
        self.head_names = head_names

    @classmethod
    def from_network(cls, network: Network, *, heads: Sequence[str] = CANDIDATES, head_kw: dict | None = None) -> "SearchSpace":
        """Candidates ``heads`` (registered names) after every block of ``network`` but the last."""
        heads = tuple(heads)
        unknown = [h for h in heads if h not in head_registry.names()]
        if unknown or not heads:
            raise ValueError(f"candidate heads {list(heads)}: give registered head names (unknown: {unknown}); "
                             f"known: {', '.join(head_registry.names())}")
        if len(set(heads)) != len(heads):
            raise ValueError(f"candidate heads {list(heads)} repeat a name; give each candidate once")
        profile = profile_blocks(network.blocks, network.sample_input)
        candidates = []
        for l, p in enumerate(profile[:-1]):
            row = []
            for h in heads:
                options = {**network.head_options.get(h, {}), **(head_kw or {})}
                try:
                    row.append(head_registry.create(h, in_shape=p.out_shape, num_classes=network.num_classes, **options))
                except ValueError as err:
                    raise ValueError(f"candidate head {h!r} after block {l + 1} (input {p.out_shape}): {err}") from err
            candidates.append(row)
        return cls(blocks=network.blocks, candidates=candidates, final_head=network.final_head, head_names=heads)

    @classmethod
    def from_model(cls, name: str, *, heads: Sequence[str] = CANDIDATES, head_kw: dict | None = None, **kw) -> "SearchSpace":
        """The registry model ``name`` (built as one component; ``kw`` its options) as a search space over
        SEDONA's layers (a ResNet's stem joins its first residual block: :mod:`.layers`)."""
        from dataclasses import replace

        from .layers import sedona_layers

        network = build(name, components=1, **kw)
        return cls.from_network(replace(network, blocks=sedona_layers(name, network.blocks)), heads=heads, head_kw=head_kw)

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_heads(self) -> int:
        return len(self.head_names)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, *, head_weights: torch.Tensor | None = None,
                loss_fn: LossFn | None = None):
        if y is None:
            for block in self.blocks:
                x = block(x)
            return self.final_head(x)
        L = self.num_blocks
        if head_weights is None or loss_fn is None:
            raise ValueError("the relaxed forward needs head_weights (L-1, M) and loss_fn")
        if tuple(head_weights.shape) != (L - 1, self.num_heads):
            raise ValueError(f"head_weights {tuple(head_weights.shape)}: expected ({L - 1}, {self.num_heads}) "
                             f"for {L} blocks and {self.num_heads} candidate heads")
        hs, losses = [x], []
        for l, block in enumerate(self.blocks):
            hs.append(block(hs[-1]))
            if l < L - 1:
                mixed = sum(head_weights[l, m] * c(hs[-1]) for m, c in enumerate(self.candidates[l]))  # Eq. 3
                losses.append(loss_fn(mixed, y))
        losses.append(loss_fn(self.final_head(hs[-1]), y))
        return Relaxed(hs, losses)


def mixed_gradients(out: Relaxed, params: dict[str, torch.Tensor], signal: torch.Tensor, *,
                    create_graph: bool) -> dict[str, torch.Tensor]:
    """Eq. 4's gradient of every tensor in ``params`` (named as in ``SearchSpace.named_parameters``).

    ``signal`` (L-1, 2): the gates (w_l, s_l). ``create_graph``: keep the gradients differentiable
    (w.r.t. the gates, the head weights and the parameters) for the bilevel step.
    """
    L = len(out.hs) - 1
    if tuple(signal.shape) != (L - 1, 2):
        raise ValueError(f"signal {tuple(signal.shape)}: expected ({L - 1}, 2) for {L} blocks")
    groups: dict[str, list[str]] = {}
    for name in params:
        parts = name.split(".")
        key = "final_head" if parts[0] == "final_head" else ".".join(parts[:2])  # blocks.l, candidates.l
        groups.setdefault(key, []).append(name)
    grads: dict[str, torch.Tensor] = {}

    def vjp(output: torch.Tensor, key: str, wrt: torch.Tensor | None, grad_output: torch.Tensor | None = None):
        """Gradients of ``output`` (weighted by grad_output) w.r.t. group ``key``'s params (stored)
        and w.r.t. ``wrt`` (returned)."""
        names = groups.get(key, [])
        wrt = wrt if wrt is not None and wrt.requires_grad else None  # e.g. the input x, or what parameterless blocks made of it
        inputs = [params[n] for n in names] + ([wrt] if wrt is not None else [])
        if not inputs:
            return None
        gs = torch.autograd.grad(output, inputs, grad_outputs=grad_output, retain_graph=True, create_graph=create_graph,
                                 allow_unused=True)
        for n, g in zip(names, gs):
            grads[n] = torch.zeros_like(params[n]) if g is None else g
        if wrt is None:
            return None
        return torch.zeros_like(wrt) if gs[-1] is None else gs[-1]

    delta = vjp(out.losses[-1], "final_head", out.hs[L])  # delta_L = dL_L / dh_L
    for l in range(L - 1, -1, -1):  # block l maps hs[l] to hs[l + 1]
        below = out.hs[l] if l > 0 else None
        from_above = vjp(out.hs[l + 1], f"blocks.{l}", below, delta)  # J_l^T delta_l
        if l == 0:
            break
        own = vjp(out.losses[l - 1], f"candidates.{l - 1}", out.hs[l])  # dL_l / dh_l (head after block l-1)
        delta = signal[l - 1, 0] * own + signal[l - 1, 1] * from_above  # Eq. 4
    for name in params:  # parameters no loss reaches (none in a well-formed space)
        grads.setdefault(name, torch.zeros_like(params[name]))
    return grads
