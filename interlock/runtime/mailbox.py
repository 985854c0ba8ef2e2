"""A mailbox: a background thread that takes one channel's messages as they arrive.

gloo's point-to-point receives complete only inside ``wait()`` (``is_completed()`` stays
False until someone waits), so a rank that must never block on its neighbour (asynchronous
DGL) cannot poll a posted receive. The mailbox's thread waits instead: it receives every
message of one (src, dst) channel in order and queues it; the rank's own thread takes what
has arrived without waiting (:meth:`take`), or waits for a given number of messages
(:meth:`wait_for`). The thread releases the GIL while it waits, so it costs the rank's
compute nothing.

The sender ends the channel with a message tagged :data:`END_TAG`; the thread then stops.
A failed receive (a peer died, a timeout) is kept and raised by the rank's next call.
"""

from __future__ import annotations

import queue
import threading

import torch

from .transport import TorchDistributedTransport, TransportError

__all__ = ["Mailbox", "END_TAG"]

END_TAG = ("end",)


class Mailbox:
    """Receives channel (src, dst) of ``transport`` in a daemon thread; see the module docstring."""

    def __init__(self, transport: TorchDistributedTransport, *, src: int, dst: int, timeout_s: float) -> None:
        self.src, self.dst = src, dst
        self.timeout_s = timeout_s
        self.received = 0  # messages taken off the wire (END excluded)
        self.ended = False
        self._queue: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._transport = transport
        self._thread = threading.Thread(target=self._loop, name=f"mailbox-{src + 1}-to-{dst + 1}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        try:
            while True:
                tag, tensor = self._transport.recv_tagged(src=self.src, dst=self.dst)
                if tag == END_TAG:
                    self._queue.put(None)
                    return
                self._queue.put((tag, tensor))
        except BaseException as err:  # a peer died or the group was torn down
            self._error = err
            self._queue.put(None)

    def _get(self, block: bool):
        item = self._queue.get(block=block, timeout=self.timeout_s if block else None)
        if item is None:
            self.ended = True
            if self._error is not None:
                raise TransportError(f"component {self.dst + 1} receiving from component {self.src + 1}: {self._error}") \
                    from self._error
            return None
        self.received += 1
        return item

    def _wait_one(self, what: str):
        """The next message (None for END), waiting at most ``timeout_s``; TransportError naming ``what`` after that."""
        try:
            return self._get(block=True)
        except queue.Empty:
            raise TransportError(
                f"component {self.dst + 1} waited {self.timeout_s:g} s for {what} (is that rank alive?)") from None

    def take(self) -> list[tuple[tuple, torch.Tensor]]:
        """Every message that has arrived, oldest first, without waiting."""
        out = []
        while not self.ended:
            try:
                item = self._get(block=False)
            except queue.Empty:
                break
            if item is not None:
                out.append(item)
        return out

    def wait_for(self, count: int) -> list[tuple[tuple, torch.Tensor]]:
        """Messages until ``count`` have been received in all (waiting as needed); those taken now."""
        out = []
        while self.received < count:
            if self.ended:
                raise TransportError(
                    f"component {self.dst + 1} expected {count} messages from component {self.src + 1} "
                    f"but the channel ended after {self.received}"
                )
            item = self._wait_one(f"message {self.received + 1} from component {self.src + 1}, which never came")
            if item is not None:
                out.append(item)
        return out

    def join(self) -> list[tuple[tuple, torch.Tensor]]:
        """Wait for the END message (the sender has sent everything); the messages not taken before it."""
        out = []
        while not self.ended:
            item = self._wait_one(f"component {self.src + 1} to close its channel")
            if item is not None:
                out.append(item)
        self._thread.join(timeout=self.timeout_s)
        return out
