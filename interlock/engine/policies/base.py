"""What a policy is: what one training step does, over whatever runtime holds the components.

A policy is the second half of an :class:`~interlock.engine.Engine` (the runtime is the first:
where components live and how tensors move). It is given the engine, and through it the
runtime, this process's workers, the options and the plan. It implements :meth:`Policy.step`
and, where its strategy has state beyond weights and optimizers (buffers, queued gradients,
batches in flight), :meth:`Policy.state` / :meth:`Policy.load_state`: the engine writes that
state under one key (``"policy"``) of each component's checkpoint.

The defaults here are the synchronous ones: the run ends with its steps, log rows and losses
travel in one collective per row (:meth:`gather_losses`, :meth:`log_sum`, :meth:`log_row`),
and the policy has no state of its own. A policy whose processes are not in step (async DGL
on ranks) overrides how its rows travel.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ...timemodel.clock import Makespan
from ..options import StepResult

__all__ = ["Policy"]


class Policy:
    """Base of every policy; see the module docstring."""

    # Whether the tied copies of a parameter (interlock.network.ties) are summed before updates
    # under this policy (the runtime does the summing); else a tied network is refused.
    sums_ties: ClassVar[bool] = False
    # Whether the workers talk over the runtime's channel (their schedules' sends and receives
    # cross components); else each worker gets a loopback in this process and the policy moves
    # tensors between components itself.
    uses_channel: ClassVar[bool] = True
    # Whether every message of a tag has one layout across steps (so the ranks runtime may send
    # each layout once and post receives ahead).
    static_shapes: ClassVar[bool] = False
    # Whether component checkpoints hold a part of this policy's own (Policy.state).
    has_state: ClassVar[bool] = False
    holds: ClassVar[str] = ""  # what that part holds, for errors ("replay state", "queued gradients")
    # Whether precision and compile apply under this policy; fp32_only_because: why not, for the refusal.
    honours_precision: ClassVar[bool] = True
    fp32_only_because: ClassVar[str] = ""
    # Whether updates go through the worker's one optimizer update (interlock.core.worker.optimizer_update), so
    # clipping and the weights' EMA apply.
    updates_in_worker: ClassVar[bool] = True
    # Whether a step takes every component's gradient at the same weights in one pass of the plan (a global
    # gradient norm exists under a strategy that couples the components: Strategy.couples_components).
    one_gradient_per_step: ClassVar[bool] = False

    def __init__(self, engine) -> None:  # (an interlock.engine.Engine; not imported here: it imports the policies)
        self.engine = engine

    # -- construction ---------------------------------------------------------------------

    def check(self) -> None:
        """Refuse options this policy cannot honour (called before the runtime places anything)."""

    def setup(self) -> None:
        """After the workers exist: build the policy's own state."""

    def make_workers(self) -> dict:
        """This process's component workers (the default: one per local component, on the plan's schedules)."""
        return self.engine._default_workers()

    # -- the step -------------------------------------------------------------------------

    def step(self, x: torch.Tensor | None, y: torch.Tensor | None, step: int) -> StepResult:
        raise NotImplementedError

    def require_batch(self, x: torch.Tensor | None, y: torch.Tensor | None) -> None:
        """The targets on every process, the inputs where component 1 runs (a ValueError saying what to pass)."""
        if y is None:
            raise ValueError("every rank needs the targets y (the heads' losses); pass the same batch on every rank")
        if x is None and 0 in self.engine.local_components:
            raise ValueError("rank 0 runs the first component: pass the batch inputs x")

    @property
    def wants_more(self) -> bool:
        """Whether the run needs batches past its steps (async DGL until every quota is made)."""
        return False

    def counters(self) -> dict:
        """Run-level counters for the log rows."""
        return {}

    def finish(self, step: int) -> int:
        """The end of the training steps (before the final checkpoint): settle the policy's channels; the step
        count every process agrees on (processes that ran at their own pace may have counted differently)."""
        return step

    def logs(self, step: int) -> bool:
        """Whether ``step`` gets a log row (async DGL on ranks: not past the quota, where no rank has a loss)."""
        return True

    def predicted_time(self, records: list, *, latency_s: float = 0.0) -> Makespan | None:
        """What K devices would need for these steps' measured actions; None where it cannot say."""
        return None

    # -- sync points and reporting -----------------------------------------------------------

    def before_sync(self) -> None:
        """Called before evaluation and checkpoints (collective points of the run)."""

    def gather_losses(self, losses: list[float]) -> list[float]:
        return self.engine.runtime.gather_losses(losses)

    def log_sum(self, table: torch.Tensor) -> torch.Tensor:
        return self.engine.runtime.log_sum(table)

    def log_row(self, table: torch.Tensor, step: int, *, wait: bool) -> torch.Tensor | None:
        # Processes that log in step: one log_sum (a collective on the ranks runtime).
        return self.log_sum(table)

    def heads_forward(self, x: torch.Tensor | None) -> list[torch.Tensor | None]:
        return self.engine.runtime.heads_forward(x)

    # -- checkpoints ------------------------------------------------------------------------

    def parts(self, k: int) -> dict:
        """Component k's block, head, optimizer, LR scheduler and fp16 loss scaling (what every checkpoint holds)."""
        w = self.engine.worker(k)
        return {"block": w.block, "head": w.head, "optimizer": w.optimizer, "lr_scheduler": w.lr_scheduler,
                "loss_scaling": w.loss_scaling}

    def state(self, k: int) -> dict | None:
        """The policy's own part of component k's checkpoint (None: it has none)."""
        return None

    def load_state(self, k: int, state: dict) -> None:
        """Restore what :meth:`state` returned."""

    def close(self, *, wait: bool = True) -> None:
        """Before the runtime closes: end the policy's own channels."""
