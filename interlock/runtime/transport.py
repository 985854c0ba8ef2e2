"""Transports: how activations and gradient streams move between components.

A transport delivers tensors between components in FIFO order per (src, dst) channel,
and checks that what arrives carries the tag the receiver's schedule expects: a
mismatch means two schedules disagree, which is a bug worth a loud error.

``InMemoryTransport`` serves the simulated engine (all components in one process);
``TorchDistributedTransport`` serves the distributed engines (one process per
component, torch.distributed point-to-point).
"""

from __future__ import annotations

import json
import logging
from collections import Counter, deque
from collections.abc import Sequence
from datetime import timedelta

import torch
import torch.distributed as dist

from ..checks import count, number
from ..core.channel import Transport  # noqa: F401  (the protocol the transports here implement)
from .links import LinkSender, SlowLink

__all__ = ["Transport", "InMemoryTransport", "TorchDistributedTransport", "TransportError"]

logger = logging.getLogger(__name__)


class TransportError(RuntimeError):
    """A message was missing or did not match what the receiving schedule expected."""


class InMemoryTransport:
    """All components in one process: a queue per channel, tensors passed by reference.

    Tensors are sent detached (they are boundary activations or gradients, never part
    of another component's graph), so passing references is safe and free.
    """

    def __init__(self) -> None:
        self._queues: dict[tuple[int, int], deque[tuple[tuple, torch.Tensor]]] = {}
        self.messages_sent = 0
        self.sent_by_kind: Counter[str] = Counter()  # tag[0] ("activation", "stream") -> messages

    def send(self, tensor: torch.Tensor, *, src: int, dst: int, tag: tuple) -> None:
        self._queues.setdefault((src, dst), deque()).append((tag, tensor.detach()))
        self.messages_sent += 1
        self.sent_by_kind[str(tag[0])] += 1

    def post(self, *, src: int, dst: int, tag: tuple) -> None:
        """Nothing to post ahead in one process."""

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


# Point-to-point tags of the two messages that carry one tensor. They keep interlock's
# messages apart from other p2p traffic on the same process group (e.g. pipelining's);
# NCCL ignores tags and relies on the order, which the schedules fix.
_HEADER_P2P_TAG = 7301
_PAYLOAD_P2P_TAG = 7302
HEADER_BYTES = 512
_DONE = object()  # the "work" of an empty payload: nothing to wait for


class TorchDistributedTransport:
    """One process per component: torch.distributed point-to-point (gloo on CPU, NCCL on GPU).

    Each message is two point-to-point sends: a fixed-size header (the interlock tag,
    dtype, shape and strides, as JSON in ``HEADER_BYTES`` bytes) and the payload. The
    receiver allocates its buffer from the header, so shapes may change from step to
    step (a smaller last batch) and the tag is checked before the payload is read.
    Dense tensors keep their strides (e.g. channels_last), so the receiver computes with
    the same memory layout, and the same rounding, as the simulated engine.

    ``send`` never waits for the receiver (``isend``): a component runs ahead of the one
    it feeds, which is what lets local learning pipeline. A gloo or NCCL send completes
    only once the receiver has posted the matching receive, so the transport keeps the
    handles (and the tensors) of its sends; when more than ``max_pending_sends`` are
    outstanding, ``send`` waits for the oldest. That bounds the memory a component that
    runs ahead holds, and bounds how many steps it can run ahead. ``flush`` waits for all.

    ``ranks[k]`` is the global rank holding component k (default: rank k). ``group``
    carries the payloads; ``header_group`` the headers (default ``group``; with NCCL
    pass a gloo group, so headers stay on the CPU and decoding one costs no device sync).
    ``device``: where received tensors are allocated. ``wire_device``: where payloads travel,
    if not ``device`` (``"cpu"`` when GPU tensors go over gloo, which sends CPU tensors only:
    each payload is copied there before its send and back after its receive). ``timeout_s``: how long a receive
    or a send waits before failing (default: the process group's timeout). ``p2p_tags``:
    the (header, payload) point-to-point tags; two transports with different tags between
    the same ranks are independent channels (training messages vs evaluation, for one).
    ``link``: an emulated slow link (:class:`~interlock.runtime.links.SlowLink`, also settable
    later with :meth:`use_link`) each message crosses before its sends start; None sends at once.

    **Static shapes** (``static_shapes=True``, what the training program uses: its batches
    all have one size): a message's dtype, shape and strides are sent once per (channel,
    tag), with its first message; every later message with that tag is its payload alone
    (one point-to-point message, no CPU round trip for a header under NCCL). A message whose
    shape differs from its tag's first one is refused with a TransportError on the sender.
    Since later messages carry no tag, the tag check happens on the first message of each
    tag (the schedules repeat every step, so a disagreement shows there).

    **Pre-posted receives** (:meth:`post`): with static shapes a receive whose tag's layout
    is known can be posted before the schedule reaches it, so the transfer overlaps the
    receiver's compute; :meth:`recv` then only waits for it. Receives on a channel are taken
    in the order they were posted (or asked for); the worker posts each one as early as
    the send order allows (:func:`interlock.core.schedule.post_points`).
    """

    def __init__(
        self,
        *,
        ranks: Sequence[int] | None = None,
        group: dist.ProcessGroup | None = None,
        header_group: dist.ProcessGroup | None = None,
        device: torch.device | str | None = None,
        max_pending_sends: int = 32,
        timeout_s: float | None = None,
        p2p_tags: tuple[int, int] = (_HEADER_P2P_TAG, _PAYLOAD_P2P_TAG),
        static_shapes: bool = False,
        wire_device: torch.device | str | None = None,
        link: SlowLink | None = None,
    ) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError(
                "TorchDistributedTransport needs an initialised process group: call "
                "torch.distributed.init_process_group first (the distributed engine does this for you)"
            )
        count(max_pending_sends, f"max_pending_sends={max_pending_sends!r}: give an integer >= 1")
        if timeout_s is not None:
            number(timeout_s, f"timeout_s={timeout_s!r}: give a positive number of seconds, or None for the group's timeout",
                   low=0, low_open=True, finite=False)
        self.ranks = tuple(range(dist.get_world_size())) if ranks is None else tuple(int(r) for r in ranks)
        self.group = group
        self.header_group = group if header_group is None else header_group
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.wire_device = self.device if wire_device is None else torch.device(wire_device)
        self.max_pending_sends = max_pending_sends
        self._timeout = None if timeout_s is None else timedelta(seconds=timeout_s)
        self._header_tag, self._payload_tag = p2p_tags
        self.static_shapes = bool(static_shapes)
        self._sent_layout: dict[tuple[int, tuple], tuple] = {}  # (dst, tag) -> (dtype, shape, stride)
        self._recv_layout: dict[tuple[int, tuple], tuple] = {}  # (src, tag) -> (dtype, shape, stride)
        # Per source component, receives posted ahead, in order: [tag, buffer, work]. An entry
        # without work is deferred (its layout was unknown when posted): it is received when
        # asked for, and the entries behind it on that channel are posted only after it.
        self._posted: dict[int, deque[list]] = {}
        self.headers_sent = 0
        self.posted_ahead = 0  # receives posted before they were asked for
        # Oldest first: (header work, payload work or None, header, payload). The tensors are
        # kept alive here until their sends complete.
        self._pending: deque[tuple] = deque()
        self.messages_sent = 0
        self.messages_received = 0
        self.sent_by_kind: Counter[str] = Counter()  # tag[0] ("activation", "stream") -> messages
        self._links: LinkSender | None = None
        self.use_link(link)

    # -- sending -------------------------------------------------------------------------

    def use_link(self, link: SlowLink | None) -> None:
        """Send every later message across an emulated slow ``link`` (None: straight to ``isend``)."""
        if link is not None and not isinstance(link, SlowLink):
            raise TypeError(f"link={link!r}: give an interlock.runtime.links.SlowLink, or None for no emulated link")
        self._links = None if link is None else LinkSender(link)

    def send(self, tensor: torch.Tensor, *, src: int, dst: int, tag: tuple) -> None:
        """Start sending ``tensor`` from component ``src`` to ``dst``; returns without waiting for ``dst``."""
        peer = self._rank_of(dst)
        payload, stride = _dense_flat(tensor.detach())
        payload = payload.to(self.wire_device)  # (no copy unless staged)
        layout = (tensor.dtype, tuple(tensor.shape), stride)
        header = None
        known = self._sent_layout.get((dst, tuple(tag))) if self.static_shapes else None
        if known is None:
            header = _encode_header(tag, *layout)
            self.headers_sent += 1
            if self.static_shapes:
                self._sent_layout[(dst, tuple(tag))] = layout
        elif known != layout:
            raise TransportError(
                f"component {src + 1} sending {tag} to component {dst + 1}: shape {layout[1]} {layout[0]}, but this "
                f"tag's first message was {known[1]} {known[0]}; with static_shapes every message of a tag keeps its "
                f"shape (use batches of one size, e.g. drop the last smaller one, or turn static_shapes off)"
            )
        header_work, payload_work = self._start_sends(peer, header, payload)
        self._pending.append((header_work, payload_work, header, payload, src, dst, tag))
        self.messages_sent += 1
        self.sent_by_kind[str(tag[0])] += 1
        if len(self._pending) > self.max_pending_sends:
            logger.debug("component %d: %d sends outstanding; waiting for the oldest", src + 1, len(self._pending))
            while len(self._pending) > self.max_pending_sends:
                self._wait_oldest()

    def _start_sends(self, peer: int, header: torch.Tensor | None, payload: torch.Tensor) -> tuple[object, object]:
        """The (header, payload) works of one message to rank ``peer`` (None where nothing is sent)."""
        sends = []
        if header is not None:
            sends.append(lambda: dist.isend(header, dst=peer, group=self.header_group, tag=self._header_tag))
        # An empty tensor has nothing to send (and gloo rejects zero-byte messages).
        if payload.numel():
            sends.append(lambda: dist.isend(payload, dst=peer, group=self.group, tag=self._payload_tag))
        if self._links is None:
            works = [send() for send in sends]
        else:  # one message on the link: its header and payload leave together after one hold
            nbytes = payload.numel() * payload.element_size() + (0 if header is None else header.numel())
            works = self._links.submit(peer, nbytes, sends)
        works = iter(works)
        return (None if header is None else next(works)), (next(works) if payload.numel() else None)

    def outstanding_sends(self) -> int:
        """Sends not yet known to be complete (the receiver may already hold some of them)."""
        return len(self._pending)

    def flush(self, *, keep: int = 0) -> None:
        """Wait until at most ``keep`` sends are outstanding (0: every message sent so far has been received)."""
        while len(self._pending) > keep:
            self._wait_oldest()

    def _wait_oldest(self) -> None:
        header_work, payload_work, _, _, src, dst, tag = self._pending.popleft()
        what = f"component {src + 1} sending {tag} to component {dst + 1} (rank {self._rank_of(dst)})"
        if header_work is not None:
            self._wait(header_work, what)
        if payload_work is not None:
            self._wait(payload_work, what)

    # -- receiving -----------------------------------------------------------------------

    def recv(self, *, src: int, dst: int, tag: tuple) -> torch.Tensor:
        """Receive the next tensor on channel (src, dst); TransportError if it is not tagged ``tag``."""
        tag = tuple(tag)
        queue = self._posted.get(src)
        if queue:
            posted_tag, buffer, work = queue.popleft()
            if posted_tag != tag:
                raise TransportError(
                    f"component {dst + 1} posted a receive of {posted_tag} from component {src + 1} but its schedule "
                    f"now asks for {tag}: the receives were posted out of order"
                )
            if work is not None:
                self._wait(work, self._waiting(src, dst, tag))
                self.messages_received += 1
                return self._arrived(buffer)
        out = self._recv_now(src, dst, tag)
        self._post_deferred(src)
        return out

    def post(self, *, src: int, dst: int, tag: tuple) -> None:
        """Post the receive of the next message ``tag`` on channel (src, dst) now (with static shapes), so
        that its transfer overlaps whatever the receiver does until it asks for it. Without static
        shapes this does nothing (the receive happens when asked for)."""
        if not self.static_shapes:
            return
        queue = self._posted.setdefault(src, deque())
        layout = self._recv_layout.get((src, tuple(tag)))
        if layout is None or any(entry[2] is None for entry in queue):
            queue.append([tuple(tag), None, None])  # deferred: posted once everything before it is
            return
        queue.append([tuple(tag), *self._irecv_payload(src, layout)])
        self.posted_ahead += 1

    def _post_deferred(self, src: int) -> None:
        """Post the deferred receives at the head of channel ``src`` whose layouts are now known, in order."""
        queue = self._posted.get(src)
        for entry in queue or ():
            if entry[2] is not None:
                continue
            layout = self._recv_layout.get((src, entry[0]))
            if layout is None:
                return  # its first message (with the header) must be received first
            entry[1], entry[2] = self._irecv_payload(src, layout)

    def _arrived(self, buffer: torch.Tensor) -> torch.Tensor:
        """A received payload on this transport's device (a copy only when staged)."""
        return buffer.to(self.device)  # (a dense tensor keeps its strides)

    def _irecv_payload(self, src: int, layout: tuple) -> tuple[torch.Tensor, object]:
        dtype, shape, stride = layout
        out = torch.empty_strided(shape, stride, dtype=dtype, device=self.wire_device)
        flat, _ = _dense_flat(out)
        work = dist.irecv(flat, src=self._rank_of(src), group=self.group, tag=self._payload_tag) if flat.numel() else _DONE
        return out, work

    def _recv_now(self, src: int, dst: int, tag: tuple) -> torch.Tensor:
        layout = self._recv_layout.get((src, tag)) if self.static_shapes else None
        if layout is None:  # the tag's first message under static shapes, or every message otherwise
            _, out = self.recv_tagged(src=src, dst=dst, expect=tag)
            if self.static_shapes:
                self._recv_layout[(src, tag)] = (out.dtype, tuple(out.shape), tuple(out.stride()))
            return out
        out, work = self._irecv_payload(src, layout)
        self._wait(work, self._waiting(src, dst, tag))
        self.messages_received += 1
        return self._arrived(out)

    def _waiting(self, src: int, dst: int, tag: tuple) -> str:
        return f"component {dst + 1} waiting for {tag} from component {src + 1} (rank {self._rank_of(src)})"

    def recv_tagged(self, *, src: int, dst: int, expect: tuple | None = None) -> tuple[tuple, torch.Tensor]:
        """Receive the next message on channel (src, dst), whatever its tag: (tag, tensor).

        ``expect``: the tag the receiver expects (a TransportError before the payload is read
        if another arrives), or None to take any (the caller dispatches on the tag).
        """
        peer = self._rank_of(src)
        what = self._waiting(src, dst, expect or 'a message')
        header = torch.empty(HEADER_BYTES, dtype=torch.uint8)
        self._wait(dist.irecv(header, src=peer, group=self.header_group, tag=self._header_tag), what)
        got, dtype, shape, stride = _decode_header(header)
        if expect is not None and got != tuple(expect):
            raise TransportError(f"component {dst + 1} expected {expect} from component {src + 1} but received {got}")
        out = torch.empty_strided(shape, stride, dtype=dtype, device=self.wire_device)
        flat, _ = _dense_flat(out)
        if flat.numel():
            self._wait(dist.irecv(flat, src=peer, group=self.group, tag=self._payload_tag), what)
        self.messages_received += 1
        return got, self._arrived(out)

    # -- helpers -------------------------------------------------------------------------

    def _rank_of(self, component: int) -> int:
        if not 0 <= component < len(self.ranks):
            raise TransportError(f"component {component + 1} does not exist: this transport knows {len(self.ranks)} components")
        return self.ranks[component]

    def _wait(self, work, what: str) -> None:
        if work is _DONE:
            return
        try:
            if self._timeout is None:
                work.wait()
            else:
                work.wait(timeout=self._timeout)
        except Exception as err:  # a peer died or timed out: say which message was lost
            raise TransportError(f"{what}: {err}") from err


def _dense_flat(t: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """A 1-D view of ``t``'s elements in memory order, and the strides to rebuild ``t`` from it.

    A dense tensor (contiguous or a permutation of it, e.g. channels_last) is sent as it
    lies in memory; anything else (a strided slice) is made contiguous first.
    """
    if not _is_dense(t):
        t = t.contiguous()
    return t.as_strided((t.numel(),), (1,), t.storage_offset()), tuple(t.stride())


def _is_dense(t: torch.Tensor) -> bool:
    # Non-overlapping and dense: sorted by stride, each dimension's stride is the product
    # of the sizes of the dimensions below it (dimensions of size 1 do not matter).
    expected = 1
    for size, stride in sorted(((s, st) for s, st in zip(t.shape, t.stride()) if s != 1), key=lambda p: p[1]):
        if stride != expected:
            return False
        expected *= size
    return True


def _encode_header(tag: tuple, dtype: torch.dtype, shape: tuple[int, ...], stride: tuple[int, ...]) -> torch.Tensor:
    text = json.dumps([list(tag), str(dtype).removeprefix("torch."), list(shape), list(stride)], separators=(",", ":"))
    raw = text.encode()
    if len(raw) > HEADER_BYTES:
        raise TransportError(
            f"the header of message {tag} is {len(raw)} bytes, over the {HEADER_BYTES}-byte limit; "
            f"use a shorter tag or a tensor with fewer dimensions"
        )
    header = torch.zeros(HEADER_BYTES, dtype=torch.uint8)
    header[: len(raw)] = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    return header


def _decode_header(header: torch.Tensor) -> tuple[tuple, torch.dtype, tuple[int, ...], tuple[int, ...]]:
    raw = header.numpy().tobytes().rstrip(b"\0")
    try:
        tag, dtype_name, shape, stride = json.loads(raw)
        dtype = getattr(torch, dtype_name)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(dtype_name)
    except Exception as err:
        # Not a header: the two sides disagree on what is sent when (or someone else's message).
        raise TransportError(f"received a malformed message header {raw[:80]!r}: {err}") from err
    return _as_tuple(tag), dtype, tuple(shape), tuple(stride)


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list) else value
