"""Where receives are posted ahead: the rule of interlock.core.prepost on the schedules themselves."""

from __future__ import annotations

import interlock as il
from interlock.core import schedule as S
from interlock.core.prepost import post_plan


def sched(strategy, k, K=4, **kw):
    return S.build_schedule(strategy.plan(K), k, has_head=True, **kw)


def position(schedule, cls, **fields):
    return next(i for i, a in enumerate(schedule) if isinstance(a, cls) and all(getattr(a, f) == v for f, v in fields.items()))


def test_two_wise_middle_component_posts_after_its_last_send_to_the_same_peer():
    s = sched(il.Interlocking(2), 1)
    plan = post_plan(s, 1)
    # The stream from above: right after this step's activation went up (nothing sent up after that).
    send_up = position(s, S.SendActivation)
    recv_stream = position(s, S.RecvStream)
    assert (2, S.stream_tag(recv_stream and s[recv_stream].loss, s[recv_stream].hops_left)) in plan.same[send_up]
    # The next activation from below: right after this step's last stream went down, for the next step.
    send_down = max(i for i, a in enumerate(s) if isinstance(a, S.SendStream))
    assert plan.next[send_down] == ((0, S.ACTIVATION_TAG),)
    assert plan.next_step_receives() == [(0, S.ACTIVATION_TAG)]


def test_local_posts_the_next_activation_as_soon_as_this_one_is_taken():
    s = sched(il.Local(), 2)
    plan = post_plan(s, 2)
    assert plan.same == {} and plan.next == {0: ((1, S.ACTIVATION_TAG),)}  # nothing is ever sent down


def test_first_component_and_end_to_end_top_receive_only_what_the_rule_allows():
    assert post_plan(sched(il.Local(), 0), 0) == post_plan((), 0)  # receives nothing
    s = sched(il.EndToEnd(), 3)
    plan = post_plan(s, 3)
    # The top sends its stream down after receiving the activation: the next activation waits for that send.
    send_down = position(s, S.SendStream)
    assert plan.next == {send_down: ((2, S.ACTIVATION_TAG),)} and plan.same == {}


def _recv_key(a, k):
    if isinstance(a, S.RecvStream):
        return k + 1, S.stream_tag(a.loss, a.hops_left, a.mb)
    if isinstance(a, S.RecvActivation):
        return k - 1, S.activation_tag(a.mb)
    return None


PEER_OF_SEND = {S.SendActivation: +1, S.SendStream: -1}


def test_posts_keep_each_channel_in_order_and_never_cross_a_send_to_the_same_peer():
    for strategy in (il.Interlocking(3, "sum"), il.Interlocking(2, "sum"), il.Interlocking(2), il.EndToEnd()):
        for split, m in ((False, 1), (True, 1), (None, 2), (None, 4)):
            for k in range(4):
                s = sched(strategy, k, split_backward=split, microbatches=m)
                plan = post_plan(s, k)
                # Replay two steps: post as the worker does, take as the schedule does.
                queue = {k - 1: [], k + 1: []}
                for r in plan.next_step_receives():
                    queue[r[0]].append(r)
                for step in range(2):
                    for j, a in enumerate(s):
                        key = _recv_key(a, k)
                        if key is not None:
                            if queue[key[0]]:
                                assert queue[key[0]].pop(0) == key, (strategy.name, k, step, j)  # in order
                        peer = PEER_OF_SEND.get(type(a))
                        if peer is not None:  # NCCL's rule: no send to a peer with a receive from it posted
                            assert not queue[k + peer], (strategy.name, split, k, j)
                        for r in plan.same.get(j, ()):
                            queue[r[0]].append(r)
                        for r in plan.next.get(j, ()) if step == 0 else ():
                            queue[r[0]].append(r)
                assert not queue[k - 1] and not queue[k + 1]
