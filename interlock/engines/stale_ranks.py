"""Stale end-to-end gradients with weight stashing (``HogwildStashed``, not the paper's Hogwild) with one process per component: a pipeline that never flushes.

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
one the simulated :class:`~interlock.engines.StaleEngine` computes, applied at the same step:
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

from ..core import schedule as S
from ..heads._registry import local_loss
from ..network.net import ComponentNet
from ..core.strategies import HogwildStashed, staleness
from ..runtime.transport import InMemoryTransport
from ..core.worker import ActionRecord
from .common import EngineOptions, Losses, LossFn, StepResult, check_total_steps, load_component, make_worker, pack_component_state, strategy_state
from .ranks import RankEngine

__all__ = ["StaleRankEngine"]

_P2P_TAGS = (7321, 7322)
_ACTIVATION = ("hogwild_activation",)
_GRADIENT = ("hogwild_gradient",)


@dataclass
class _InFlight:
    """A batch whose forward ran on this rank and whose backward has not yet."""

    step: int
    a_in: torch.Tensor | None  # the input leaf (None on rank 0)
    a_out: torch.Tensor  # the output, with its graph over ``stash``
    stash: list[torch.Tensor]  # the copies of the block's parameters the forward used
    head_grads: dict[int, torch.Tensor]  # id(live parameter) -> the head's gradient of this batch


def _validate_flush_every(flush_every: int) -> None:
    if isinstance(flush_every, bool) or not isinstance(flush_every, int) or flush_every < 0:
        raise ValueError(f"flush_every={flush_every!r}: give the steps between pipeline drains, an integer >= 0 (0: at the end only)")


class StaleRankEngine(RankEngine):
    """Train component ``rank`` of ``net`` with :class:`~interlock.core.strategies.HogwildStashed`, one process per component.

    ``total_steps``: the run's length (the pipeline drains there); ``flush_every``: drain also
    after every that many steps (0: at the end only; the training program passes
    ``checkpoint_every``). Other options as :class:`~interlock.engines.DistributedEngine`;
    ``batch_streams`` and ``split_backward`` do not apply to this pipeline.
    """

    def __init__(
        self,
        net: ComponentNet,
        strategy: HogwildStashed,
        *,
        total_steps: int,
        flush_every: int = 0,
        optimizer,
        loss_fn: LossFn,
        lr_scheduler=None,
        loss_weights: Sequence[float] | None = None,
        batch_streams: bool = False,
        split_backward: bool = False,
        rng_seed: int | None = None,
        record: bool = True,
        timeout_s: float = 300.0,
        device: torch.device | str | None = None,
        max_pending_sends: int = 32,
        sample_input: torch.Tensor | None = None,
    ) -> None:
        if not isinstance(strategy, HogwildStashed):
            raise ValueError(f"StaleRankEngine runs HogwildStashed() (hogwild-stashed); got {strategy!r} "
                             f"(the paper's Hogwild() runs in one process only, on HogwildEngine)")
        check_total_steps(total_steps)
        _validate_flush_every(flush_every)
        if batch_streams or split_backward:
            raise ValueError("hogwild runs its own pipeline: batch_streams and split_backward do not apply; leave them off")
        options = EngineOptions(optimizer=optimizer, loss_fn=loss_fn, lr_scheduler=lr_scheduler, loss_weights=loss_weights,
                                rng_seed=rng_seed, record=record)
        k = self._setup(net, strategy, options, device=device, timeout_s=timeout_s, sample_input=sample_input)
        K = self.num_components
        self.total_steps, self.flush_every = total_steps, flush_every
        self.delay = staleness(K)[k]
        # channel: activations up, gradients down; transport: evaluation's chain.
        self._open_channels(max_pending_sends=max_pending_sends, timeout_s=timeout_s, train_tags=_P2P_TAGS)
        # The worker holds this component's optimizer, LR scheduler, loss weight and dropout seeds;
        # this engine runs the pipeline itself (its schedule is not used).
        self.worker = make_worker(net, k, self.plan, options, InMemoryTransport())
        block = self.worker.block
        self._names = [n for n, _ in block.named_parameters()]
        self._live = [p for _, p in block.named_parameters()]
        self._params = [p for g in self.worker.optimizer.param_groups for p in g["params"]]
        self.in_flight: deque[_InFlight] = deque()
        self.step_count = 0
        self.epoch_s = self.group.epoch()

    # -- training ------------------------------------------------------------------------------

    def step(self, x: torch.Tensor | None, y: torch.Tensor) -> StepResult:
        """Batch t's forward here, and the backward and update of batch t - d_k."""
        if y is None:
            raise ValueError("every rank needs the targets y (the heads' losses); pass the same batch on every rank")
        if self.rank == 0 and x is None:
            raise ValueError("rank 0 runs the first component: pass the batch inputs x")
        k, K, w = self.rank, self.num_components, self.worker
        t = self.step_count
        records: list[ActionRecord] = []
        y = y.to(self.device)

        def timed(action, fn):
            start = w.clock.now()
            out = fn()
            if w.record:
                records.append(ActionRecord(k, action, start - self.epoch_s, w.clock.now() - self.epoch_s))
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
        self.step_count += 1
        if self.step_count == self.total_steps or (self.flush_every and self.step_count % self.flush_every == 0):
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

        def clock(action, start):
            if w.record:
                records.append(ActionRecord(k, action, start - self.epoch_s, w.clock.now() - self.epoch_s))

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
        """One optimizer (and LR-scheduler) step with a batch's head and block gradients (their sum where shared)."""
        w = self.worker
        for p in self._params:
            h, b = head_grads.get(id(p)), block_grads.get(id(p))
            p.grad = h if b is None else (b if h is None else h + b)
        w.optimizer.step()
        w.optimizer.zero_grad(set_to_none=True)
        if w.lr_scheduler is not None:
            w.lr_scheduler.step()

    def flush(self) -> list[ActionRecord]:
        """Drain: the backward and update of every batch this rank still holds, oldest first."""
        records = []
        while self.in_flight:
            records.extend(self._backward(self.in_flight.popleft(), None))
        return records

    # -- sync points -----------------------------------------------------------------------------

    def component_state(self, k: int) -> dict:
        """Component k's state; only where the pipeline is drained (every ``flush_every`` steps and at the end)."""
        self._check_local(k)
        if self.in_flight:
            raise RuntimeError(
                f"component {k + 1} holds {len(self.in_flight)} batches in flight at step {self.step_count}: hogwild "
                f"checkpoints where the pipeline is drained; make flush_every (checkpoint_every) divide the checkpoint step"
            )
        w = self.worker
        state = pack_component_state(
            k=k, num_components=self.num_components, strategy=self.strategy.name, step_count=self.step_count,
            block=w.block, head=w.head, optimizer=w.optimizer, lr_scheduler=w.lr_scheduler,
        )
        state["stale"] = {"pending": []}  # drained: the simulated engine's format, with nothing queued
        return state

    def load_component_state(self, k: int, state: dict) -> None:
        self._check_local(k)
        strategy_state(state, k, key="stale", holds="queued gradients", strategy="hogwild-stashed")
        if state["stale"]["pending"]:
            raise ValueError(
                f"the checkpoint of component {k + 1} holds {len(state['stale']['pending'])} queued gradients (written "
                f"by the simulated engine between drains); resume it with engine=simulated"
            )
        w = self.worker
        load_component(state, k=k, num_components=self.num_components, block=w.block, head=w.head,
                       optimizer=w.optimizer, lr_scheduler=w.lr_scheduler)
        self.step_count = int(state["step_count"])


def _spread(stash: list[torch.Tensor], grads: Sequence[torch.Tensor | None]) -> list[torch.Tensor | None]:
    """``grads`` were taken for the stashed copies that require grad; None for the others."""
    it = iter(grads)
    return [next(it) if s.requires_grad else None for s in stash]
