"""Gradient clipping by norm and an exponential moving average of weights: one component's parts of an update.

Both act inside :func:`interlock.core.worker.optimizer_update` (clip before the optimizer's step, EMA after
it), so every policy that updates through the worker gets them on every runtime.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["CLIP_MODES", "squared_grad_norm", "clip_to", "WeightEMA"]

# component: each component clips its own gradient (no communication; the rule of local learning).
# global: one norm over every component's gradient (what torch.nn.utils.clip_grad_norm_ does on the unsplit model).
CLIP_MODES = ("component", "global")


def squared_grad_norm(params: list[torch.Tensor]) -> torch.Tensor:
    """Sum of squares of the gradients present (float32; a 0 on the parameters' device when none is)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), device=params[0].device if params else None)
    norms = torch._foreach_norm(grads)
    return torch.stack([n.float() for n in norms]).pow(2).sum()


def clip_to(params: list[torch.Tensor], max_norm: float, total_sq: torch.Tensor) -> None:
    """Scale the gradients by ``min(1, max_norm / (norm + 1e-6))``, ``norm = sqrt(total_sq)``: torch's rule
    (``clip_grad_norm_``), so a global clip equals it on the unsplit model. No host sync."""
    grads = [p.grad for p in params if p.grad is not None]
    if grads:
        factor = (max_norm / (total_sq.sqrt() + 1e-6)).clamp(max=1.0)
        torch._foreach_mul_(grads, factor.to(grads[0].device))


class WeightEMA:
    """``ema <- decay * ema + (1 - decay) * w`` over a component's parameters, after each update.

    Buffers (BatchNorm's running statistics) are not averaged: evaluation with the EMA weights uses the
    live buffers.
    """

    def __init__(self, params: list[torch.nn.Parameter], decay: float) -> None:
        self.params = params
        self.decay = decay
        self.shadow = [p.detach().clone() for p in params]

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - self.decay)

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange the live weights and the EMA weights (call twice to swap back)."""
        for p, s in zip(self.params, self.shadow):
            tmp = p.detach().clone()
            p.copy_(s)
            s.copy_(tmp)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": [s.clone() for s in self.shadow]}

    def load_state_dict(self, state: dict) -> None:
        if len(state["shadow"]) != len(self.shadow):
            raise ValueError(f"the checkpoint's EMA holds {len(state['shadow'])} tensors; this component has "
                             f"{len(self.shadow)} parameters")
        with torch.no_grad():
            for s, v in zip(self.shadow, state["shadow"]):
                s.copy_(v)


SumSquares = Callable[[torch.Tensor], torch.Tensor]
