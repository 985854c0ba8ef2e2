"""SEDONA's weight memory: snapshots of the network at different stages of training.

A meta-gradient taken only at the weights of one training run's current step would tune
(alpha, beta) for that stage alone; the memory lets every outer step start from a snapshot drawn
uniformly from N. Pretraining (alpha = beta = 0) fills it, keeping the N best snapshots by
validation accuracy (``evict="worst"``). During the search an outer step *takes* a snapshot
(removing it), runs from it, and *puts* the result back, evicting the oldest entry if the memory
is full (the authors' code; with take-then-put the size stays N, so in steady state nothing is
evicted and the memory holds N snapshots that each advance one step when drawn).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..checks import count

__all__ = ["Snapshot", "WeightMemory"]


@dataclass
class Snapshot:
    """The network's state at training step ``step`` (the inner LR schedule's position)."""

    step: int
    params: dict[str, torch.Tensor]  # name -> tensor, in the search space's parameter order
    buffers: dict[str, torch.Tensor]  # BatchNorm running statistics, ...
    momentum: dict[str, torch.Tensor] | None = None  # SGD momentum buffers (None before the first step)
    val_error: float = 1.0  # top-1 error on the validation batches it was last scored on
    order: int = field(default=-1)  # insertion order, set by the memory: smaller is older

    def to_dict(self) -> dict:
        return {"step": self.step, "params": self.params, "buffers": self.buffers, "momentum": self.momentum,
                "val_error": self.val_error, "order": self.order}


class WeightMemory:
    """At most ``size`` snapshots; ``take`` draws one uniformly (and removes it), ``put`` adds one."""

    def __init__(self, size: int) -> None:
        self.size = count(size, f"memory size={size!r}: use N >= 1 snapshots")
        self.entries: list[Snapshot] = []
        self._counter = 0

    def __len__(self) -> int:
        return len(self.entries)

    def put(self, snap: Snapshot, *, evict: str = "oldest") -> Snapshot | None:
        """Add ``snap``; when full, first evict the ``oldest`` entry or the ``worst`` (highest val_error).

        During pretraining a snapshot worse than every entry of a full memory is not added
        (evicting the worst would evict it); returns the snapshot left out, or None.
        """
        if evict not in ("oldest", "worst"):
            raise ValueError(f"evict={evict!r}: use oldest or worst")
        snap.order = self._counter
        self._counter += 1
        if len(self.entries) < self.size:
            self.entries.append(snap)
            return None
        if evict == "oldest":
            victim = min(self.entries, key=lambda s: s.order)
        else:
            victim = max(self.entries, key=lambda s: (s.val_error, -s.order))  # of equal errors, the newest goes
            if snap.val_error >= victim.val_error:
                return snap
        self.entries.remove(victim)
        self.entries.append(snap)
        return victim

    def take(self, generator: torch.Generator) -> Snapshot:
        """Remove and return a snapshot drawn uniformly with ``generator``."""
        if not self.entries:
            raise ValueError("the weight memory is empty: pretrain first (search.pretrain_steps >= search.snapshot_every)")
        i = int(torch.randint(len(self.entries), (1,), generator=generator))
        return self.entries.pop(i)

    def state_dict(self) -> dict:
        return {"size": self.size, "counter": self._counter, "entries": [s.to_dict() for s in self.entries]}

    def load_state_dict(self, state: dict) -> None:
        self.size, self._counter = int(state["size"]), int(state["counter"])
        self.entries = [Snapshot(**e) for e in state["entries"]]
