"""An emulated slow link between processes: what users who outgrow one machine see.

:func:`slow_links` replaces ``torch.distributed.isend`` in this process by one that hands each
message to a *link* thread per destination, which holds it for ``latency_s + bytes /
bytes_per_s`` and only then starts the real send: a store-and-forward link that carries one
message at a time (a message queues behind the ones before it on the same link). The sender
does not wait (as with a NIC), the receiver sees the data late. Every ``isend`` goes through
it, interlock's transports and ``torch.distributed.pipelining``'s schedules alike (they build
their sends from ``torch.distributed.isend``), so all of them meet the same link.

Used by ``benchmarks/schedule.py --slow-link``; emulation only, never in training.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time

import torch
import torch.distributed as dist
import torch.distributed.distributed_c10d as c10d

__all__ = ["slow_links"]


class _Sent:
    """The Work of an emulated send: complete once the link has started the real send and that has completed."""

    def __init__(self) -> None:
        self._started = threading.Event()
        self._work = None
        self._error: BaseException | None = None

    def wait(self, timeout=None) -> bool:
        if not self._started.wait(None if timeout is None else timeout.total_seconds()):
            raise RuntimeError("an emulated slow link did not deliver the message in time")
        if self._error is not None:
            raise self._error
        return self._work.wait() if timeout is None else self._work.wait(timeout=timeout)

    def is_completed(self) -> bool:
        return self._started.is_set() and self._work is not None and self._work.is_completed()


class _Link(threading.Thread):
    def __init__(self, send, latency_s: float, bytes_per_s: float) -> None:
        super().__init__(daemon=True, name="slow-link")
        self._send, self._latency_s, self._bytes_per_s = send, latency_s, bytes_per_s
        self.messages: queue.Queue = queue.Queue()

    def run(self) -> None:
        while True:
            tensor, args, kwargs, sent = self.messages.get()
            nbytes = tensor.numel() * tensor.element_size()
            time.sleep(self._latency_s + (nbytes / self._bytes_per_s if self._bytes_per_s else 0.0))
            try:
                sent._work = self._send(tensor, *args, **kwargs)
            except BaseException as err:  # handed to whoever waits for it
                sent._error = err
            sent._started.set()


@contextlib.contextmanager
def slow_links(*, latency_s: float, bytes_per_s: float = 0.0):
    """Within the block, every ``isend`` of this process crosses an emulated link (see the module docstring).

    ``bytes_per_s`` 0 means unlimited bandwidth (latency only).
    """
    if not latency_s >= 0 or not bytes_per_s >= 0:
        raise ValueError(f"latency_s={latency_s!r}, bytes_per_s={bytes_per_s!r}: give non-negative numbers")
    real = c10d.isend
    links: dict[object, _Link] = {}
    lock = threading.Lock()

    def isend(tensor: torch.Tensor, dst=None, group=None, tag=0, group_dst=None):
        key = (dst, group_dst, id(group))
        with lock:
            link = links.get(key)
            if link is None:
                link = links[key] = _Link(real, latency_s, bytes_per_s)
                link.start()
        sent = _Sent()
        link.messages.put((tensor, (), {"dst": dst, "group": group, "tag": tag, "group_dst": group_dst}, sent))
        return sent

    c10d.isend = dist.isend = isend
    try:
        yield
    finally:
        c10d.isend = dist.isend = real
