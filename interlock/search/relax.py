"""SEDONA's relaxed search space (Pyeon et al. 2021, §3.2-3.3): every block may be cut, every cut may get any head.

A network of L blocks f_1..f_L, M candidate heads c_{l,1..M} after each block l < L, and the
network's own final head. Per block l < L the search owns

- a signal variable alpha_l in R^2, with gates (w_l, s_l) = softmax(alpha_l): how much of the error
  gradient entering block l comes from its own local loss (w_l) and from block l+1 above (s_l);
- a head variable beta_l in R^M, with b_l = softmax(beta_l): the auxiliary output of block l is
  the mixture sum_m b_{l,m} c_{l,m}(h_l) (Eq. 3), and L_l its loss.

The error gradient entering block l's output h_l is (Eq. 4), recursively from the top,

    delta_l = w_l * dL_l/dh_l + s_l * J_{l+1}^T delta_{l+1},    delta_L = dL_L/dh_L,

so gates (1, 0) everywhere give local (greedy block-wise) learning, (0, 1) end-to-end backprop,
and anything else an affine mix. Each block's forward runs once: the mix is made by scaling
gradients, not by running blocks twice. The surrogate loss of :meth:`SearchSpace.forward` has
exactly these gradients w.r.t. the blocks' weights, and the heads' weights get their own
loss's gradient, unscaled (the interlock contract: grad phi_l = dL_l/dphi_l). The authors' code
gets the same block gradients by weighting the losses and then dividing each block's gradient
by a product of gates, and compensates the heads' scaling by rescaling their input and
output; scaling the gradient where it crosses a boundary needs neither.

Everything is differentiable w.r.t. the gates, so the bilevel step can differentiate through
the weight updates (see bilevel.py). Gates are passed in as probabilities; the search
parameterises them by softmax (:func:`gates`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .. import heads as head_registry
from ..flops import profile_blocks
from ..models import build
from ..models._registry import Network

__all__ = ["SearchSpace", "scale_grad", "gates", "CANDIDATES"]

CANDIDATES = ("aux1", "aux2", "aux3", "aux4")  # the paper's candidate heads (decoder depths 1..4)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def scale_grad(h: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``h`` in the forward pass; its gradient times ``scale`` in the backward pass.

    h.detach() + scale * (h - h.detach()) is h exactly (h - h is an exact zero), its gradient
    w.r.t. h is scale * grad, and it stays differentiable w.r.t. scale (second order included),
    unlike a hook. Its first-order gradient w.r.t. scale is zero: the forward does not depend on it.
    """
    d = h.detach()
    return d + scale * (h - d)


def gates(alpha: torch.Tensor, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(softmax(alpha), softmax(beta)) per block: signal gates (L-1, 2), head weights (L-1, M)."""
    return F.softmax(alpha, dim=-1), F.softmax(beta, dim=-1)


class SearchSpace(nn.Module):
    """L blocks, M candidate heads after each of blocks 1..L-1, and the final head.

    ``space(x)``: the network's prediction (blocks, then the final head; no auxiliary head runs).
    ``space(x, y, signal=..., head_weights=..., loss_fn=...)``: (surrogate, losses) of the relaxed
    network; see the module docstring. Both are plain ``forward`` calls, so
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
        """The registry model ``name`` (built as one component; ``kw`` its options) as a search space."""
        return cls.from_network(build(name, components=1, **kw), heads=heads, head_kw=head_kw)

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_heads(self) -> int:
        return len(self.head_names)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, *, signal: torch.Tensor | None = None,
                head_weights: torch.Tensor | None = None, loss_fn: LossFn | None = None):
        if y is None:
            for block in self.blocks:
                x = block(x)
            return self.final_head(x)
        L = self.num_blocks
        if signal is None or head_weights is None or loss_fn is None:
            raise ValueError("the relaxed forward needs signal (L-1, 2), head_weights (L-1, M) and loss_fn")
        if tuple(signal.shape) != (L - 1, 2) or tuple(head_weights.shape) != (L - 1, self.num_heads):
            raise ValueError(f"signal {tuple(signal.shape)} and head_weights {tuple(head_weights.shape)}: "
                             f"expected ({L - 1}, 2) and ({L - 1}, {self.num_heads}) for {L} blocks and {self.num_heads} heads")
        losses = []
        h = x
        for l, block in enumerate(self.blocks):
            h = block(h)
            if l == L - 1:
                break
            own = scale_grad(h, signal[l, 0])  # the local loss's share of delta_l
            mixed = sum(head_weights[l, m] * c(own) for m, c in enumerate(self.candidates[l]))  # Eq. 3
            losses.append(loss_fn(mixed, y))
            h = scale_grad(h, signal[l, 1])  # the share of delta_l that comes from block l+1
        losses.append(loss_fn(self.final_head(h), y))
        return sum(losses), torch.stack([l.detach() for l in losses])
