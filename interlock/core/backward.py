"""A block's backward pass in two parts: the input gradient now, the weight gradient later, no work twice.

``autograd.grad(a_out, a_in, v)`` runs only the input part of the backward pass: at a linear
layer it computes the gradient of the layer's input, not of its weight. The weight part needs
the gradient arriving at each node where a parameter enters the graph (the *intermediate*
gradients). :class:`KeptGradients` records those during the input pass (a pre-hook on each such
node), summed over every input pass that keeps them, and :meth:`KeptGradients.weight_pass`
later runs only those nodes' weight outputs, from the kept gradients: the input part is not
walked again. This is the split of PyTorch's pipelining (``stage_backward_input`` /
``stage_backward_weight``, the zero-bubble schedules); we use its graph analysis and its weight
pass, and our own input pass, because ``stage_backward_input`` detaches the block's output
(one input pass per graph) and keeps only the last pass's gradients, where a component here
sends several streams through one graph and trains on their sum.

Exactness: the kept gradients are the very tensors a full backward pass would feed those nodes,
and each node computes its weight gradient by the same kernel whichever outputs are asked, so
for one stream the weight gradients equal a full pass's bit for bit (tests/test_contract.py). The
weight pass of a sum of streams starts from the sum of their kept gradients (the pass is linear),
which equals the gradient of the summed stream to float rounding.
"""

from __future__ import annotations

import torch
from .._torch_compat import pipelining_backward

__all__ = ["KeptGradients"]


class KeptGradients:
    """The gradients at the nodes where ``params`` enter the graph from ``a_in`` to ``a_out``.

    Built once per graph (a micro-batch's forward), before its first input pass. ``complete``:
    every parameter the graph reaches enters through a node of the input pass (false, e.g.,
    when ``a_out`` does not depend on ``a_in``); only then can :meth:`weight_pass` replace a
    full backward pass.
    """

    def __init__(self, a_out: torch.Tensor, a_in: torch.Tensor, params: list[torch.nn.Parameter]) -> None:
        pb = pipelining_backward()
        self.params = [p for p in params if p.requires_grad]
        param_nodes = [pb.get_grad_fn_or_grad_acc(p) for p in self.params]
        reverse = pb.construct_reverse_graph([a_out.grad_fn])
        reached = {n for n in param_nodes if reverse.get(n)}  # .get: the dict is a defaultdict
        self.groups = pb.get_param_groups([pb.get_grad_fn_or_grad_acc(a_in)], param_nodes, reverse)
        covered = set().union(*(g["params"] for g in self.groups)) if self.groups else set()
        self.complete = reached <= covered
        for g in self.groups:
            g["intermediates"] = list(g["intermediates"])
            g["grads"] = [None] * len(g["intermediates"])
        self.passes = 0

    def input_grad(self, a_out: torch.Tensor, a_in: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """dL/da_in for the stream ``v`` = dL/da_out, adding the intermediate gradients to those kept."""
        handles = []
        try:
            for g in self.groups:
                for i, node in enumerate(g["intermediates"]):
                    handles.append(node.register_prehook(_adder(g["grads"], i)))
            (grad,) = torch.autograd.grad(a_out, a_in, v, retain_graph=True)  # the weight pass still needs the graph
        finally:
            for h in handles:
                h.remove()
        self.passes += 1
        return grad

    @property
    def usable(self) -> bool:
        """Whether :meth:`weight_pass` gives the weight gradients (complete, and every node was reached)."""
        return self.complete and self.passes > 0 and all(t is not None for g in self.groups for t in g["grads"])

    def weight_pass(self, *, retain_graph: bool) -> None:
        """Accumulate into the parameters' ``.grad`` the weight gradients of the kept streams' sum (once)."""
        if not self.usable:
            raise RuntimeError("no complete input pass was kept; run a full backward pass instead")
        pipelining_backward().stage_backward_weight(iter(self.params), self.groups, retain_graph=retain_graph)
        self.groups = []


def _adder(store: list, i: int):
    def hook(grad_outputs):
        kept = store[i]
        # Out of place: the first stream's gradient may be the stream tensor itself.
        store[i] = tuple(grad_outputs) if kept is None else tuple(
            b if a is None else a if b is None else a + b for a, b in zip(kept, grad_outputs)
        )
    return hook
