"""The interlocking paper's Hogwild (sec. 2, Fig. 3): stale end-to-end gradients without weight stashing.

A batch's backward on a component uses the weights the component holds when the backward
reaches it; :class:`HogwildPolicy` says exactly what it computes and :func:`hogwild_timeline`
gives the pipeline it follows. One process only (the local runtime). The stashing variant
(PipeDream's) is :mod:`interlock.engine.policies.stashed`.
"""

from __future__ import annotations

import torch

from ...core import schedule as S
from ...core.strategies import Hogwild, mismatch
from ...core.worker import ActionRecord, _seeded
from ..options import Losses, StepResult
from ..specs import StrategySpec, register_strategy
from .base import Policy
from .replay import no_wait_makespan
from .stashed import check_flush_every, drains_at

__all__ = ["HogwildPolicy", "hogwild_timeline", "hogwild_versions"]


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


class HogwildPolicy(Policy):
    """The paper's :class:`~interlock.core.strategies.Hogwild`: stale gradients without weight stashing.

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

    honours_precision = False  # (its passes run outside the worker)

    has_state = True
    holds = "batches in flight"
    uses_channel = False  # the policy runs the pipeline's forwards and backwards itself

    def check(self) -> None:
        check_flush_every(self.engine.flush_every)
        if self.engine.options.split_backward:
            raise ValueError("hogwild recomputes each backward in one pass; leave split_backward unset")

    def setup(self) -> None:
        e = self.engine
        K = e.num_components
        self.options = e.options
        self.device = e.device
        self.workers = e.workers
        self.num_components = K
        self.delays = mismatch(K)
        self.updates = [0] * K  # weight version of each component
        self.inputs: list[dict[int, tuple]] = [{} for _ in range(K)]  # batch -> (stored input, targets, forward version)
        self.grads: list[dict[int, torch.Tensor]] = [{} for _ in range(K)]  # batch -> output gradient from above
        self.versions: list[dict[int, tuple[int, int]]] | None = None

    def track_versions(self) -> None:
        """Record, per component, each batch's (weight version at its forward, at its backward) in :attr:`versions`."""
        self.versions = [{} for _ in range(self.num_components)]

    def _rng(self, k: int, batch: int):
        # The same dropout masks in a batch's forward and its recomputed backward (seeded by batch and component).
        seed = self.options.rng_seed if self.options.rng_seed is not None else 0
        return _seeded(hash((seed, batch, k, 0x406)) & 0x7FFF_FFFF_FFFF_FFFF, self.device if self.device.type == "cuda" else None)

    def _buffers(self, k: int) -> list[torch.Tensor]:
        w = self.workers[k]
        return [b for m in (w.block, w.head) if m is not None for b in m.buffers()]

    def step(self, x: torch.Tensor, y: torch.Tensor, step: int) -> StepResult:
        """The forwards of batch t, then each component's backward of batch t - D_k (see the class docstring)."""
        t = step
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
            if t - self.delays[k] in self.inputs[k]:  # (after a drain the pipeline refills: no backward of a drained batch)
                records.append(self._backward(k, t - self.delays[k]))
        if drains_at(self.engine, t + 1):
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
        w.step_optimizer()
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

    def state(self, k: int) -> dict:
        return {"inputs": dict(self.inputs[k]), "grads": dict(self.grads[k]), "updates": self.updates[k]}

    def load_state(self, k: int, part: dict) -> None:
        self.inputs[k] = dict(part["inputs"])
        self.grads[k] = dict(part["grads"])
        self.updates[k] = int(part["updates"])


register_strategy(StrategySpec(
    "hogwild", Hogwild, HogwildPolicy, lambda m, **_: Hogwild(), aliases=("stale",), runtimes=("local",),
    summary="the interlocking paper's Hogwild (Fig. 3): stale gradients without weight stashing", example=Hogwild))
