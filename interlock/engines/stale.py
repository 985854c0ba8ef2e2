"""Stale end-to-end gradients (the Hogwild baseline), simulated exactly in one process.

A pipeline that never waits: every component applies the gradient of a batch when it arrives,
to weights that have moved since that batch's forward pass. ``strategies.staleness`` derives the
delay from the paper's time model: component k of K applies the gradient of batch t at step
t + (K - k) (the top component at once, component 1 K-1 steps late).

Step t here: (1) batch t's forward and end-to-end backward with every component's current
weights (the ordinary end-to-end schedules, without their updates), giving the exact gradient at
the weights batch t's forward used, as a pipeline that stashes weights (PipeDream) computes it;
(2) each component queues that gradient and applies the one of batch t - (K - k), if any, with
its optimizer. The weights batch t+1 meets are then exactly those the pipeline's forward of
batch t+1 would meet. Auxiliary heads (which only watch under end-to-end) are part of their
component, so their gradients wait as long. BatchNorm statistics move at the forward, as in the
pipeline. At the end of a run of ``total_steps`` steps the pipeline drains: every component
applies its remaining gradients in order (``flush``), so each applies one gradient per batch.
With ``flush_every`` = n it drains after every n steps as well (the training program passes
``checkpoint_every``: the distributed :class:`~interlock.engines.StaleRankEngine` checkpoints
only where its pipeline is drained, and both engines drain at the same steps).

Checkpoints add each component's queued gradients, so resumed equals uninterrupted.
"""

from __future__ import annotations

from collections import deque

import torch

from .. import schedule as S
from ..net import ComponentNet
from ..strategies import Hogwild, staleness
from ..worker import ActionRecord
from .common import Losses, StepResult, strategy_state
from .replay import no_wait_makespan
from .simulated import SimulatedEngine
from .stale_ranks import _validate_flush_every

__all__ = ["StaleEngine"]


class StaleEngine(SimulatedEngine):
    """Train ``net`` with :class:`~interlock.strategies.Hogwild`; see the module docstring.

    ``total_steps``: flush the queued gradients after that many steps (None: call :meth:`flush`);
    ``flush_every``: flush after every that many steps too (0: never).
    """

    def __init__(self, net: ComponentNet, strategy: Hogwild, *, total_steps: int | None = None, flush_every: int = 0,
                 **options) -> None:
        if not isinstance(strategy, Hogwild):
            raise ValueError(f"StaleEngine runs Hogwild() (hogwild); got {strategy!r}")
        _validate_flush_every(flush_every)
        super().__init__(net, strategy, **options)
        self.flush_every = flush_every
        self.delays = staleness(self.num_components)
        self.total_steps = total_steps
        for w in self.workers:
            # The engine applies (late) what the schedule's own Update would apply at once.
            assert isinstance(w.schedule[-1], S.Update)
            w.schedule = w.schedule[:-1]
        self.pending: list[deque[list[torch.Tensor | None]]] = [deque() for _ in self.workers]

    def _params(self, k: int) -> list[torch.nn.Parameter]:
        return [p for group in self.workers[k].optimizer.param_groups for p in group["params"]]

    def step(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        """Batch t's end-to-end gradient now; each component applies the one of batch t - (K - k)."""
        if not self._checked:
            self._check(x)
        step = self.step_count
        for k, w in enumerate(self.workers):
            w.begin_step(x if k == 0 else None, y, step)
        self._run_all()
        losses = [w.end_step() for w in self.workers]
        records = [r for w in self.workers for r in w.records]
        for k in range(self.num_components):
            params = self._params(k)
            self.pending[k].append([p.grad for p in params])
            for p in params:
                p.grad = None
            if len(self.pending[k]) > self.delays[k]:
                records.append(self._apply(k, self.pending[k].popleft()))
        self.step_count += 1
        if self.step_count == self.total_steps or (self.flush_every and self.step_count % self.flush_every == 0):
            records.extend(self.flush())
        return StepResult(step=step, losses=Losses.of(losses), records=records)

    def _apply(self, k: int, grads: list[torch.Tensor | None]) -> ActionRecord:
        """One optimizer step (and LR-scheduler step) of component k with the given gradients."""
        w = self.workers[k]
        start = w.clock.now()
        for p, g in zip(self._params(k), grads):
            p.grad = g
        w.optimizer.step()
        w.optimizer.zero_grad(set_to_none=True)
        if w.lr_scheduler is not None:
            w.lr_scheduler.step()
        return ActionRecord(k, S.Update(), start, w.clock.now())

    def flush(self) -> list[ActionRecord]:
        """The pipeline drains: every component applies its queued gradients, oldest first."""
        return [self._apply(k, q.popleft()) for k, q in enumerate(self.pending) for _ in range(len(q))]

    def predicted_time(self, records, *, latency_s: float = 0.0):
        """The pipeline never waits: each device does one forward and one backward per batch, so K devices
        need the busiest component's time."""
        return no_wait_makespan(records, self.num_components)

    def component_state(self, k: int) -> dict:
        state = super().component_state(k)
        state["stale"] = {"pending": list(self.pending[k])}
        return state

    def load_component_state(self, k: int, state: dict) -> None:
        strategy_state(state, k, key="stale", holds="queued gradients", strategy="hogwild")
        super().load_component_state(k, state)
        self.pending[k] = deque(state["stale"]["pending"])
