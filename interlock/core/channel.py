"""What a worker needs of a transport: the protocol the runtimes' transports implement.

Defined here, in the core, so the worker depends on no runtime: the runtimes
(:mod:`interlock.runtime.transport`) implement it in one process or over ``torch.distributed``.
"""

from __future__ import annotations

from typing import Protocol

import torch

__all__ = ["Transport"]


class Transport(Protocol):
    """Messages between components, FIFO per (src, dst) channel, each carrying a tag."""

    def send(self, tensor: torch.Tensor, *, src: int, dst: int, tag: tuple) -> None:
        """Send ``tensor`` from component ``src`` to ``dst``; must not block on the receiver."""

    def recv(self, *, src: int, dst: int, tag: tuple) -> torch.Tensor:
        """Receive the next tensor on channel (src, dst); it must carry ``tag``."""

    def post(self, *, src: int, dst: int, tag: tuple) -> None:
        """Optionally start the next receive of ``tag`` on (src, dst) ahead of :meth:`recv` (may do nothing)."""
