"""Sequential greedy training (Belilovsky et al. 2019; DGL's Fig. 3 baseline), in one process.

The run's steps are split into K stages (``strategies.stage_lengths``). In stage k, components
1..k-1 are frozen: they run in eval mode without autograd (their parameters and BatchNorm
statistics never move again, and their outputs are what they would give at test time), and
component k trains with its head on their output, exactly as ``Local()`` trains a one-component
network on that input (the same worker and schedule). Components above k wait untouched.

Each component's LR schedule spans its own stage (``Sequential.updates_per_component``).
Checkpoints are the ordinary ones: the step count says which stage a resumed run is in.
"""

from __future__ import annotations

import torch

from ...core.strategies import Sequential, stage_lengths
from ..options import Losses, StepResult
from ..specs import StrategySpec, register_strategy
from .base import Policy
from .replay import no_wait_makespan

__all__ = ["SequentialPolicy"]


class SequentialPolicy(Policy):
    """A step of the current stage: the frozen components' forward, then component k's local step."""

    uses_channel = False  # the trained component's input comes from the frozen ones, handed over here

    def check(self) -> None:
        if self.engine.total_steps is None:
            raise ValueError("sequential training needs the run's length: pass total_steps (split into one stage per component)")

    def setup(self) -> None:
        e = self.engine
        self.stages = stage_lengths(e.total_steps, e.num_components)
        self._starts = [sum(self.stages[:k]) for k in range(e.num_components)]

    def stage(self, step: int | None = None) -> int:
        """The component (0-based) that trains at ``step`` (default: the next step)."""
        step = self.engine.step_count if step is None else step
        return max(k for k in range(self.engine.num_components) if step >= self._starts[k])

    def step(self, x: torch.Tensor, y: torch.Tensor, step: int) -> StepResult:
        K = self.engine.num_components
        if step >= sum(self.stages):
            raise RuntimeError(f"sequential training is complete after {sum(self.stages)} steps; every stage has run")
        k = self.stage(step)
        worker = self.engine.worker(k)
        inp = x if k == 0 else self._frozen_forward(k, x)
        loss, _ = worker.run_alone(inp, y, step - self._starts[k])  # (nobody above trains yet: its output is dropped)
        return StepResult(step=step, losses=Losses.of([loss if j == k else None for j in range(K)]),
                          records=list(worker.records), updated=[j == k for j in range(K)])

    def predicted_time(self, records, *, latency_s: float = 0.0):
        """One component trains at a time; the frozen ones below only forward, off its records (not
        counted): the trained component's busy time."""
        return no_wait_makespan(records, self.engine.num_components)

    def _frozen_forward(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """a_{k-1}: x through the frozen components 1..k-1 (each worker's frozen forward)."""
        a = x
        for j in range(k):
            a = self.engine.worker(j).forward_frozen(a)
        return a

register_strategy(StrategySpec(
    "sequential", Sequential, SequentialPolicy, lambda m, **_: Sequential(), aliases=("sequential-greedy",),
    runtimes=("local",), summary="sequential greedy: each component trains for its own stage, the ones below frozen", example=Sequential))
