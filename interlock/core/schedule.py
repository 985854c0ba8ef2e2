"""Schedules: the ordered actions of one component for one training step.

A schedule is data, derived from a :class:`~interlock.core.strategies.GradientPlan`, the
component index and a few options. Workers execute it; engines decide where workers run.

The order encodes the pipelining rule of DESIGN.md: a component sends the input
gradient of its own loss downwards as soon as it has it, forwards each arriving stream
as soon as it arrives, and leaves the weight gradient (needed only for its own update)
to the end, off the critical path. The weight pass starts from the gradients the input
passes kept (:mod:`interlock.core.backward`) wherever it can, so splitting a backward pass
costs no FLOPs and is the builder's default (:func:`build_schedule` states the rule; the
simulated engine, which runs components one after another, asks for one pass). With
``microbatches=m`` the step's batch flows through the components as m micro-batches.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import ClassVar

from .strategies import GradientPlan
from ..checks import count

__all__ = [
    "Action",
    "RecvActivation",
    "Forward",
    "Recompute",
    "SendActivation",
    "HeadLoss",
    "RecvStream",
    "InputGrad",
    "FullGrad",
    "WeightGrad",
    "SendStream",
    "Update",
    "build_schedule",
    "stream_tag",
    "activation_tag",
    "check_microbatches",
    "ACTIVATION_TAG",
    "CATEGORIES",
    "BACKWARD_CATEGORIES",
]

# Message tags. An activation crossing a boundary upwards has this tag; a stream crossing
# downwards is tagged with (source loss j, hops it has left after crossing). In a
# micro-batched step every tag also carries the micro-batch index.
ACTIVATION_TAG = ("activation",)


def activation_tag(mb: int | None = None) -> tuple:
    return ACTIVATION_TAG if mb is None else ("activation", mb)


def stream_tag(j: int, hops_left: int, mb: int | None = None) -> tuple:
    return ("stream", j, hops_left) if mb is None else ("stream", j, hops_left, mb)


# The cost categories an action is priced (timemodel.clock), drawn and counted (measure.trace)
# under, in the trace's legend order. A new action kind picks one of these (a "weight gradient"
# one has WeightGrad's ``reuse``, which its price depends on); a new category also needs a charge
# in ComputeCosts.charge (and may get a colour in measure.trace: grey without one).
CATEGORIES = (
    "forward",
    "head",  # the head's forward, loss and backward: cheap next to a block
    "input gradient",
    "weight gradient",
    "full backward",
    "communication",
    "update",
)
# The passes backwards through the block's graph of one micro-batch (the last one frees it).
BACKWARD_CATEGORIES = ("input gradient", "weight gradient", "full backward")


# Every action but Update belongs to one micro-batch: ``mb`` is its index (0..m-1), or None when
# the step is not cut into micro-batches (the whole batch is the one micro-batch).


@dataclass(frozen=True)
class Action:
    """One action of a component's step, carrying its own metadata (as ``torch.distributed.pipelining``'s
    ``_Action`` does), so the clock, the pre-posting rule, the trace and the runtimes read fields
    instead of switching on types.

    ``kind`` names the action (traces, records); ``comm``: "recv" or "send" for a message to or
    from a neighbour, None for compute; ``peer_offset``: where that neighbour is (-1 the component
    below, +1 the one above); ``category``: the cost category of the time model and the trace (one
    of :data:`CATEGORIES`; None on this base class, which is no action of a schedule);
    :attr:`tag`: the message's tag. A message is paired by fields alone: component k's receive
    ``(recv_from(k), tag)`` takes the send of component ``recv_from(k)`` whose ``(send_to, tag)``
    is ``(k, tag)``.
    """

    comm: ClassVar[str | None] = None
    peer_offset: ClassVar[int] = 0
    category: ClassVar[str | None] = None

    @property
    def kind(self) -> str:
        return type(self).__name__

    def peer(self, k: int) -> int | None:
        """The component (0-based) component ``k``'s message goes to or comes from; None for compute."""
        return None if self.comm is None else k + self.peer_offset

    def recv_from(self, k: int) -> int | None:
        """The component ``k`` receives from in this action, or None."""
        return k + self.peer_offset if self.comm == "recv" else None

    def send_to(self, k: int) -> int | None:
        """The component ``k`` sends to in this action, or None."""
        return k + self.peer_offset if self.comm == "send" else None

    @property
    def tag(self) -> tuple | None:
        """The tag of this action's message (None for compute)."""
        return None

    def incoming(self, k: int) -> tuple[int, tuple] | None:
        """(source component, tag) of the message component ``k`` waits for in this action, or None."""
        src = self.recv_from(k)
        return None if src is None else (src, self.tag)

    def outgoing(self, k: int) -> tuple[int, tuple] | None:
        """(destination component, tag) of the message component ``k`` sends in this action, or None."""
        dst = self.send_to(k)
        return None if dst is None else (dst, self.tag)


@dataclass(frozen=True)
class RecvActivation(Action):
    """Receive a_{k-1} from the component below."""

    comm: ClassVar[str | None] = "recv"
    peer_offset: ClassVar[int] = -1
    category: ClassVar[str | None] = "communication"

    mb: int | None = None

    @property
    def tag(self) -> tuple:
        return activation_tag(self.mb)


@dataclass(frozen=True)
class Forward(Action):
    """Run the component's blocks once on its input (x for the first component).

    ``keep`` says what the forward keeps for the backward: ``"graph"`` its autograd graph (every
    synchronous plan); ``"input"`` no graph, only its input, for a :class:`Recompute` at the weights
    the component holds when the backward comes (the paper's Hogwild); ``"stash"`` the graph over a
    copy of the component's weights as they are now, so a late backward meets the weights its
    forward used and the update reaches the live ones (PipeDream's weight stashing).
    """

    category: ClassVar[str | None] = "forward"

    mb: int | None = None
    keep: str = "graph"

    def __post_init__(self) -> None:
        if self.keep not in FORWARD_KEEPS:
            raise ValueError(f"Forward(keep={self.keep!r}): choose one of {', '.join(FORWARD_KEEPS)}")


FORWARD_KEEPS = ("graph", "input", "stash")


@dataclass(frozen=True)
class Recompute(Action):
    """The forward of a ``Forward(keep="input")`` again, with its graph, at the component's current weights:
    the same dropout masks; BatchNorm's running statistics are restored at the step's update (they move
    at the forward only)."""

    category: ClassVar[str | None] = "forward"

    mb: int | None = None


@dataclass(frozen=True)
class SendActivation(Action):
    """Send a_k (detached) to the component above."""

    comm: ClassVar[str | None] = "send"
    peer_offset: ClassVar[int] = 1
    category: ClassVar[str | None] = "communication"

    mb: int | None = None

    @property
    def tag(self) -> tuple:
        return activation_tag(self.mb)


@dataclass(frozen=True)
class HeadLoss(Action):
    """Head k on the detached a_k, L_k, head weight gradient; ``stream``: also dL_k/da_k;
    ``grad=False``: only the loss, reported (no gradient: the head's backward comes later)."""

    category: ClassVar[str | None] = "head"

    stream: bool
    mb: int | None = None
    grad: bool = True

    def __post_init__(self) -> None:
        if self.stream and not self.grad:
            raise ValueError("HeadLoss(stream=True, grad=False): a stream is a gradient; give grad=True")


@dataclass(frozen=True)
class RecvStream(Action):
    """Receive dL_j/da_k from the component above."""

    comm: ClassVar[str | None] = "recv"
    peer_offset: ClassVar[int] = 1
    category: ClassVar[str | None] = "communication"

    loss: int
    hops_left: int
    mb: int | None = None

    @property
    def tag(self) -> tuple:
        return stream_tag(self.loss, self.hops_left, self.mb)


@dataclass(frozen=True)
class InputGrad(Action):
    """Input gradients dL_j/da_{k-1} of the given streams (batched into one call if several).

    ``keep``: also keep (add up) the gradients reaching the nodes where the block's parameters
    enter, for a later ``WeightGrad(reuse=True)`` (one stream only, never batched).
    """

    category: ClassVar[str | None] = "input gradient"

    losses: tuple[int, ...]
    last: bool  # the last backward through this step's graph: free it afterwards
    keep: bool = False
    mb: int | None = None


@dataclass(frozen=True)
class FullGrad(Action):
    """One backward pass of stream j giving both its input gradient and theta_k's gradient."""

    category: ClassVar[str | None] = "full backward"

    loss: int
    last: bool
    mb: int | None = None


@dataclass(frozen=True)
class WeightGrad(Action):
    """Accumulate into theta_k the gradient of the sum of the given streams.

    ``reuse``: every one of these streams went through an ``InputGrad(keep=True)`` of this
    micro-batch, so the pass starts from the kept gradients and computes only the weight part;
    otherwise it is one backward pass of the streams' sum from the block's output.
    """

    category: ClassVar[str | None] = "weight gradient"

    losses: tuple[int, ...]
    last: bool
    reuse: bool = False
    mb: int | None = None


@dataclass(frozen=True)
class SendStream(Action):
    """Send dL_j/da_{k-1} to the component below."""

    comm: ClassVar[str | None] = "send"
    peer_offset: ClassVar[int] = -1
    category: ClassVar[str | None] = "communication"

    loss: int
    hops_left: int
    mb: int | None = None

    @property
    def tag(self) -> tuple:
        return stream_tag(self.loss, self.hops_left, self.mb)


@dataclass(frozen=True)
class Update(Action):
    """Optimizer step (block and head parameters), LR scheduler step, zero the gradients."""

    category: ClassVar[str | None] = "update"


def check_microbatches(microbatches) -> int:
    """``microbatches`` if it is a valid number of micro-batches per step, else a ValueError saying what to set."""
    count(microbatches, f"microbatches={microbatches!r}: give an integer m >= 1 (1: the whole batch at once)")
    return microbatches


def build_schedule(
    plan: GradientPlan,
    k: int,
    *,
    has_head: bool,
    batch_streams: bool = False,
    split_backward: bool | None = None,
    microbatches: int = 1,
) -> tuple[Action, ...]:
    """The actions of component ``k`` (0-based) for one step.

    ``has_head``: the component owns a head (trained on its loss even if the plan does
    not use that loss for any block: the head then only watches).
    ``batch_streams``: wait for all streams from above and compute their input gradients
    in one batched call, instead of forwarding each as it arrives. Same gradients,
    different rounding and timing; measured in benchmarks/step_overhead.py.
    ``split_backward``: where a component forwards and trains on a single stream, compute its
    input gradient first (keeping the gradients where the block's parameters enter), send it,
    and only then the weight gradient from the kept gradients (instead of one FullGrad).
    None (the default) decides by the rule below; True splits, False keeps the FullGrad.

    The rule: a split costs no FLOPs (the weight pass reuses the input pass's intermediate
    gradients: input part + weight part = one backward), the component's own actions end when
    they did, and the stream leaves one weight part earlier. No start time in the critical-path
    simulation can then move later, and the component below waits for that stream (it is the
    stream it forwards or trains on next), so the critical path is never longer and shorter
    whenever the weight part costs anything. So every lone stream is split by default (in time,
    CPU kernels make the two parts cost more than one pass: docs/results.md, "Overhead").

    ``microbatches`` m > 1: the step's batch is cut into m micro-batches that flow through the
    components as a pipeline. First, for each micro-batch in turn: receive its activation,
    forward, send it up, head loss, and at once the input gradient of the own loss's stream,
    sent down. Then the streams from above, in the order the component above sends them,
    each forwarded as soon as it arrives. Last, one weight pass per micro-batch (off the
    critical path), and one update for the step; a component that forwards none of the streams
    it receives runs each micro-batch's weight pass as soon as that micro-batch's last stream has
    arrived instead (nobody waits for it, and it fills the wait for the next stream). m = 1 is
    the whole-batch schedule exactly.
    """
    K = plan.num_components
    if not 0 <= k < K:
        raise ValueError(f"component index {k} out of range for {K} components")
    if plan.needs_head(k) and not has_head:
        raise ValueError(f"component {k + 1} needs a head: its loss trains blocks under this strategy")
    m = check_microbatches(microbatches)
    split = True if split_backward is None else bool(split_backward)
    own, rest, weights = _backward(plan, k, bool(batch_streams), split, m)
    mbs = _indices(m)

    acts: list[Action] = []
    for i in mbs:
        if k > 0:
            acts.append(RecvActivation(mb=i))
        acts.append(Forward(mb=i))
        if k < K - 1:
            acts.append(SendActivation(mb=i))
        if has_head:
            acts.append(HeadLoss(stream=plan.needs_head(k), mb=i))
        acts.extend(own[i])
    acts.extend(rest)
    acts.extend(weights)
    acts = _mark_last(acts)
    acts.append(Update())
    return tuple(acts)


def _indices(m: int) -> list[int | None]:
    return [None] if m == 1 else list(range(m))


def _mark_last(acts: list[Action]) -> list[Action]:
    """Mark each micro-batch's final pass through its graph, so the worker can free it."""
    seen: set[int | None] = set()
    for idx in reversed(range(len(acts))):
        act = acts[idx]
        if act.category in BACKWARD_CATEGORIES and act.mb not in seen:
            seen.add(act.mb)
            acts[idx] = replace(act, last=True)
    return acts


@lru_cache(maxsize=256)
def _backward(plan: GradientPlan, k: int, batch_streams: bool, split: bool, m: int):
    """Component k's backward actions (all with last=False), in three parts:

    ``own[i]``: what follows micro-batch i's head loss (its own stream's input gradient, sent);
    ``rest``: the streams from above, received in the order component k+1 sends them;
    ``weights``: the weight passes, one per micro-batch.
    The receive order is derived from component k+1's actions, so both ends of every channel
    agree on the order of its messages.
    """
    K = plan.num_components
    mbs = _indices(m)
    streams = plan.streams_at(k)
    continuing = set(plan.continuing(k))
    trained = plan.trains[k]
    lone = len(streams) == 1 and trained == streams and streams[0] in continuing
    full = lone and not split
    # The weight pass reuses the input passes when every stream it sums was input-passed one at a time.
    reuse = bool(trained) and not full and not batch_streams and all(j in continuing for j in trained)

    def process(j: int, i) -> list[Action]:
        if full:
            return [FullGrad(j, last=False, mb=i), SendStream(j, plan.hops_left(j, k) - 1, mb=i)]
        if j in continuing:
            return [InputGrad((j,), last=False, keep=reuse and j in trained, mb=i), SendStream(j, plan.hops_left(j, k) - 1, mb=i)]
        return []

    def batched(i) -> list[Action]:
        forwarded = tuple(j for j in streams if j in continuing)
        if not forwarded:
            return []
        return [InputGrad(forwarded, last=False, mb=i), *(SendStream(j, plan.hops_left(j, k) - 1, mb=i) for j in forwarded)]

    own: dict = {i: [] for i in mbs}
    if k in streams and not (batch_streams and not full):
        for i in mbs:
            own[i] = process(k, i)

    # Streams from above arrive in the order component k+1 sends them down.
    arriving: list[tuple[int, int | None]] = []
    if k < K - 1:
        above_own, above_rest, _ = _backward(plan, k + 1, batch_streams, split, m)
        sent = [a for i in mbs for a in above_own[i]] + list(above_rest)
        arriving = [(a.loss, a.mb) for a in sent if a.send_to(k + 1) == k]
    rest: list[Action] = []
    if batch_streams and not full:
        last_arrival = {i: -1 for i in mbs}
        for n, (_, i) in enumerate(arriving):
            last_arrival[i] = n
        for i in mbs:  # micro-batches with nothing from above: their own streams first
            if last_arrival[i] < 0:
                rest.extend(batched(i))
        for n, (j, i) in enumerate(arriving):
            rest.append(RecvStream(j, plan.hops_left(j, k), mb=i))
            if last_arrival[i] == n:
                rest.extend(batched(i))
    else:
        for j, i in arriving:
            rest.append(RecvStream(j, plan.hops_left(j, k), mb=i))
            rest.extend(process(j, i))

    weights: list[Action] = []
    if trained and not full:
        weights = [WeightGrad(trained, last=False, reuse=reuse, mb=i) for i in mbs]
    if weights and m > 1 and arriving and not any(a.send_to(k) is not None for a in rest):
        # Nothing waits for this component's backward after its forwards (it sends no stream it
        # receives), so a micro-batch's weight pass runs as soon as its last stream has arrived,
        # in the time it would otherwise wait for the next one. (With streams to forward, a weight
        # pass there could hold up a stream that has already arrived: those stay at the end.)
        last_arrival = {i: n for n, (_, i) in enumerate(arriving)}
        if set(last_arrival) == set(mbs):
            interleaved: list[Action] = []
            n = 0
            for a in rest:
                interleaved.append(a)
                if a.recv_from(k) is not None:
                    if last_arrival[a.mb] == n:
                        interleaved.append(weights[mbs.index(a.mb)])
                    n += 1
            rest, weights = interleaved, []
    return own, tuple(rest), tuple(weights)
