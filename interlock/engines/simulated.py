"""The simulated engine: every component's worker in one process, over an in-memory transport.

Exact and cheap: it computes what K devices would compute, in one process. The workers
are stepped cooperatively: each runs its actions until it waits for a message, then the
next one runs. The numbers do not depend on that interleaving (each channel is FIFO and
each worker's actions run in its schedule's order), which is why a distributed engine
running the same workers gives the same parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..core import schedule as S
from ..network.net import ComponentNet
from ..core.strategies import Strategy
from ..runtime.transport import InMemoryTransport
from ..network.ties import local_sum, set_grads, sum_in_order, tie_groups
from .base import EngineBase
from .common import EngineOptions, Losses, LossFn, StepResult, load_component, make_worker, pack_component_state, validate_engine

__all__ = ["SimulatedEngine"]


class SimulatedEngine(EngineBase):
    """Train ``net`` in place with ``strategy``, all components in this process.

    ``optimizer``: factory ``params -> torch.optim.Optimizer`` (or one per component);
    ``lr_scheduler``: factory ``optimizer -> scheduler`` stepped once per step (or one per
    component); ``loss_weights``: K non-negative weights of L_1..L_K; ``batch_streams``:
    compute several streams' input gradients in one batched call; ``split_backward``: send a
    lone stream's input gradient before computing the weight gradient (the distributed engines'
    default, :func:`interlock.core.schedule.build_schedule`). None, the default here, is one pass:
    this engine runs the components one after another, so a split shortens nothing, and on the
    CPU it costs time (input and weight parts of each layer in two kernel calls, BatchNorm's
    reductions twice: 13-32% more per end-to-end step, docs/results.md). The numbers are the same
    either way wherever a component sees one stream; pass True to time (``predicted_time``) the
    schedule the distributed engines run. ``microbatches``: cut each step's batch into
    that many equal micro-batches, pipelined through the components, one update per step
    (docs/design.md, "Micro-batches"); ``rng_seed``: give each
    component its own random state per step (dropout masks then match the distributed
    engine's); ``sample_input``: validate the network's shapes now rather than at the first step.
    """

    def __init__(
        self,
        net: ComponentNet,
        strategy: Strategy,
        *,
        optimizer,
        loss_fn: LossFn,
        lr_scheduler=None,
        loss_weights: Sequence[float] | None = None,
        batch_streams: bool = False,
        split_backward: bool | None = None,
        rng_seed: int | None = None,
        record: bool = True,
        microbatches: int = 1,
        sample_input: torch.Tensor | None = None,
    ) -> None:
        if not isinstance(strategy, Strategy):
            raise ValueError(f"strategy must be an interlock strategy (EndToEnd(), Interlocking(n), Local()), got {strategy!r}")
        if isinstance(net, ComponentNet):
            net = strategy.prepare(net)  # the network itself, unless the strategy regroups components (LocalDouble)
        self.options = EngineOptions(
            optimizer=optimizer, loss_fn=loss_fn, lr_scheduler=lr_scheduler, loss_weights=loss_weights,
            batch_streams=batch_streams, split_backward=False if split_backward is None else split_backward,
            rng_seed=rng_seed, record=record, microbatches=microbatches,
        )
        self.plan = validate_engine(net, strategy, self.options)
        if strategy.own_engine and microbatches != 1:
            raise ValueError(f"{strategy.name} runs an engine of its own, which does not cut batches into micro-batches; "
                             f"leave microbatches=1")
        self.net = net
        self.strategy = strategy
        self.device = next((p.device for p in net.parameters()), torch.device("cpu"))
        self.transport = InMemoryTransport()
        self.workers = [make_worker(net, k, self.plan, self.options, self.transport) for k in range(net.num_components)]
        self._ties = tie_groups(net)
        # Components that hold a copy of a tied tensor update only once every copy's gradient is
        # complete; the first of them to update sums the gradients (interlock.network.ties).
        self._tied_with = {k: sorted({j for g in self._ties if k in g.components for j in g.components})
                           for k in range(net.num_components)}
        self._ties_summed = -1  # the step whose tied gradients were summed
        for k, w in enumerate(self.workers):
            if self._tied_with[k]:
                w.before_update = self._sum_ties
        self.step_count = 0
        self._checked = False
        if sample_input is not None:
            self._check(sample_input)

    @property
    def num_components(self) -> int:
        return self.net.num_components

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [w.optimizer for w in self.workers]

    def _check(self, x: torch.Tensor) -> None:
        self.net.check(x)
        self._checked = True

    def step(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        """One training step on the batch (x, y); returns this step's losses L_1..L_K."""
        if not self._checked:
            self._check(x)  # a shape misfit fails before any parameter moves
        step = self.step_count
        for k, w in enumerate(self.workers):
            w.begin_step(x if k == 0 else None, y, step)
        self._run_all()
        losses = [w.end_step() for w in self.workers]
        self.step_count += 1
        return StepResult(
            step=step,
            losses=Losses.of(losses),  # left on the device until read
            records=[r for w in self.workers for r in w.records],
        )

    def _run_all(self) -> None:
        pcs = self._pcs = [0] * len(self.workers)
        remaining = sum(len(w.schedule) for w in self.workers)
        while remaining:
            progressed = False
            for k, w in enumerate(self.workers):
                sched = w.schedule
                while pcs[k] < len(sched) and self._ready(k, sched[pcs[k]]):
                    w.run(sched[pcs[k]])
                    pcs[k] += 1
                    remaining -= 1
                    progressed = True
            if not progressed:
                waiting = {k + 1: w.schedule[pcs[k]] for k, w in enumerate(self.workers) if pcs[k] < len(w.schedule)}
                raise RuntimeError(f"schedules deadlocked; components waiting: {waiting}")

    def _sum_ties(self) -> None:
        if self._ties_summed == self.step_count:
            return
        for g in self._ties:
            total = sum_in_order([local_sum(g.local(k)) for k in g.components])
            for k in g.components:
                set_grads(g.local(k), total)
        self._ties_summed = self.step_count

    def _ready(self, k: int, action: S.Action) -> bool:
        if isinstance(action, S.Update) and self._tied_with[k] and self._ties_summed != self.step_count:
            # Every component holding a copy must have finished its backward passes (be at its update).
            return all(isinstance(self.workers[j].schedule[self._pcs[j]], S.Update)
                       for j in self._tied_with[k] if self._pcs[j] < len(self.workers[j].schedule))
        if isinstance(action, S.RecvActivation):
            return self.transport.ready(src=k - 1, dst=k)
        if isinstance(action, S.RecvStream):
            return self.transport.ready(src=k + 1, dst=k)
        return True

    def predicted_time(self, records, *, latency_s: float = 0.0):
        """The makespan K devices would need for the steps in ``records`` (``StepResult.records`` of
        one or more whole steps): their measured action durations replayed on the schedules'
        dependencies (critical path, no barrier between steps). Returns a :class:`interlock.timemodel.clock.Makespan`."""
        from ..timemodel.clock import critical_path, work_from_records

        return critical_path(work_from_records(records, mode="replay"), latency_s=latency_s)

    # -- the interface every engine offers the training program ---------------------------

    is_main = True  # this process reports and writes run-level files

    @property
    def local_components(self) -> list[int]:
        """Components held by this process: all of them."""
        return list(range(self.num_components))

    def gather_losses(self, losses: list[float]) -> list[float]:
        """Every component's loss (already all here)."""
        return list(losses)

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum over processes (one process here)."""
        return t

    def log_sum(self, table: torch.Tensor) -> torch.Tensor:
        """A log row's values over processes (one process here: every row is filled already)."""
        return table

    def barrier(self) -> None:
        """Wait for every process (there is only this one)."""

    @torch.no_grad()
    def heads_forward(self, x: torch.Tensor) -> list[torch.Tensor | None]:
        """Every head's prediction (modules in whatever mode the caller set)."""
        return self.net.heads_forward(x)

    def component_state(self, k: int) -> dict:
        """Component k's block and head weights, optimizer and LR-scheduler state, and the step count
        (one checkpoint file per component, in the format every engine reads)."""
        w = self.workers[k]
        return pack_component_state(
            k=k, num_components=self.num_components, strategy=self.strategy.name, step_count=self.step_count,
            block=w.block, head=w.head, optimizer=w.optimizer, lr_scheduler=w.lr_scheduler,
        )

    def load_component_state(self, k: int, state: dict) -> None:
        """Restore what :meth:`component_state` returned (the step count included)."""
        w = self.workers[k]
        load_component(state, k=k, num_components=self.num_components, block=w.block, head=w.head,
                       optimizer=w.optimizer, lr_scheduler=w.lr_scheduler)
        self.step_count = int(state["step_count"])

    def close(self, *, wait: bool = True) -> None:
        """Nothing to release (the distributed engines' ``close(wait=False)`` skips waiting after an error)."""
