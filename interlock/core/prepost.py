"""Where a component may post each receive ahead of time, from its schedule.

A receive posted early lets its transfer overlap the receiver's compute (the transport's
:meth:`~interlock.runtime.transport.TorchDistributedTransport.post`). How early is bounded by one
rule, which keeps NCCL safe as well as gloo: between posting a receive from peer p and
taking it, the component must not send anything to p. (NCCL runs a pair's sends and
receives on one stream in the order they were issued: a receive issued before a send to
the same peer, while the peer does the same the other way round, would wait forever.)
So each receive is posted right after the last send to its peer that precedes it, looking
back cyclically into the previous step; with no send to that peer at all, right after the
previous step's same receive. Receives on one channel are posted in the order they are
taken (a later one never before an earlier one).

Positions are indices into the schedule. A post point in the previous step makes the
receive a *next-step* post of that position: the worker issues it during step t for step
t+1, when it knows step t+1 follows; otherwise at the start of step t+1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from . import schedule as S

__all__ = ["PostPlan", "post_plan"]


@dataclass(frozen=True)
class PostPlan:
    """``same[j]`` / ``next[j]``: the receives (src, tag) to post after action j, for this step / the next."""

    same: dict[int, tuple[tuple[int, tuple], ...]]
    next: dict[int, tuple[tuple[int, tuple], ...]]

    def next_step_receives(self) -> list[tuple[int, tuple]]:
        """Every next-step post in position order (what the first step, or a step after one that did not
        post ahead, posts at its start)."""
        return [r for j in sorted(self.next) for r in self.next[j]]


def post_plan(schedule: Sequence[S.Action], k: int) -> PostPlan:
    """Component ``k``'s post points for ``schedule`` (one step's actions); see the module docstring."""
    n = len(schedule)
    points: dict[int, int] = {}  # receive position -> post time (negative: in the previous step)
    # (source, tag) of each receive, as the action states it: the tags the worker receives with.
    receives = [(i, r) for i, a in enumerate(schedule) if (r := a.incoming(k)) is not None]
    for i, (src, tag) in receives:
        t = None
        for back in range(1, n):  # the last send to src before position i, cyclically
            j = i - back
            if schedule[j % n].send_to(k) == src:
                t = j
                break
        if t is None:
            t = i - n  # no send to src: right after the previous step's same receive
        points[i] = t
    # Receives of a channel are posted in the order they are taken: a post time never precedes the
    # one of the receive before it on that channel (cyclically: the first after the last, a step back).
    for src in {r[0] for _, r in receives}:
        on = [i for i, r in receives if r[0] == src]
        prev = points[on[-1]] - n
        for i in on:
            points[i] = max(points[i], prev)
            prev = points[i]
    same: dict[int, list] = {}
    nxt: dict[int, list] = {}
    for i, r in receives:
        t = points[i]
        if t >= i:
            continue  # nothing to gain: taken where it is
        (same if t >= 0 else nxt).setdefault(t % n, []).append(r)
    return PostPlan({j: tuple(v) for j, v in same.items()}, {j: tuple(v) for j, v in nxt.items()})
