"""The replay buffer of asynchronous DGL: what component k wrote, for component k+1 to read.

Policy (DGL's Alg. 2 and its reference code's ``priority_lifo``):

- An entry is one batch: the activation component k produced (detached) and its labels.
- **Write**: into a free slot; when all M slots are full, over the *oldest written* entry,
  however often it was read.
- **Read**: the entry read the fewest times so far; among those, the most recently written
  (last in, first out). The read counts as one reuse of that entry. Reads never remove an
  entry, so a buffer that has held something is never empty again.

The tie-break is exact because every write gets a fresh sequence number: "most recent" is
the largest one. A fresh write (0 reuses) is therefore always read next; once every entry
was read r times, the newest is read an (r+1)-th time first.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...checks import count

__all__ = ["ReplayBuffer"]


@dataclass
class _Entry:
    activation: torch.Tensor
    label: torch.Tensor
    written: int  # write sequence number: larger is newer
    reuses: int = 0  # how many reads took this entry


class ReplayBuffer:
    """Holds at most ``capacity`` (M) batches; see the module docstring for the policy."""

    def __init__(self, capacity: int) -> None:
        count(capacity, f"a replay buffer holds an integer number M >= 1 of batches; got M={capacity!r}")
        self.capacity = capacity
        self._entries: list[_Entry] = []
        self._writes = 0  # sequence number of the next write
        self.rereads = 0  # reads that took an entry read before (the least reused had been read already)
        self.most_reads = 0  # the most reads any one entry has had

    def __len__(self) -> int:
        return len(self._entries)

    def write(self, activation: torch.Tensor, label: torch.Tensor) -> None:
        entry = _Entry(activation, label, written=self._writes)
        self._writes += 1
        if len(self._entries) < self.capacity:
            self._entries.append(entry)
            return
        oldest = min(range(len(self._entries)), key=lambda i: self._entries[i].written)
        self._entries[oldest] = entry

    def read(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The least reused entry, the newest among equals; counts one reuse."""
        if not self._entries:
            raise LookupError("the replay buffer is empty: nothing was written into it yet")
        entry = min(self._entries, key=lambda e: (e.reuses, -e.written))
        self.rereads += entry.reuses > 0
        entry.reuses += 1
        self.most_reads = max(self.most_reads, entry.reuses)
        return entry.activation, entry.label

    def least_reuses(self) -> int:
        """Reads of the least read entry (what the next read would make one more of)."""
        return min(e.reuses for e in self._entries)

    def contents(self) -> list[tuple[int, int]]:
        """(write sequence number, reuses) of every entry, oldest first: what the tests check."""
        return [(e.written, e.reuses) for e in sorted(self._entries, key=lambda e: e.written)]

    def state_dict(self) -> dict:
        return {
            "capacity": self.capacity,
            "writes": self._writes,
            "rereads": self.rereads,
            "most_reads": self.most_reads,
            "entries": [(e.activation, e.label, e.written, e.reuses) for e in sorted(self._entries, key=lambda e: e.written)],
        }

    def load_state_dict(self, state: dict) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(
                f"the checkpoint's replay buffer holds M={state['capacity']} batches, this run's M={self.capacity}; "
                f"resume with replay.buffer_size={state['capacity']}"
            )
        self._writes = int(state["writes"])
        self.rereads = int(state.get("rereads", 0))  # (absent in checkpoints written before it was counted)
        self.most_reads = int(state.get("most_reads", 0))
        self._entries = [_Entry(a, y, written=int(w), reuses=int(r)) for a, y, w, r in state["entries"]]
