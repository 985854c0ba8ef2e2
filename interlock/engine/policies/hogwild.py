"""The interlocking paper's Hogwild (sec. 2, Fig. 3): stale end-to-end gradients without weight stashing.

A batch's backward on a component uses the weights the component holds when the backward
reaches it; :class:`HogwildPolicy` says exactly what it computes (as the worker's actions: a
forward that keeps only its input, a held step, a recomputation) and :func:`hogwild_timeline`
gives the pipeline it follows. One process only (the local runtime). The stashing variant
(PipeDream's) is :mod:`interlock.engine.policies.stashed`.
"""

from __future__ import annotations

import torch

from ...core import schedule as S
from ...core.strategies import Hogwild, mismatch
from ...core.worker import ActionRecord
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
    forward of batch t with the weights it holds, keeping no autograd graph (a real pipeline that
    updates weights in place cannot backpropagate through a graph whose weights have changed), only
    its input a_{k-1}^t (``Forward(keep="input")``), and holds the step (the worker's held steps).
    Then component k resumes batch s = t - D_k: it recomputes its block on the stored input
    a_{k-1}^s with the weights it holds *now* (``Recompute``: those after the updates of batches < s;
    the forward of batch s used those after batches < s - D_k), backpropagates the output gradient
    g_k^s that component k+1 computed the same way at its own backward of s, sends
    g_{k-1}^s = d<g_k^s, f_k(a_{k-1}^s; theta_k^now)>/d a_{k-1} down, and applies its gradient
    d<g_k^s, f_k(a_{k-1}^s; theta_k^now)>/d theta_k at once (updates stay in batch order). The top
    component (D_K = 0) runs the loss and backward of batch t right after its forward. So the
    mismatch the paper's Fig. 3 shows is exactly here: activations from older weights (the stored
    input, and every lower component's forward), gradients at current ones.

    Every pass is one of the worker's actions, over the runtime's channel: a gradient sent down is
    received at once into the held step of the component below (so it is part of that component's
    checkpoint), which takes it up D_k - D_{k+1} = 2 steps later.

    The recomputation is how this engine obtains the backward at current weights; a pipeline that
    keeps a component's inner activations from the forward instead would differ inside a component
    with more than one layer (not for one linear layer: both give the stored input times the
    gradient). Dropout draws the same masks in the forward and its recomputation; BatchNorm's
    running statistics move at the forward only. Auxiliary heads only watch (end-to-end): head k's
    loss gradient on the recomputed, detached output is applied with its component's update. The
    reported loss L_k of step t is head k's loss at batch t's forward (``HeadLoss(grad=False)``).

    At the end of ``total_steps`` steps, and after every ``flush_every`` steps, the pipeline drains:
    the batches in flight run their backwards in pipeline order (no new forwards), so a checkpoint
    written there holds no batch in flight. ``track_versions``: record, per component, each batch's
    (weight version at its forward, at its backward) in :attr:`versions` (tests, Fig. 3).
    """

    honours_precision = False
    fp32_only_because = ("holds batches whose gradients arrive steps before their update (fp16's loss scale may move "
                         "in between; bf16 and compile are unchecked on it)")

    has_state = True
    holds = "batches in flight"

    def check(self) -> None:
        check_flush_every(self.engine.flush_every)
        if self.engine.options.split_backward:
            raise ValueError("hogwild recomputes each backward in one pass; leave split_backward unset")
        if self.engine.options.microbatches != 1:
            raise ValueError("hogwild pipelines whole batches; leave microbatches at 1")

    def setup(self) -> None:
        e = self.engine
        K = e.num_components
        self.workers = e.workers
        self.num_components = K
        self.delays = mismatch(K)
        self.updates = [0] * K  # weight version of each component
        self.at_forward: list[dict[int, int]] = [{} for _ in range(K)]  # batch -> weight version at its forward
        self.versions: list[dict[int, tuple[int, int]]] | None = None

    def track_versions(self) -> None:
        """Record, per component, each batch's (weight version at its forward, at its backward) in :attr:`versions`."""
        self.versions = [{} for _ in range(self.num_components)]

    def in_flight(self, k: int) -> dict[int, torch.Tensor | None]:
        """Component k's batches in flight: batch -> the output gradient that has come down for it (None until then)."""
        w = self.workers[k]
        return {s: w.held_streams(s).get(self.num_components - 1) for s in w.held_steps}

    def _run(self, w, actions) -> list[ActionRecord]:
        for a in actions:
            w.run(a)
        return w.records

    def step(self, x: torch.Tensor, y: torch.Tensor, step: int) -> StepResult:
        """The forwards of batch t, then each component's backward of batch t - D_k (see the class docstring)."""
        t = step
        K = self.num_components
        records: list[ActionRecord] = []
        losses: list[torch.Tensor | None] = [None] * K
        for k, w in enumerate(self.workers):
            top = k == K - 1
            w.begin_step(x if k == 0 else None, y, t, driven=True)
            acts = ([S.RecvActivation()] if k > 0 else []) + [S.Forward(keep="graph" if top else "input")]
            if not top:
                acts.append(S.SendActivation())
            if w.head is not None:
                acts.append(S.HeadLoss(stream=top, grad=top))  # below the top: the loss at the forward, reported
            if top:
                records += self._run(w, acts + self._backward_actions(k))
                losses[k] = w.end_step()
                records += self._updated(k, t, self.updates[k])
            else:
                records += self._run(w, acts)
                losses[k] = w.hold()
                self.at_forward[k][t] = self.updates[k]
        for k in range(K - 2, -1, -1):
            if t - self.delays[k] in self.workers[k].held_steps:  # (after a drain the pipeline refills)
                records += self._backward(k, t - self.delays[k])
        if drains_at(self.engine, t + 1):
            records.extend(self.flush())
        return StepResult(step=t, losses=Losses.of(losses), records=records)

    def _backward_actions(self, k: int) -> list[S.Action]:
        """The end-to-end loss's backward through component k, its input gradient down, the update."""
        j = self.num_components - 1
        grad = [S.FullGrad(loss=j, last=True), S.SendStream(loss=j, hops_left=k - 1)] if k > 0 else [
            S.WeightGrad(losses=(j,), last=True)]
        return grad + [S.Update()]

    def _backward(self, k: int, s: int) -> list[ActionRecord]:
        """Component k's backward of batch s at its current weights, on the input stored at s's forward; then its update."""
        w = self.workers[k]
        w.resume(s)
        acts = [S.Recompute()] + ([S.HeadLoss(stream=False)] if w.head is not None else []) + self._backward_actions(k)
        records = list(self._run(w, acts))
        w.end_step()
        return records + self._updated(k, s, self.at_forward[k].pop(s))

    def _updated(self, k: int, s: int, v_forward: int) -> list[ActionRecord]:
        """After component k's update of batch s: its version, and the gradient it sent down received into the
        held step of the component below."""
        if self.versions is not None:
            self.versions[k][s] = (v_forward, self.updates[k])
        self.updates[k] += 1
        if k == 0:
            return []
        below = self.workers[k - 1]
        below.resume(s)
        below.run(S.RecvStream(loss=self.num_components - 1, hops_left=k - 1))
        below.hold()
        return list(below.records)

    def flush(self) -> list[ActionRecord]:
        """The pipeline drains: the batches in flight run their backwards, top-down slot by slot, in batch order."""
        records = []
        while any(w.held_steps for w in self.workers):
            for k in range(self.num_components - 2, -1, -1):
                held = self.workers[k].held_steps
                if held and held[0] not in self.workers[k + 1].held_steps:  # its gradient has come down
                    records += self._backward(k, held[0])  # each component's updates stay in batch order
        return records

    def predicted_time(self, records, *, latency_s: float = 0.0):
        """The pipeline never waits: K devices need the busiest component's time."""
        return no_wait_makespan(records, self.num_components)

    def state(self, k: int) -> dict:
        return {"held": self.workers[k].held_state(), "at_forward": dict(self.at_forward[k]), "updates": self.updates[k]}

    def load_state(self, k: int, part: dict) -> None:
        self.workers[k].load_held_state(part["held"])
        self.at_forward[k] = {int(s): int(v) for s, v in part["at_forward"].items()}
        self.updates[k] = int(part["updates"])


register_strategy(StrategySpec(
    "hogwild", Hogwild, HogwildPolicy, lambda m, **_: Hogwild(), aliases=("stale",), runtimes=("local",),
    summary="the interlocking paper's Hogwild (Fig. 3): stale gradients without weight stashing", example=Hogwild))
