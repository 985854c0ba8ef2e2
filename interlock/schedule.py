"""Schedules: the ordered actions of one component for one training step.

A schedule is data, derived from a :class:`~interlock.strategies.GradientPlan`, the
component index and a few options. Workers execute it; engines decide where workers run.

The order encodes the pipelining rule of DESIGN.md: a component sends the input
gradient of its own loss downwards as soon as it has it, forwards each arriving stream
as soon as it arrives, and leaves the weight gradient (needed only for its own update)
to the end, off the critical path. When a component sees exactly one stream and trains
on it, the input and weight gradients come from one backward pass (plain backprop).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .strategies import GradientPlan

__all__ = [
    "Action",
    "RecvActivation",
    "Forward",
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
    "ACTIVATION_TAG",
]

# Message tags. An activation crossing a boundary upwards has this tag; a stream crossing
# downwards is tagged with (source loss j, hops it has left after crossing).
ACTIVATION_TAG = ("activation",)


def stream_tag(j: int, hops_left: int) -> tuple:
    return ("stream", j, hops_left)


@dataclass(frozen=True)
class Action:
    """Base class; ``kind`` names the action in traces."""

    @property
    def kind(self) -> str:
        return type(self).__name__


@dataclass(frozen=True)
class RecvActivation(Action):
    """Receive a_{k-1} from the component below."""


@dataclass(frozen=True)
class Forward(Action):
    """Run the component's blocks once on its input (x for the first component)."""


@dataclass(frozen=True)
class SendActivation(Action):
    """Send a_k (detached) to the component above."""


@dataclass(frozen=True)
class HeadLoss(Action):
    """Head k on the detached a_k, L_k, head weight gradient; ``stream``: also dL_k/da_k."""

    stream: bool


@dataclass(frozen=True)
class RecvStream(Action):
    """Receive dL_j/da_k from the component above."""

    loss: int
    hops_left: int


@dataclass(frozen=True)
class InputGrad(Action):
    """Input gradients dL_j/da_{k-1} of the given streams (batched into one call if several)."""

    losses: tuple[int, ...]
    last: bool  # the last backward through this step's graph: free it afterwards


@dataclass(frozen=True)
class FullGrad(Action):
    """One backward pass of stream j giving both its input gradient and theta_k's gradient."""

    loss: int
    last: bool


@dataclass(frozen=True)
class WeightGrad(Action):
    """Accumulate into theta_k the gradient of the sum of the given streams (one pass)."""

    losses: tuple[int, ...]
    last: bool


@dataclass(frozen=True)
class SendStream(Action):
    """Send dL_j/da_{k-1} to the component below."""

    loss: int
    hops_left: int


@dataclass(frozen=True)
class Update(Action):
    """Optimizer step (block and head parameters), LR scheduler step, zero the gradients."""


def build_schedule(
    plan: GradientPlan, k: int, *, has_head: bool, batch_streams: bool = False, split_backward: bool = False
) -> tuple[Action, ...]:
    """The actions of component ``k`` (0-based) for one step.

    ``has_head``: the component owns a head (trained on its loss even if the plan does
    not use that loss for any block: the head then only watches).
    ``batch_streams``: wait for all streams from above and compute their input gradients
    in one batched call, instead of forwarding each as it arrives. Same gradients,
    different rounding and timing; measured in benchmarks/step_overhead.py.
    ``split_backward``: where a component forwards and trains on a single stream, compute its
    input gradient first, send it, and only then the weight gradient (instead of one
    FullGrad), so the component below can start sooner. With autograd the weight pass
    recomputes the block's internal gradients, so this costs about half a backward more per
    component; it pays only where the shorter critical path is worth more (benchmarks/schedule.py).
    """
    K = plan.num_components
    if not 0 <= k < K:
        raise ValueError(f"component index {k} out of range for {K} components")
    if plan.needs_head(k) and not has_head:
        raise ValueError(f"component {k + 1} needs a head: its loss trains blocks under this strategy")

    acts: list[Action] = []
    if k > 0:
        acts.append(RecvActivation())
    acts.append(Forward())
    if k < K - 1:
        acts.append(SendActivation())
    if has_head:
        acts.append(HeadLoss(stream=plan.needs_head(k)))

    streams = plan.streams_at(k)
    continuing = set(plan.continuing(k))
    trained = plan.trains[k]
    backward: list[Action] = []  # built with last=False, fixed up below

    def recv(j: int) -> None:
        if j != k:  # the own-loss stream starts here; the others come from above
            backward.append(RecvStream(j, plan.hops_left(j, k)))

    def send(j: int) -> None:
        backward.append(SendStream(j, plan.hops_left(j, k) - 1))

    if len(streams) == 1 and trained == streams and streams[0] in continuing and not split_backward:
        # Plain backprop: one stream, trained on and forwarded: a single backward pass.
        (j,) = streams
        recv(j)
        backward.append(FullGrad(j, last=False))
        send(j)
    else:
        if batch_streams:
            for j in streams:
                recv(j)
            forwarded = tuple(j for j in streams if j in continuing)
            if forwarded:
                backward.append(InputGrad(forwarded, last=False))
                for j in forwarded:
                    send(j)
        else:
            for j in streams:
                recv(j)
                if j in continuing:
                    backward.append(InputGrad((j,), last=False))
                    send(j)
        if trained:
            backward.append(WeightGrad(trained, last=False))

    # Mark the final pass through the block's graph so the worker can free it.
    for i in reversed(range(len(backward))):
        act = backward[i]
        if isinstance(act, (InputGrad, FullGrad, WeightGrad)):
            backward[i] = replace(act, last=True)
            break
    acts.extend(backward)
    acts.append(Update())
    return tuple(acts)
