"""An emulated slow link between processes: what users who outgrow one machine see.

A :class:`SlowLink` is the link's model: each message is held ``latency_s + bytes / bytes_per_s``
before its real send starts. :class:`LinkSender` applies it: a *link* thread per destination rank
holds each message for that long and only then starts the real send, a store-and-forward link that
carries one message at a time (a message queues behind the ones before it on the same link). The
sender does not wait (as with a NIC); the receiver sees the data late.

Interlock's own transport applies the model where it sends
(``TorchDistributedTransport(link=...)`` or :meth:`~interlock.runtime.transport.TorchDistributedTransport.use_link`),
one message (header and payload) per hold, so nothing else in the process changes.
``torch.distributed.pipelining``'s schedules build their sends from ``torch.distributed.isend``
themselves and offer no hook; for them alone :func:`interlock._torch_compat.slow_isend_for_pipelining`
routes that function through the same link.

Used by ``benchmarks/schedule.py --slow-link``; emulation only, never in training.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..checks import number

__all__ = ["SlowLink", "LinkSender"]


@dataclass(frozen=True)
class SlowLink:
    """A link that holds each message ``latency_s + bytes / bytes_per_s`` (``bytes_per_s`` 0: unlimited bandwidth)."""

    latency_s: float
    bytes_per_s: float = 0.0

    def __post_init__(self) -> None:
        message = f"latency_s={self.latency_s!r}, bytes_per_s={self.bytes_per_s!r}: give non-negative numbers"
        number(self.latency_s, message, low=0)
        number(self.bytes_per_s, message, low=0)

    def hold_s(self, nbytes: int) -> float:
        """How long a message of ``nbytes`` waits on the link before its send starts."""
        return self.latency_s + (nbytes / self.bytes_per_s if self.bytes_per_s else 0.0)


class Sent:
    """The Work of one send on a link: complete once the link has started the real send and that has completed."""

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
    def __init__(self, model: SlowLink) -> None:
        super().__init__(daemon=True, name="slow-link")
        self._model = model
        self.messages: queue.Queue = queue.Queue()

    def run(self) -> None:
        while True:
            nbytes, sends, handles = self.messages.get()
            time.sleep(self._model.hold_s(nbytes))
            for send, sent in zip(sends, handles):
                try:
                    sent._work = send()
                except BaseException as err:  # handed to whoever waits for it
                    sent._error = err
                sent._started.set()


class LinkSender:
    """One store-and-forward link per destination under one :class:`SlowLink` model."""

    def __init__(self, model: SlowLink) -> None:
        self.model = model
        self._links: dict[object, _Link] = {}
        self._lock = threading.Lock()  # pipelining's sends may come from more than one thread

    def submit(self, dst, nbytes: int, sends: Sequence[Callable[[], object]]) -> list[Sent]:
        """Queue one message of ``nbytes`` to ``dst``: after its hold, ``sends`` start in order (the real
        sends it is made of). Returns a Work-like handle per send; returns at once."""
        with self._lock:
            link = self._links.get(dst)
            if link is None:
                link = self._links[dst] = _Link(self.model)
                link.start()
        handles = [Sent() for _ in sends]
        link.messages.put((nbytes, list(sends), handles))
        return handles
