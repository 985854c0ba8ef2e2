"""Stale end-to-end gradients, simulated exactly in one process: the paper's Hogwild and the stashing variant.

:class:`HogwildEngine` (``Hogwild()``, strategy ``hogwild``) is the interlocking paper's Hogwild
(sec. 2, Fig. 3): no weight stashing, so a batch's backward on a component uses the weights the
component holds when the backward reaches it; see its docstring for exactly what it computes and
:func:`hogwild_timeline` for the pipeline it follows. :class:`StaleEngine` (``HogwildStashed()``,
``hogwild-stashed``) stashes weights, as PipeDream does:

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

from ..core import schedule as S
from ..network.net import ComponentNet
from ..core.strategies import Hogwild, HogwildStashed, mismatch, staleness
from ..core.worker import ActionRecord
from .common import Losses, StepResult, strategy_state
from .replay import no_wait_makespan
from .simulated import SimulatedEngine
from .stale_ranks import _validate_flush_every
from ..core.worker import _seeded

__all__ = ["StaleEngine", "HogwildEngine", "hogwild_timeline", "hogwild_versions"]


class StaleEngine(SimulatedEngine):
    """Train ``net`` with :class:`~interlock.core.strategies.HogwildStashed`; see the module docstring.

    ``total_steps``: flush the queued gradients after that many steps (None: call :meth:`flush`);
    ``flush_every``: flush after every that many steps too (0: never).
    """

    def __init__(self, net: ComponentNet, strategy: HogwildStashed, *, total_steps: int | None = None, flush_every: int = 0,
                 **options) -> None:
        if not isinstance(strategy, HogwildStashed):
            raise ValueError(f"StaleEngine runs HogwildStashed() (hogwild-stashed); got {strategy!r}; "
                             f"the paper's Hogwild() runs on HogwildEngine")
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
        strategy_state(state, k, key="stale", holds="queued gradients", strategy="hogwild-stashed")
        super().load_component_state(k, state)
        self.pending[k] = deque(state["stale"]["pending"])


# -- the paper's Hogwild: no weight stashing ------------------------------------------------------


def hogwild_timeline(num_components: int, slots: int) -> list[list[int]]:
    """Fig. 3's pipeline, slot by slot: ``out[k][s]`` is the weight version (updates applied so far)
    component k (0-based) holds during slot s.

    A forward or a backward takes one slot on a device. In each slot a device runs a backward if
    one is ready (the top: a batch whose forward it finished in an earlier slot; below: a gradient
    the component above sent in an earlier slot), else the next forward whose input has arrived
    (component 1 always has one): it never idles. A backward's update counts from the next slot.
    For K = 3 and 12 slots this is the figure's grid of theta indices (tests/test_hogwild.py).
    """
    return _pipeline(num_components, slots)[0]


def hogwild_versions(num_components: int, slots: int) -> list[dict[int, tuple[int, int]]]:
    """Per component (0-based), batch (0-based) -> (weight version at its forward, at its backward), for
    the batches whose backward runs within ``slots`` slots of :func:`hogwild_timeline`'s pipeline."""
    return _pipeline(num_components, slots)[1]


def _pipeline(K: int, slots: int):
    version = [0] * K
    forwarded = [0] * K  # batches whose forward each component has finished
    backwarded = [0] * K  # batches whose backward each component has finished
    grads_ready = [0] * K  # batches whose output gradient has reached each component
    at_forward: list[dict[int, int]] = [{} for _ in range(K)]
    both: list[dict[int, tuple[int, int]]] = [{} for _ in range(K)]
    grid: list[list[int]] = [[] for _ in range(K)]
    for _ in range(slots):
        for k in range(K):
            grid[k].append(version[k])
        fwd_done, bwd_done = list(forwarded), list(backwarded)  # what the slot starts with
        for k in range(K):
            if (fwd_done[k] if k == K - 1 else grads_ready[k]) > bwd_done[k]:
                both[k][bwd_done[k]] = (at_forward[k][bwd_done[k]], version[k])
                backwarded[k] += 1
            elif k == 0 or fwd_done[k - 1] > fwd_done[k]:
                at_forward[k][fwd_done[k]] = version[k]
                forwarded[k] += 1
        for k in range(K):
            if backwarded[k] > bwd_done[k]:
                version[k] += 1
                if k > 0:
                    grads_ready[k - 1] += 1
    return grid, both


class HogwildEngine(SimulatedEngine):
    """Train ``net`` with the paper's :class:`~interlock.core.strategies.Hogwild`: stale gradients without weight stashing.

    What a pipeline without weight stashing computes, exactly. Let D_k = 2(K - k)
    (:func:`~interlock.core.strategies.mismatch`, 1-based k). At step t every component runs the
    forward of batch t with the weights it holds (no autograd graph is kept: a real pipeline that
    updates weights in place cannot backpropagate through a graph whose weights have changed) and
    stores its input a_{k-1}^t. Then component k runs the backward of batch s = t - D_k: it
    recomputes its block (and head) on the stored input a_{k-1}^s with the weights it holds *now*
    (those after the updates of batches < s; the forward of batch s used those after batches
    < s - D_k), backpropagates the output gradient g_k^s that component k+1 computed the same way
    at its own backward of s, sends g_{k-1}^s = d<g_k^s, f_k(a_{k-1}^s; theta_k^now)>/d a_{k-1} down,
    and applies its gradient d<g_k^s, f_k(a_{k-1}^s; theta_k^now)>/d theta_k at once (updates stay in
    batch order). The top component (D_K = 0) runs the loss and backward of batch t right after its
    forward. So the mismatch the paper's Fig. 3 shows is exactly here: activations from older
    weights (the stored input, and every lower component's forward), gradients at current ones.

    The recomputation is how this engine obtains the backward at current weights; a pipeline that
    keeps a component's inner activations from the forward instead would differ inside a component
    with more than one layer (not for one linear layer: both give the stored input times the
    gradient). Dropout draws the same masks in the forward and its recomputation; BatchNorm's
    running statistics move at the forward only. Auxiliary heads only watch (end-to-end): head k's
    loss gradient on the recomputed, detached output is applied with its component's update. The
    reported loss L_k of step t is head k's loss at batch t's forward.

    At the end of ``total_steps`` steps, and after every ``flush_every`` steps, the pipeline drains:
    the batches in flight run their backwards in pipeline order (no new forwards), so a checkpoint
    written there holds no batch in flight. ``track_versions``: record, per component, each batch's
    (weight version at its forward, at its backward) in :attr:`versions` (tests, Fig. 3).
    """

    def __init__(self, net: ComponentNet, strategy: Hogwild, *, total_steps: int | None = None, flush_every: int = 0,
                 track_versions: bool = False, **options) -> None:
        if not isinstance(strategy, Hogwild):
            raise ValueError(f"HogwildEngine runs the paper's Hogwild() (hogwild); got {strategy!r}; "
                             f"the stashing variant HogwildStashed() runs on StaleEngine")
        if options.get("split_backward"):
            raise ValueError("HogwildEngine recomputes each backward in one pass; leave split_backward unset")
        _validate_flush_every(flush_every)
        super().__init__(net, strategy, **options)
        K = self.num_components
        self.delays = mismatch(K)
        self.total_steps = total_steps
        self.flush_every = flush_every
        self.updates = [0] * K  # weight version of each component
        self.inputs: list[dict[int, tuple]] = [{} for _ in range(K)]  # batch -> (stored input, targets, forward version)
        self.grads: list[dict[int, torch.Tensor]] = [{} for _ in range(K)]  # batch -> output gradient from above
        self.versions: list[dict[int, tuple[int, int]]] | None = [{} for _ in range(K)] if track_versions else None

    def _rng(self, k: int, batch: int):
        # The same dropout masks in a batch's forward and its recomputed backward (seeded by batch and component).
        seed = self.options.rng_seed if self.options.rng_seed is not None else 0
        return _seeded(hash((seed, batch, k, 0x406)) & 0x7FFF_FFFF_FFFF_FFFF, self.device if self.device.type == "cuda" else None)

    def _buffers(self, k: int) -> list[torch.Tensor]:
        w = self.workers[k]
        return [b for m in (w.block, w.head) if m is not None for b in m.buffers()]

    def step(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        """The forwards of batch t, then each component's backward of batch t - D_k (see the class docstring)."""
        if not self._checked:
            self._check(x)
        t = self.step_count
        K = self.num_components
        records: list[ActionRecord] = []
        losses: list[torch.Tensor | None] = [None] * K
        a = x
        for k, w in enumerate(self.workers):
            start = w.clock.now()
            inp = a.detach()
            self.inputs[k][t] = (inp, y, self.updates[k])
            if k < K - 1:
                with torch.no_grad(), self._rng(k, t):
                    a = w.block(inp)
                    if w.head is not None:
                        losses[k] = self.options.loss_fn(w.head(a), y).detach()
                records.append(ActionRecord(k, S.Forward(), start, w.clock.now()))
            else:
                records.append(self._backward(k, t, forward_loss=losses))
        for k in range(K - 2, -1, -1):
            if t - self.delays[k] >= 0:
                records.append(self._backward(k, t - self.delays[k]))
        self.step_count += 1
        if self.step_count == self.total_steps or (self.flush_every and self.step_count % self.flush_every == 0):
            records.extend(self.flush())
        return StepResult(step=t, losses=Losses.of(losses), records=records)

    def _backward(self, k: int, s: int, forward_loss: list | None = None) -> ActionRecord:
        """Component k's backward of batch s at its current weights, on the input stored at s's forward; then its update."""
        w = self.workers[k]
        start = w.clock.now()
        inp, y, v_forward = self.inputs[k].pop(s)
        top = k == self.num_components - 1
        grad_in = inp.is_floating_point() and k > 0
        inp = inp.detach().requires_grad_(grad_in)
        saved = None if top else [b.clone() for b in self._buffers(k)]  # the forward moved them already
        with self._rng(k, s):
            out = w.block(inp)
            if top:
                loss = self.options.loss_fn(w.head(out), y)
                loss.backward()
                forward_loss[k] = loss.detach()
            else:
                torch.autograd.backward(out, self.grads[k].pop(s))
                if w.head is not None:
                    self.options.loss_fn(w.head(out.detach()), y).backward()  # the head watches
        if saved is not None:
            with torch.no_grad():
                for b, v in zip(self._buffers(k), saved):
                    b.copy_(v)
        if grad_in:
            self.grads[k - 1][s] = inp.grad
        if self.versions is not None:
            self.versions[k][s] = (v_forward, self.updates[k])
        w.optimizer.step()
        w.optimizer.zero_grad(set_to_none=True)
        if w.lr_scheduler is not None:
            w.lr_scheduler.step()
        self.updates[k] += 1
        return ActionRecord(k, S.Update(), start, w.clock.now())

    def flush(self) -> list[ActionRecord]:
        """The pipeline drains: the batches in flight run their backwards, top-down slot by slot, in batch order."""
        records = []
        while any(self.inputs):
            for k in range(self.num_components - 1, -1, -1):
                if self.inputs[k]:
                    s = min(self.inputs[k])  # each component's updates stay in batch order
                    if k == self.num_components - 1 or s in self.grads[k]:
                        records.append(self._backward(k, s, forward_loss=[None] * self.num_components))
        return records

    def predicted_time(self, records, *, latency_s: float = 0.0):
        """The pipeline never waits: K devices need the busiest component's time."""
        return no_wait_makespan(records, self.num_components)

    def component_state(self, k: int) -> dict:
        state = super().component_state(k)
        state["hogwild"] = {"inputs": dict(self.inputs[k]), "grads": dict(self.grads[k]), "updates": self.updates[k]}
        return state

    def load_component_state(self, k: int, state: dict) -> None:
        part = strategy_state(state, k, key="hogwild", holds="batches in flight", strategy="hogwild")
        super().load_component_state(k, state)
        self.inputs[k] = dict(part["inputs"])
        self.grads[k] = dict(part["grads"])
        self.updates[k] = int(part["updates"])
