"""fp16 loss scaling of one component: its own ``torch.amp.GradScaler``, the updates it skipped, the streams' scale.

Each component scales what enters its backward passes by its own scale s_k: its head's loss, and
every stream it receives. So every gradient it computes, its parameters' and the input gradients
it sends down, carries s_k. A stream leaves the component unscaled and in fp32 (a true
gradient): the component below knows nothing of s_k and multiplies by its own scale on arrival,
and fp32 on the wire keeps the small true gradients that fp16 would flush to zero (the reason
for scaling at all). An inf or NaN in a stream reaches the parameters of the component below,
whose scaler then skips that update as well: a corrupt step is skipped wherever it reached.

The update unscales the gradients (``optimizer_update``), the scaler steps the optimizer unless a
gradient is inf/NaN, and lowers its scale after such a step; :attr:`LossScaling.skipped_steps`
counts the skipped updates (the metrics rows report it, checkpoints keep it with the scaler's state).
"""

from __future__ import annotations

import torch

__all__ = ["LossScaling", "scaled_step"]


class LossScaling:
    """One component's gradient scaler and its count of skipped updates."""

    def __init__(self, device: torch.device | None) -> None:
        device = torch.device("cpu") if device is None else device
        self.scaler = torch.amp.GradScaler(device.type)
        # Create the scale tensor now: an update whose step scaled nothing (no loss, no stream) still unscales.
        self.scaler.scale(torch.ones((), device=device))
        self.skipped_steps = 0

    def scale(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` times this component's current scale (a tensor product: no host sync)."""
        return self.scaler.scale(t)

    def unscale_stream(self, grad: torch.Tensor) -> torch.Tensor:
        """An input gradient computed at this component's scale, as the true gradient in fp32 (for the wire)."""
        return grad.float() / self.scaler.scale(torch.ones((), device=grad.device))

    def state_dict(self) -> dict:
        return {"scaler": self.scaler.state_dict(), "skipped_steps": self.skipped_steps}

    def load_state_dict(self, state: dict) -> None:
        self.scaler.load_state_dict(state["scaler"])
        self.skipped_steps = int(state["skipped_steps"])


def scaled_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> bool:
    """The optimizer's step (through ``scaler`` when given, its gradients already unscaled); whether it stepped.

    A scaler skips the step when a gradient is inf or NaN and then lowers its scale (by its
    ``backoff_factor`` < 1), so a lower scale after ``update`` means the step was skipped.
    (``GradScaler.step`` reads its inf check on the host anyway; the two ``get_scale`` reads add no wait.)
    """
    if scaler is None:
        optimizer.step()
        return True
    before = scaler.get_scale()
    scaler.step(optimizer)
    scaler.update()
    return scaler.get_scale() >= before
