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

import math

import torch

from ..core import schedule as S
from ..network.net import ComponentNet
from ..core.strategies import Sequential, stage_lengths
from .common import StepResult
from .replay import no_wait_makespan
from .simulated import SimulatedEngine

__all__ = ["SequentialEngine"]


class SequentialEngine(SimulatedEngine):
    """Train ``net`` stage by stage; ``total_steps`` sets the stages (required)."""

    def __init__(self, net: ComponentNet, strategy: Sequential, *, total_steps: int | None = None, **options) -> None:
        if not isinstance(strategy, Sequential):
            raise ValueError(f"SequentialEngine runs Sequential() (sequential); got {strategy!r}")
        if total_steps is None:
            raise ValueError("sequential training needs the run's length: pass total_steps (split into one stage per component)")
        super().__init__(net, strategy, **options)
        self.stages = stage_lengths(total_steps, self.num_components)
        self._starts = [sum(self.stages[:k]) for k in range(self.num_components)]

    def stage(self, step: int | None = None) -> int:
        """The component (0-based) that trains at ``step`` (default: the next step)."""
        step = self.step_count if step is None else step
        return max(k for k in range(self.num_components) if step >= self._starts[k])

    def step(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        """One step of the current stage: the frozen components' forward, then component k's local step."""
        if not self._checked:
            self._check(x)
        if self.step_count >= sum(self.stages):
            raise RuntimeError(f"sequential training is complete after {sum(self.stages)} steps; every stage has run")
        k = self.stage()
        worker = self.workers[k]
        worker.begin_step(x if k == 0 else None, y, self.step_count - self._starts[k])
        if k > 0:
            self.transport.send(self._frozen_forward(k, x), src=k - 1, dst=k, tag=S.ACTIVATION_TAG)
        for action in worker.schedule:
            worker.run(action)
        if k < self.num_components - 1:
            self.transport.recv(src=k, dst=k + 1, tag=S.ACTIVATION_TAG)  # nobody above trains yet
        loss = worker.end_step()
        losses = [math.nan] * self.num_components
        losses[k] = math.nan if loss is None else float(loss)
        step = self.step_count
        self.step_count += 1
        return StepResult(step=step, losses=losses, records=list(worker.records),
                          updated=[j == k for j in range(self.num_components)])

    def predicted_time(self, records, *, latency_s: float = 0.0):
        """One component trains at a time; the frozen ones below only forward, off its records (not
        counted): the trained component's busy time."""
        return no_wait_makespan(records, self.num_components)

    @torch.no_grad()
    def _frozen_forward(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """a_{k-1}: x through the frozen components 1..k-1, in eval mode."""
        a = self.workers[0]._to_device(x)
        for block in self.net.blocks[:k]:
            was_training = block.training
            block.eval()
            try:
                a = block(a)
            finally:
                block.train(was_training)
        return a
