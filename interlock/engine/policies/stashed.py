"""Stale end-to-end gradients with weight stashing (``HogwildStashed``, PipeDream's rule; not the paper's Hogwild).

One process (:class:`StashedLocal`):
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
``checkpoint_every``: the ranks policy :class:`StashedRanks` checkpoints
only where its pipeline is drained, and both engines drain at the same steps).

Checkpoints add each component's queued gradients, so resumed equals uninterrupted.

One process per component (:class:`StashedRanks`): Stale end-to-end gradients with weight stashing (``HogwildStashed``, not the paper's Hogwild) with one process per component: a pipeline that never flushes.

Rank k holds component k+1 (0-based k; d_k = K-1-k in the 0-based form of
:func:`interlock.core.strategies.staleness`). At its step t it receives batch t's activation from
rank k-1, runs its forward and sends the output up, then takes the gradient of batch t - d_k
that rank k+1 sent down, runs that batch's backward, sends its input gradient down and
applies the gradient at once. The top rank (d = 0) computes the loss and applies batch t's
gradient in the same step. Rank k's step t thus needs only rank k+1's step t-1: every rank
alternates a forward and a backward, and no rank waits for the whole pipeline.

**Weight stashing.** A backward must use the weights its forward used (PipeDream's weight
stashing), which have moved d_k updates since. Each forward is the worker's
``Forward(keep="stash")``: the block runs on a copy of the component's parameters
(``torch.func.functional_call``), kept with the batch's held step and its graph until its
backward; the worker's update gives the copies' gradients to the live parameters. The gradient of batch t is therefore exactly the
one :class:`StashedLocal` computes, applied at the same step:
the two engines give the same parameters (tests/test_distributed_async.py). Auxiliary heads
only watch (as under end-to-end): their gradient is taken at the forward and applied with the
block's, d_k steps later, as in the simulated engine. BatchNorm statistics move at the forward.

**Drains.** After ``total_steps`` steps, and after every ``flush_every`` steps, the pipeline
drains: every rank finishes the backward of each batch it holds and applies it, so a
checkpoint holds no batch in flight (the simulated engine drains at the same steps, so the
engines agree and a resumed run equals an uninterrupted one).

Evaluation and log rows are sync points at which gradients may be in flight downwards; they
travel on their own point-to-point tags, so nothing mixes.
"""

from __future__ import annotations

from collections import deque

import torch

from ...checks import count
from ...core import schedule as S
from ...core.strategies import HogwildStashed, staleness
from ...core.worker import ActionRecord
from ..options import Losses, StepResult
from ..specs import StrategySpec, register_strategy
from .base import Policy
from .replay import no_wait_makespan

__all__ = ["StashedLocal", "StashedRanks", "check_flush_every"]



def check_flush_every(flush_every) -> None:
    """``flush_every`` must be an integer >= 0 (the steps between pipeline drains; 0: at the end only)."""
    count(flush_every, f"flush_every={flush_every!r}: give the steps between pipeline drains, an integer >= 0 (0: at the end only)",
          minimum=0)


def drains_at(engine, step_count: int) -> bool:
    """Whether the pipeline drains after ``step_count`` steps: at the run's end and every ``flush_every``."""
    return step_count == engine.total_steps or bool(engine.flush_every and step_count % engine.flush_every == 0)


class StashedLocal(Policy):
    """``hogwild-stashed`` in one process; see the module docstring.

    The engine's ``total_steps``: drain the queued gradients after that many steps (None: call
    :meth:`flush`); ``flush_every``: drain after every that many steps too (0: never).
    """

    honours_precision = False
    fp32_only_because = ("applies gradients steps after they were taken (fp16's loss scale may move in between; bf16 "
                         "and compile are unchecked on it)")

    has_state = True
    holds = "queued gradients"

    def check(self) -> None:
        check_flush_every(self.engine.flush_every)

    def setup(self) -> None:
        e = self.engine
        self.delays = staleness(e.num_components)
        self.pending: list[deque[list[torch.Tensor | None]]] = [deque() for _ in range(e.num_components)]
        for k, w in e._workers.items():
            # The schedule's Update queues the gradient; the one of batch t - (K - k) is applied (late).
            w.apply_update = lambda k=k: self._late_update(k)

    def step(self, x: torch.Tensor, y: torch.Tensor, step: int) -> StepResult:
        """Batch t's end-to-end gradient now; each component applies the one of batch t - (K - k)."""
        e = self.engine
        for k, w in e._workers.items():
            w.begin_step(x if k == 0 else None, y, step)
        e.runtime.run(e._workers)
        losses = [w.end_step() for w in e.workers]
        records = [r for w in e.workers for r in w.records]
        if drains_at(e, step + 1):
            records.extend(self.flush())
        return StepResult(step=step, losses=Losses.of(losses), records=records)

    def _late_update(self, k: int) -> None:
        w = self.engine.worker(k)
        params = w.params
        self.pending[k].append([p.grad for p in params])
        for p in params:
            p.grad = None
        if len(self.pending[k]) > self.delays[k]:
            w.step_optimizer(self.pending[k].popleft())

    def _apply(self, k: int, grads: list[torch.Tensor | None]) -> ActionRecord:
        w = self.engine.worker(k)
        start = w.clock.now()
        w.step_optimizer(grads)
        return ActionRecord(k, S.Update(), start, w.clock.now())

    def flush(self) -> list[ActionRecord]:
        """The pipeline drains: every component applies its queued gradients, oldest first."""
        return [self._apply(k, q.popleft()) for k, q in enumerate(self.pending) for _ in range(len(q))]

    def predicted_time(self, records, *, latency_s: float = 0.0):
        """The pipeline never waits: each device does one forward and one backward per batch, so K devices
        need the busiest component's time."""
        return no_wait_makespan(records, self.engine.num_components)

    def state(self, k: int) -> dict:
        return {"pending": list(self.pending[k])}

    def load_state(self, k: int, state: dict) -> None:
        self.pending[k] = deque(state["pending"])


class StashedRanks(Policy):
    """``hogwild-stashed`` with one process per component; see the module docstring.

    The engine's ``total_steps``: the run's length (the pipeline drains there); ``flush_every``:
    drain also after every that many steps (0: at the end only; the training program passes
    ``checkpoint_every``). ``batch_streams`` and ``split_backward`` do not apply to this pipeline.
    Every pass is one of the worker's actions: a ``Forward(keep="stash")`` and the head's loss, the
    step held (the worker's held steps) until its gradient comes down d_k steps later, then the
    backward on the stashed weights and the update of the live ones.
    """

    honours_precision = False
    fp32_only_because = StashedLocal.fp32_only_because

    has_state = True
    holds = "queued gradients"

    def check(self) -> None:
        e = self.engine
        if e.total_steps is None:
            raise ValueError("hogwild-stashed on ranks needs the run's length: pass total_steps (the pipeline drains there)")
        check_flush_every(e.flush_every)
        if e.options.batch_streams or e.options.split_backward:
            raise ValueError("hogwild runs its own pipeline: batch_streams and split_backward do not apply; leave them off")
        if e.options.microbatches != 1:
            raise ValueError("hogwild-stashed pipelines whole batches; leave microbatches at 1")

    def setup(self) -> None:
        e = self.engine
        self.rank, self.num_components = e.rank, e.num_components
        self.delay = staleness(e.num_components)[e.rank]
        self.worker = e.worker(e.rank)

    @property
    def in_flight(self) -> list[int]:
        """The batches whose forward ran on this rank and whose backward has not yet."""
        return self.worker.held_steps

    # -- training ------------------------------------------------------------------------------

    def step(self, x: torch.Tensor | None, y: torch.Tensor, step: int) -> StepResult:
        """Batch t's forward here, and the backward and update of batch t - d_k."""
        self.require_batch(x, y)
        k, K, w = self.rank, self.num_components, self.worker
        t, top = step, k == K - 1
        records: list[ActionRecord] = []
        w.begin_step(x if k == 0 else None, y, t, driven=True)
        acts = ([S.RecvActivation()] if k > 0 else []) + [S.Forward(keep="stash")]
        if not top:
            acts.append(S.SendActivation())
        if w.head is not None:
            acts.append(S.HeadLoss(stream=top))  # (its gradient waits on the stash with the block's)
        if top:
            self._run(acts + self._backward_actions(), records)
            loss = w.end_step()
        else:
            self._run(acts, records)
            loss = w.hold()
        while len(w.held_steps) > self.delay:
            records += self._backward(w.held_steps[0])
        if drains_at(self.engine, t + 1):
            records.extend(self.flush())
        losses = Losses.of([loss if j == k else None for j in range(K)])
        return StepResult(step=t, losses=losses, records=records)

    def _run(self, actions, records: list) -> None:
        """Run ``actions`` on the worker's current step; its records (on the ranks' time origin) into ``records``."""
        for a in actions:
            self.worker.run(a)
        records += self.engine.runtime.records(self.worker.records)

    def _backward_actions(self) -> list[S.Action]:
        """The end-to-end loss's backward on this step's stashed weights, the input gradient down, the update."""
        k, j = self.rank, self.num_components - 1
        grad = [S.FullGrad(loss=j, last=True), S.SendStream(loss=j, hops_left=k - 1)] if k > 0 else [
            S.WeightGrad(losses=(j,), last=True)]
        return grad + [S.Update()]

    def _backward(self, s: int) -> list[ActionRecord]:
        """Batch s's backward on its stashed weights (the gradient from above), its input gradient down, the update."""
        records: list[ActionRecord] = []
        self.worker.resume(s)
        self._run([S.RecvStream(loss=self.num_components - 1, hops_left=self.rank)] + self._backward_actions(), records)
        self.worker.end_step()
        return records

    def flush(self) -> list[ActionRecord]:
        """Drain: the backward and update of every batch this rank still holds, oldest first."""
        records = []
        while self.worker.held_steps:
            records.extend(self._backward(self.worker.held_steps[0]))
        return records

    # -- checkpoints -------------------------------------------------------------------------------

    def state(self, k: int) -> dict:
        """Only where the pipeline is drained (every ``flush_every`` steps and at the end): the local
        policy's format, with nothing queued, so the file loads on either runtime."""
        if self.in_flight:
            raise RuntimeError(
                f"component {k + 1} holds {len(self.in_flight)} batches in flight at step {self.engine.step_count}: hogwild "
                f"checkpoints where the pipeline is drained; make flush_every (checkpoint_every) divide the checkpoint step"
            )
        return {"pending": []}

    def load_state(self, k: int, state: dict) -> None:
        if state["pending"]:
            raise ValueError(
                f"the checkpoint of component {k + 1} holds {len(state['pending'])} queued gradients (written "
                f"by the local runtime between drains); resume it with engine=simulated"
            )


register_strategy(StrategySpec(
    "hogwild-stashed", HogwildStashed, {"local": StashedLocal, "ranks": StashedRanks}, lambda m, **_: HogwildStashed(),
    aliases=("pipedream",), summary="stale end-to-end gradients with weight stashing (PipeDream), not the paper's Hogwild", example=HogwildStashed))
