"""Action times that are right on every device: host clock on the CPU, CUDA events on a GPU.

On a GPU, kernels run asynchronously: ``time.perf_counter`` around an action measures how
long the host took to *launch* it, not how long the GPU ran it. A :class:`DeviceClock` instead
records a CUDA event on the current stream at each mark; the marks become seconds (on the
``time.perf_counter`` scale, so they line up with the host clock and across ranks' epochs)
only when :func:`resolve` is called, which waits for the newest event once. The training
program resolves each log window's records there (it syncs once per log row anyway), so
timing adds no synchronisation to a step.

On the CPU the clock is the host clock and marks are plain floats: nothing changes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch

__all__ = ["HostClock", "DeviceClock", "Mark", "clock_for", "resolve", "settle"]


class HostClock:
    """``time.perf_counter`` seconds."""

    def now(self) -> float:
        return time.perf_counter()


@dataclass(frozen=True)
class Mark:
    """A point in time on a device stream: ``event`` relative to the clock's anchor, minus ``offset`` seconds."""

    clock: "DeviceClock"
    event: Any
    offset: float = 0.0

    def __sub__(self, other: float) -> "Mark":  # rebasing on an epoch: r.start_s - epoch_s
        return replace(self, offset=self.offset + float(other))

    def seconds(self) -> float:
        return self.clock.seconds(self) - self.offset


class DeviceClock:
    """Marks are CUDA events on ``device``'s current stream (``event_factory`` makes them; tests pass a fake).

    The anchor pairs one event with the host time at which it completed, so a mark's seconds
    are ``anchor_host + anchor.elapsed_time(mark) / 1000``.
    """

    def __init__(self, device: torch.device, *, event_factory: Callable[[], Any] | None = None,
                 synchronize: Callable[[], None] | None = None) -> None:
        self.device = device
        self._make = event_factory or (lambda: torch.cuda.Event(enable_timing=True))
        sync = synchronize or (lambda: torch.cuda.synchronize(device))
        sync()
        self._anchor = self._make()
        self._anchor.record()
        self._anchor.synchronize()
        self._anchor_host = time.perf_counter()

    def now(self) -> Mark:
        event = self._make()
        event.record()
        return Mark(self, event)

    def seconds(self, mark: Mark) -> float:
        mark.event.synchronize()
        return self._anchor_host + self._anchor.elapsed_time(mark.event) / 1000.0


def clock_for(device: torch.device | None) -> HostClock | DeviceClock:
    """The clock that times actions computing on ``device``."""
    if device is not None and device.type == "cuda":
        return DeviceClock(device)
    return HostClock()


def _seconds(t) -> float:
    return t.seconds() if isinstance(t, Mark) else t


def resolve(records: list) -> list:
    """``records`` (``ActionRecord``s) with device marks turned into seconds; float ones come back as they are."""
    if not any(isinstance(r.start_s, Mark) or isinstance(r.end_s, Mark) for r in records):
        return records
    return [replace(r, start_s=_seconds(r.start_s), end_s=_seconds(r.end_s)) for r in records]


def settle(device: torch.device | str | None) -> None:
    """Wait until ``device`` has run everything queued on it (a CUDA synchronisation; nothing on the CPU).

    The training program calls it where a log row, an evaluation or a checkpoint needs the
    results anyway, and counts the wait as training time: a step returns on the host once its
    kernels are launched, so without it a GPU's step time would measure launches.
    """
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
