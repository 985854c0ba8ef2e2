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
stashing), which have moved d_k updates since. Each forward runs on a copy of the block's
parameters (``torch.func.functional_call``), kept with the batch's graph until its backward;
the optimizer updates the live parameters. The gradient of batch t is therefore exactly the
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
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.func import functional_call

from ...checks import count
from ...core import schedule as S
from ...core.strategies import HogwildStashed, staleness
from ...core.worker import ActionRecord
from ...heads._registry import local_loss
from ..options import Losses, StepResult
from ..specs import StrategySpec, register_strategy
from .base import Policy
from .replay import no_wait_makespan

__all__ = ["StashedLocal", "StashedRanks", "check_flush_every"]

# Training messages of the ranks driver (on the runtime's training channel).
_ACTIVATION = ("hogwild_activation",)
_GRADIENT = ("hogwild_gradient",)


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

    honours_precision = False  # (StashedRanks runs its passes outside the worker; the two stay alike)

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


@dataclass
class _InFlight:
    """A batch whose forward ran on this rank and whose backward has not yet."""

    step: int
    a_in: torch.Tensor | None  # the input leaf (None on rank 0)
    a_out: torch.Tensor  # the output, with its graph over ``stash``
    stash: list[torch.Tensor]  # the copies of the block's parameters the forward used
    head_grads: dict[int, torch.Tensor]  # id(live parameter) -> the head's gradient of this batch


class StashedRanks(Policy):
    """``hogwild-stashed`` with one process per component; see the module docstring.

    The engine's ``total_steps``: the run's length (the pipeline drains there); ``flush_every``:
    drain also after every that many steps (0: at the end only; the training program passes
    ``checkpoint_every``). ``batch_streams`` and ``split_backward`` do not apply to this pipeline.
    """

    honours_precision = False  # (its passes run outside the worker)

    uses_channel = False  # the policy runs the pipeline itself (the worker's schedule is not used)
    has_state = True
    holds = "queued gradients"

    def check(self) -> None:
        e = self.engine
        if e.total_steps is None:
            raise ValueError("hogwild-stashed on ranks needs the run's length: pass total_steps (the pipeline drains there)")
        check_flush_every(e.flush_every)
        if e.options.batch_streams or e.options.split_backward:
            raise ValueError("hogwild runs its own pipeline: batch_streams and split_backward do not apply; leave them off")

    def setup(self) -> None:
        e = self.engine
        k = e.rank
        self.rank, self.num_components, self.device = k, e.num_components, e.device
        self.delay = staleness(e.num_components)[k]
        self.channel = e.runtime.channel  # activations up, gradients down (evaluation has its own transport)
        # The worker holds this component's optimizer, LR scheduler, loss weight and dropout seeds;
        # this policy runs the pipeline itself.
        self.worker = e.worker(k)
        block = self.worker.block
        self._names = [n for n, _ in block.named_parameters()]
        self._live = [p for _, p in block.named_parameters()]
        self._params = self.worker.params
        self.in_flight: deque[_InFlight] = deque()

    # -- training ------------------------------------------------------------------------------

    def step(self, x: torch.Tensor | None, y: torch.Tensor, step: int) -> StepResult:
        """Batch t's forward here, and the backward and update of batch t - d_k."""
        self.require_batch(x, y)
        k, K, w = self.rank, self.num_components, self.worker
        t = step
        epoch = self.engine.epoch_s
        records: list[ActionRecord] = []
        y = y.to(self.device)

        def timed(action, fn):
            start = w.clock.now()
            out = fn()
            if w.record:
                records.append(ActionRecord(k, action, start - epoch, w.clock.now() - epoch))
            return out

        if k == 0:
            a_in, inp = None, x.to(self.device)
        else:
            a = timed(S.RecvActivation(), lambda: self.channel.recv(src=k - 1, dst=k, tag=_ACTIVATION))
            a_in = a.detach().requires_grad_(a.is_floating_point())
            inp = a_in
        stash = [p.detach().clone().requires_grad_(p.requires_grad) for p in self._live]

        def forward():
            with w._rng(t, salt=0):
                return functional_call(w.block, dict(zip(self._names, stash)), (inp,))

        a_out = timed(S.Forward(), forward)
        if k < K - 1:
            timed(S.SendActivation(), lambda: self.channel.send(a_out.detach(), src=k, dst=k + 1, tag=_ACTIVATION))
        top = k == K - 1
        loss, head_grads, stream = timed(S.HeadLoss(stream=top), lambda: self._head_loss(a_out, y, t, stream=top))
        self.in_flight.append(_InFlight(t, a_in, a_out, stash, head_grads))
        if top:
            records.extend(self._backward(self.in_flight.popleft(), stream))
        while len(self.in_flight) > self.delay:
            records.extend(self._backward(self.in_flight.popleft(), None))
        if drains_at(self.engine, t + 1):
            records.extend(self.flush())
        losses = Losses.of([loss if j == k else None for j in range(K)])
        return StepResult(step=t, losses=losses, records=records)

    def _head_loss(self, a_out: torch.Tensor, y: torch.Tensor, t: int, *, stream: bool):
        """The head's loss (watching the block's output) and its gradients now; the top's also gives the stream."""
        w = self.worker
        if w.head is None:
            return None, {}, None
        h_in = a_out.detach().requires_grad_(stream)
        with w._rng(t, salt=1):
            loss = local_loss(w.head, h_in, y, w.loss_fn)
        inputs = w._head_params + ([h_in] if stream else [])
        grads: dict[int, torch.Tensor] = {}
        got = None
        if inputs and loss.requires_grad:
            weighted = loss if w.loss_weight == 1.0 else loss * w.loss_weight
            got = torch.autograd.grad(weighted, inputs, allow_unused=True)
            grads = {id(p): g for p, g in zip(w._head_params, got) if g is not None}
        out_stream = None
        if stream:
            out_stream = got[-1] if got is not None and got[-1] is not None else torch.zeros_like(h_in)
        return loss.detach(), grads, out_stream

    def _backward(self, batch: _InFlight, stream: torch.Tensor | None) -> list[ActionRecord]:
        """Batch's backward on its stashed weights (the stream from above unless given), its input gradient
        down, and the update."""
        k, w = self.rank, self.worker
        records = []
        epoch = self.engine.epoch_s

        def clock(action, start):
            if w.record:
                records.append(ActionRecord(k, action, start - epoch, w.clock.now() - epoch))

        if stream is None:
            start = w.clock.now()
            stream = self.channel.recv(src=k + 1, dst=k, tag=_GRADIENT)
            clock(S.RecvStream(loss=self.num_components - 1, hops_left=0), start)
        start = w.clock.now()
        wrt = ([batch.a_in] if batch.a_in is not None else []) + [s for s in batch.stash if s.requires_grad]
        grads = torch.autograd.grad(batch.a_out, wrt, stream, allow_unused=True) if batch.a_out.requires_grad else [None] * len(wrt)
        clock(S.FullGrad(loss=self.num_components - 1, last=True), start)
        if batch.a_in is not None:
            g_in = grads[0] if grads[0] is not None else torch.zeros_like(batch.a_in)
            start = w.clock.now()
            self.channel.send(g_in, src=k, dst=k - 1, tag=_GRADIENT)
            clock(S.SendStream(loss=self.num_components - 1, hops_left=1), start)
            grads = grads[1:]
        block_grads = {id(p): g for p, g in zip(self._live, _spread(batch.stash, grads)) if g is not None}
        start = w.clock.now()
        self._apply(batch.head_grads, block_grads)
        clock(S.Update(), start)
        return records

    def _apply(self, head_grads: dict[int, torch.Tensor], block_grads: dict[int, torch.Tensor]) -> None:
        """One update with a batch's head and block gradients (their sum where shared)."""
        grads = []
        for p in self._params:
            h, b = head_grads.get(id(p)), block_grads.get(id(p))
            grads.append(h if b is None else (b if h is None else h + b))
        self.worker.step_optimizer(grads)

    def flush(self) -> list[ActionRecord]:
        """Drain: the backward and update of every batch this rank still holds, oldest first."""
        records = []
        while self.in_flight:
            records.extend(self._backward(self.in_flight.popleft(), None))
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


def _spread(stash: list[torch.Tensor], grads: Sequence[torch.Tensor | None]) -> list[torch.Tensor | None]:
    """``grads`` were taken for the stashed copies that require grad; None for the others."""
    it = iter(grads)
    return [next(it) if s.requires_grad else None for s in stash]


register_strategy(StrategySpec(
    "hogwild-stashed", HogwildStashed, {"local": StashedLocal, "ranks": StashedRanks}, lambda m, **_: HogwildStashed(),
    aliases=("pipedream",), summary="stale end-to-end gradients with weight stashing (PipeDream), not the paper's Hogwild", example=HogwildStashed))
