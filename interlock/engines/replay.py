"""Asynchronous DGL with replay buffers (Belilovsky et al. 2020, Alg. 2), simulated in one process.

Each *iteration* draws one component j (``AsyncLocal.pmf``: uniform, the slow component's
weight divided by S; or 1, 2, ..., K in turn with ``schedule="round_robin"``). Component 1
reads a fresh batch; component j > 1 reads from the replay buffer B_{j-1}
(:mod:`interlock.engines.buffer`: overwrite the oldest, read the least reused, newest first).
The component runs its ordinary local-learning schedule (forward, head loss, update: the same
worker as ``Local()``), and (j < K) writes its detached output and the labels into B_j.

Quotas (the paper's fair-comparison rule): with ``total_steps`` = Q every component stops
updating once it has made Q updates (Q batches' worth, E epochs for an E-epoch run), and the
run ends when all have. Draws that cannot train are *skipped* (they cost nothing and change
nothing but the draw count):

- a component j > 1 whose input buffer is still empty (nothing was written below it yet), or
  whose every entry was read ``max_reuse`` times already (``replay.max_reuse`` r > 0; the
  reference code's ``--max-buffer-reuse``, whose default is no bound);
- a component that made its quota, when no component above it still trains (nobody needs
  its output). A finished component that someone above still needs keeps running *forward
  only*, in eval mode without autograd, and keeps writing its output into its buffer, as the
  reference code does: the components above keep getting fresh inputs. Component 1 then still
  reads fresh batches, so a run can read more than Q batches (``wants_more``).

A training *step* (``step(x, y)``) is one fresh batch: component 1's iteration on (x, y) and
every iteration drawn after it, up to the next draw of component 1 (which opens the next step)
or the end of the run. ``step_count`` therefore counts fresh batches, as in every engine.

With M = 1 and the round-robin schedule, step t runs components 1, 2, ..., K once each, every
component reading exactly what its neighbour wrote in this step: synchronous ``Local()``
training, bit for bit (tests/test_replay.py).

Checkpoints add to each component's file its update count, its output buffer (activations
included) and the draw state (the generator, counters), so a resumed run continues the same
draws on the same buffers: resumed equals uninterrupted.
"""

from __future__ import annotations

import math

import torch

from ..core import schedule as S
from ..timemodel.clock import Makespan
from ..network.net import ComponentNet
from ..core.strategies import AsyncLocal
from .buffer import ReplayBuffer
from .common import StepResult, strategy_state
from .simulated import SimulatedEngine

__all__ = ["ReplayEngine", "ComponentSampler", "no_wait_makespan"]


class ComponentSampler:
    """Which component runs each iteration: j ~ ``strategy.pmf(K)`` from a generator seeded with
    ``strategy.seed``, or 0, 1, ..., K-1 in turn (``schedule="round_robin"``). 0-based."""

    def __init__(self, strategy: AsyncLocal, num_components: int) -> None:
        self.num_components = num_components
        self.round_robin = strategy.schedule == "round_robin"
        self.pmf = torch.tensor(strategy.pmf(num_components), dtype=torch.float64)
        self._generator = torch.Generator().manual_seed(strategy.seed)
        self.draws = 0

    def draw(self) -> int:
        self.draws += 1
        if self.round_robin:
            return (self.draws - 1) % self.num_components
        return int(torch.multinomial(self.pmf, 1, generator=self._generator))

    def state_dict(self) -> dict:
        return {"generator": self._generator.get_state(), "draws": self.draws}

    def load_state_dict(self, state: dict) -> None:
        self._generator.set_state(state["generator"])
        self.draws = int(state["draws"])


class ReplayEngine(SimulatedEngine):
    """Train ``net`` with :class:`~interlock.core.strategies.AsyncLocal`; see the module docstring.

    ``total_steps``: the quota Q of updates per component (None: no quota, components never finish).
    Takes the other options of :class:`SimulatedEngine` (optimizer, loss_fn, lr_scheduler, ...).
    """

    def __init__(self, net: ComponentNet, strategy: AsyncLocal, *, total_steps: int | None = None, **options) -> None:
        if not isinstance(strategy, AsyncLocal):
            raise ValueError(f"ReplayEngine runs AsyncLocal(...) (async-local); got {strategy!r}")
        if total_steps is not None and (isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1):
            raise ValueError(f"total_steps={total_steps!r}: the quota of updates per component must be an integer >= 1 (or None)")
        super().__init__(net, strategy, **options)
        K = self.num_components
        self.quota = total_steps
        self.buffers = [ReplayBuffer(strategy.buffer_size) for _ in range(K - 1)]  # buffers[k] is B_{k+1}
        self.updates = [0] * K  # updates made by each component
        self.sampler = ComponentSampler(strategy, K)
        self.skipped = 0  # draws that could not train (see the module docstring)
        self._pending = False  # component 1's next iteration was drawn already (it opens the next step)

    # -- the schedule of draws ----------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """Every component made its quota."""
        return self.quota is not None and all(u >= self.quota for u in self.updates)

    @property
    def wants_more(self) -> bool:
        """More fresh batches are needed: some component has not made its quota yet."""
        return self.quota is not None and not self.finished

    def _done(self, k: int) -> bool:
        return self.quota is not None and self.updates[k] >= self.quota

    def step(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        """One fresh batch: component 1 on (x, y) and every iteration drawn until component 1's next draw."""
        if not self._checked:
            self._check(x)
        losses: list[list[torch.Tensor]] = [[] for _ in range(self.num_components)]
        records: list = []
        while not self._pending:  # only before the first batch: draws of starved components
            j = self.sampler.draw()
            if j == 0:
                break
            self._iterate(j, None, None, losses, records)
        self._pending = False
        self._iterate(0, x, y, losses, records)
        while not self.finished:
            j = self.sampler.draw()
            if j == 0:
                self._pending = True
                break
            self._iterate(j, None, None, losses, records)
        step = self.step_count
        self.step_count += 1
        return StepResult(step=step, losses=_means(losses), records=records, updated=[bool(l) for l in losses])

    def _iterate(self, j: int, x, y, losses, records) -> None:
        """Component j's iteration: read its input, train (or only forward once finished), write its output."""
        K = self.num_components
        done = self._done(j)
        if done and not any(not self._done(k) for k in range(j + 1, K)):
            self.skipped += 1  # finished, and nobody above needs its output
            return
        if j > 0:
            if not len(self.buffers[j - 1]):
                self.skipped += 1  # starved: nothing was written below yet
                return
            if self.strategy.max_reuse and self.buffers[j - 1].least_reuses() >= self.strategy.max_reuse:
                self.skipped += 1  # every entry read max_reuse times: the reference code's "buffer overuse"
                return
            x, y = self.buffers[j - 1].read()
        worker = self.workers[j]
        if done:
            out = self._forward_only(j, x)
        else:
            worker.begin_step(x if j == 0 else None, y, self.updates[j])
            if j > 0:
                self.transport.send(x, src=j - 1, dst=j, tag=S.ACTIVATION_TAG)
            for action in worker.schedule:
                worker.run(action)
            out = self.transport.recv(src=j, dst=j + 1, tag=S.ACTIVATION_TAG) if j < K - 1 else None
            loss = worker.end_step()
            if loss is not None:
                losses[j].append(loss)
            records.extend(worker.records)
            self.updates[j] += 1
        if j < K - 1:
            self.buffers[j].write(out, y)

    @torch.no_grad()
    def _forward_only(self, j: int, x: torch.Tensor) -> torch.Tensor:
        # A component past its quota: fixed weights, eval mode (BatchNorm's running statistics, no dropout).
        block = self.workers[j].block
        was_training = block.training
        block.eval()
        try:
            return block(self.workers[j]._to_device(x))
        finally:
            block.train(was_training)

    # -- reporting ------------------------------------------------------------------------------

    def counters(self) -> dict:
        """Run-level counters for the metrics rows: updates per component, draws, skipped draws."""
        row = {f"updates_{k + 1}": u for k, u in enumerate(self.updates)}
        row["draws"] = self.sampler.draws
        row["skipped_draws"] = self.skipped
        return row

    def predicted_time(self, records, *, latency_s: float = 0.0) -> Makespan:
        """K devices, each training its component at its own pace: the buffers decouple them, so the
        window takes as long as its busiest component (see :func:`no_wait_makespan`)."""
        return no_wait_makespan(records, self.num_components)

    # -- checkpoints ------------------------------------------------------------------------------

    def component_state(self, k: int) -> dict:
        state = super().component_state(k)
        state["replay"] = {
            "updates": self.updates[k],
            "buffer": self.buffers[k].state_dict() if k < self.num_components - 1 else None,
            # The draw state is the engine's, not the component's; every file holds a copy.
            "draws": {"sampler": self.sampler.state_dict(), "skipped": self.skipped, "pending": self._pending},
        }
        return state

    def load_component_state(self, k: int, state: dict) -> None:
        strategy_state(state, k, key="replay", holds="replay state", strategy="async-local")
        super().load_component_state(k, state)
        replay = state["replay"]
        self.updates[k] = int(replay["updates"])
        if k < self.num_components - 1:
            self.buffers[k].load_state_dict(replay["buffer"])
        draws = replay["draws"]
        self.sampler.load_state_dict(draws["sampler"])
        self.skipped, self._pending = int(draws["skipped"]), bool(draws["pending"])


def no_wait_makespan(records, num_components: int) -> Makespan:
    """The time K devices need when no component ever waits for another: the busiest one's time."""
    busy = [0.0] * num_components
    for r in records:
        busy[r.component] += r.duration_s
    span = max(busy, default=0.0)
    return Makespan(makespan_s=span, busy_s=tuple(busy), idle_s=tuple(span - b for b in busy), records=())


def _means(losses: list[list[torch.Tensor]]) -> list[float]:
    """Each component's mean loss over its updates in the step (NaN where it made none); one device sync."""
    flat = [l.float().reshape(()) for ls in losses for l in ls]
    if not flat:
        return [math.nan] * len(losses)
    values = iter(torch.stack([l.to(flat[0].device) for l in flat]).tolist())
    out = []
    for ls in losses:
        got = [next(values) for _ in ls]
        out.append(sum(got) / len(got) if got else math.nan)
    return out
