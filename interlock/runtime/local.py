"""The local runtime: every component in this process, over an in-memory transport.

Exact and cheap: it computes what K devices would compute, in one process. The workers are
stepped cooperatively: each runs its actions until it waits for a message, then the next one
runs. The numbers do not depend on that interleaving (each channel is FIFO and each worker's
actions run in its schedule's order), which is why the ranks runtime running the same workers
gives the same parameters.
"""

from __future__ import annotations

import torch

from ..core.schedule import Action
from ..network.net import ComponentNet
from ..network.ties import check_engine_supports_ties, local_sum, set_grads, sum_in_order, tie_groups
from .transport import InMemoryTransport

__all__ = ["LocalRuntime"]


class LocalRuntime:
    """Every component in this process; ``channel`` carries the messages between them."""

    name = "local"
    is_main = True  # this process reports and writes run-level files
    rank = None
    epoch_s = 0.0  # records are on the host clock as they are

    def __init__(self) -> None:
        self.channel = InMemoryTransport()
        self.transport = self.channel  # (the ranks runtime keeps evaluation on a transport of its own)
        self._global_clip = False  # connect_global_clip: updates wait until every component is at its update

    # -- placing the network --------------------------------------------------------------

    def place(self, net: ComponentNet, *, sums_ties: bool, engine_name: str, sample_input=None) -> list[int]:
        """Keep every component here; the components this process holds (all of them)."""
        if not sums_ties:
            check_engine_supports_ties(net, engine_name)
        if sample_input is not None:
            net.check(sample_input)  # a shape misfit fails before anything is built
        self.net = net
        self.num_components = net.num_components
        self.device = next((p.device for p in net.parameters()), torch.device("cpu"))
        self._ties = tie_groups(net)
        # Components that hold a copy of a tied tensor update only once every copy's gradient is
        # complete; the first of them to update sums the gradients (interlock.network.ties).
        self._tied_with = {k: sorted({j for g in self._ties if k in g.components for j in g.components})
                           for k in range(net.num_components)}
        return list(range(net.num_components))

    def connect(self, workers: dict) -> None:
        """Hook the tied components' updates to the gradient sum."""
        self.workers = workers
        self._ties_summed = None  # the step whose tied gradients were summed
        for k, w in workers.items():
            if self._tied_with.get(k):
                w.before_update = self._sum_ties

    def connect_global_clip(self, workers: dict) -> None:
        """Global clipping: every component's update waits until all are at their update (their gradients are
        complete); the first to update sums the squared norms of all, once per step."""
        self._global_clip = True
        self._clip_sum: tuple | None = None  # (step, sum of squared norms)
        for w in workers.values():
            w.sum_squares = self._sum_squares

    def _sum_squares(self, _mine: torch.Tensor) -> torch.Tensor:
        step = self._step_of(next(iter(self.workers)))
        if self._clip_sum is None or self._clip_sum[0] != step:
            parts = [w.grad_squares() for w in self.workers.values()]
            self._clip_sum = (step, sum(p.to(parts[0].device) for p in parts))
        return self._clip_sum[1]

    # -- running schedules ------------------------------------------------------------------

    def run(self, workers: dict) -> None:
        """Run every worker's begun step to its end, cooperatively (a deadlock is a RuntimeError)."""
        order = list(workers.items())
        pcs = self._pcs = {k: 0 for k, _ in order}
        remaining = sum(len(w.schedule) for _, w in order)
        while remaining:
            progressed = False
            for k, w in order:
                sched = w.schedule
                while pcs[k] < len(sched) and self._ready(k, sched[pcs[k]]):
                    w.run(sched[pcs[k]])
                    pcs[k] += 1
                    remaining -= 1
                    progressed = True
            if not progressed:
                waiting = {k + 1: w.schedule[pcs[k]] for k, w in order if pcs[k] < len(w.schedule)}
                raise RuntimeError(f"schedules deadlocked; components waiting: {waiting}")

    def _step_of(self, k: int):
        st = self.workers[k]._state
        return None if st is None else st.step

    def _sum_ties(self) -> None:
        step = self._step_of(next(iter(self.workers)))
        if self._ties_summed == step:
            return
        for g in self._ties:
            total = sum_in_order([local_sum(g.local(k)) for k in g.components])
            for k in g.components:
                set_grads(g.local(k), total)
        self._ties_summed = step

    def _ready(self, k: int, action: Action) -> bool:
        if action.kind == "Update" and self._global_clip:
            pcs, ws = self._pcs, self.workers
            if not all(pcs[j] < len(ws[j].schedule) and ws[j].schedule[pcs[j]].kind == "Update" or pcs[j] >= len(ws[j].schedule)
                       for j in ws):
                return False
        if action.kind == "Update" and self._tied_with.get(k) and self._ties_summed != self._step_of(k):
            # Every component holding a copy must have finished its backward passes (be at its update).
            pcs, ws = self._pcs, self.workers
            return all(ws[j].schedule[pcs[j]].kind == "Update" for j in self._tied_with[k] if pcs[j] < len(ws[j].schedule))
        peer = action.recv_from(k)
        if peer is not None:
            return self.channel.ready(src=peer, dst=k)
        return True

    def records(self, records: list) -> list:
        return records

    # -- collectives (one process: the identity) ------------------------------------------------

    def gather_losses(self, losses: list[float]) -> list[float]:
        return list(losses)

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def log_sum(self, table: torch.Tensor) -> torch.Tensor:
        return table

    def barrier(self) -> None:
        pass

    @torch.no_grad()
    def heads_forward(self, x: torch.Tensor) -> list[torch.Tensor | None]:
        """Every head's prediction (modules in whatever mode the caller set)."""
        return self.net.heads_forward(x)

    def check_local(self, k: int) -> None:
        if not 0 <= k < self.num_components:
            raise ValueError(f"component index {k} is out of range: the network has {self.num_components} components")

    def close(self, *, wait: bool = True) -> None:
        pass
