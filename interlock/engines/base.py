"""The interface every engine offers the training program (``interlock.training.loop``).

:class:`Engine` is the contract as a ``Protocol``; :class:`EngineBase` gives the parts that
most engines share a default (no extra counters, no prediction of K-device time, no extra
batches), so the training program calls every method directly and never probes an engine
for what it has.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from ..timemodel.clock import Makespan
from ..network.net import ComponentNet
from .common import StepResult

__all__ = ["Engine", "EngineBase"]


@runtime_checkable
class Engine(Protocol):
    """What ``interlock.training.loop`` needs from an engine, in one process or one per component."""

    net: ComponentNet
    step_count: int  # training steps taken (restored by load_component_state)
    device: torch.device  # where this process's components compute

    @property
    def num_components(self) -> int: ...

    @property
    def local_components(self) -> list[int]:
        """The components this process holds (all in one process; its own on a rank)."""

    @property
    def is_main(self) -> bool:
        """Whether this process reports and writes run-level files."""

    @property
    def optimizers(self) -> list[torch.optim.Optimizer | None]:
        """Indexed by component; None for components held by other processes."""

    @property
    def wants_more(self) -> bool:
        """Whether the run needs batches past its steps (async DGL until every quota is made)."""

    def step(self, x: torch.Tensor | None, y: torch.Tensor | None) -> StepResult: ...

    def gather_losses(self, losses: list[float]) -> list[float]: ...

    def log_sum(self, table: torch.Tensor) -> torch.Tensor:
        """A log row's (K, n) table summed over processes (each fills its own components' rows)."""

    def log_row(self, table: torch.Tensor, step: int, *, wait: bool) -> torch.Tensor | None:
        """The log row of ``step`` over processes; None while another process's part is still due (``wait``: wait for it)."""

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor: ...

    def barrier(self) -> None: ...

    def heads_forward(self, x: torch.Tensor | None) -> list[torch.Tensor | None]: ...

    def predicted_time(self, records: list) -> Makespan | None:
        """What K devices would need for these steps' measured actions; None where it cannot say."""

    def counters(self) -> dict:
        """Run-level counters for the log rows (e.g. async DGL's updates per component)."""

    def component_state(self, k: int) -> dict: ...

    def load_component_state(self, k: int, state: dict) -> None: ...

    def close(self, *, wait: bool = True) -> None: ...


class EngineBase:
    """Defaults of the optional parts of :class:`Engine`."""

    @property
    def wants_more(self) -> bool:
        return False

    def predicted_time(self, records: list) -> Makespan | None:
        return None

    def counters(self) -> dict:
        return {}

    def log_row(self, table, step: int, *, wait: bool):
        # Engines whose processes log in step: one log_sum (a collective on the distributed engine).
        return self.log_sum(table)
