"""Transports: how activations and gradient streams move between components.

A transport delivers tensors between components in FIFO order per (src, dst) channel,
and checks that what arrives carries the tag the receiver's schedule expects: a
mismatch means two schedules disagree, which is a bug worth a loud error.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

import torch

__all__ = ["Transport", "InMemoryTransport", "TransportError"]


class TransportError(RuntimeError):
    """A message was missing or did not match what the receiving schedule expected."""


class Transport(Protocol):
    def send(self, tensor: torch.Tensor, *, src: int, dst: int, tag: tuple) -> None:
        """Send ``tensor`` from component ``src`` to ``dst``; must not block on the receiver."""

    def recv(self, *, src: int, dst: int, tag: tuple) -> torch.Tensor:
        """Receive the next tensor on channel (src, dst); it must carry ``tag``."""


class InMemoryTransport:
    """All components in one process: a queue per channel, tensors passed by reference.

    Tensors are sent detached (they are boundary activations or gradients, never part
    of another component's graph), so passing references is safe and free.
    """

    def __init__(self) -> None:
        self._queues: dict[tuple[int, int], deque[tuple[tuple, torch.Tensor]]] = {}
        self.messages_sent = 0

    def send(self, tensor: torch.Tensor, *, src: int, dst: int, tag: tuple) -> None:
        self._queues.setdefault((src, dst), deque()).append((tag, tensor.detach()))
        self.messages_sent += 1

    def ready(self, *, src: int, dst: int) -> bool:
        """Whether a message is waiting on channel (src, dst) (the simulated engine polls this)."""
        return bool(self._queues.get((src, dst)))

    def recv(self, *, src: int, dst: int, tag: tuple) -> torch.Tensor:
        queue = self._queues.get((src, dst))
        if not queue:
            raise TransportError(f"component {dst + 1} expected {tag} from component {src + 1}, but nothing was sent")
        got, tensor = queue.popleft()
        if got != tag:
            raise TransportError(f"component {dst + 1} expected {tag} from component {src + 1} but received {got}")
        return tensor

    def pending(self) -> int:
        """Messages sent but not received (zero after a complete step)."""
        return sum(len(q) for q in self._queues.values())
