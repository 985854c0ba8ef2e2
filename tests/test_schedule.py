"""Plans and schedules: stream reach, message counts and the pipelining order."""

from __future__ import annotations

import pytest
import torch

import interlock as il
from interlock.core import schedule as S
from reference import PARTS


@pytest.mark.parametrize("K", [1, 2, 4, 6])
@pytest.mark.parametrize("mix", ["furthest", "sum"])
def test_plan_matches_the_contract_table(K, mix):
    for n in range(1, K + 1):
        plan = il.Interlocking(n, mix).plan(K)
        for k in range(K):
            m = min(k + n - 1, K - 1)
            assert plan.trains[k] == ((m,) if mix == "furthest" else tuple(range(k, m + 1)))
        assert plan.width == n  # no stream crosses more than n-1 boundaries
    assert il.EndToEnd().plan(K) == il.Interlocking(K).plan(K)
    assert il.Local().plan(K).trains == tuple((k,) for k in range(K))


def _messages(strategy, K):
    blocks, heads, x, y, loss_fn = PARTS["mlp"](K, seed=0)
    net = il.ComponentNet(blocks=blocks, heads=heads)
    engine = il.Engine(net, strategy, optimizer=lambda p: torch.optim.SGD(p, lr=0.1), loss_fn=loss_fn)
    engine.step(x, y)
    assert engine.runtime.transport.pending() == 0
    sends = [r.action for r in engine.step(x, y).records if isinstance(r.action, S.SendStream)]
    return engine.runtime.transport.messages_sent // 2, sends


def test_local_sends_no_backward_messages():
    total, streams = _messages(il.Local(), 4)
    assert streams == [] and total == 3  # only the three activations


@pytest.mark.parametrize("n,mix,expected", [(2, "furthest", 3), (3, "furthest", 4), (4, "furthest", 3), (2, "sum", 3), (3, "sum", 5)])
def test_stream_messages_are_one_per_boundary_crossed(n, mix, expected):
    # K=4. furthest n=3: L_3 and L_4 cross two boundaries each (L_1, L_2 train no block);
    # furthest n=4 is end-to-end: one stream (L_4) crosses three boundaries.
    total, streams = _messages(il.Interlocking(n, mix), 4)
    assert len(streams) == expected and total == 3 + expected
    assert all(s.hops_left <= n - 2 for s in streams)


@pytest.mark.parametrize("mix", ["furthest", "sum"])
def test_own_stream_is_sent_before_waiting_for_streams_from_above(mix):
    plan = il.Interlocking(3, mix).plan(6)
    for k in range(1, 5):
        acts = S.build_schedule(plan, k, has_head=True)
        kinds = [a.kind for a in acts]
        first_send = kinds.index("SendStream")
        first_recv = kinds.index("RecvStream")
        if k in plan.continuing(k):  # (furthest: L_k trains a block only if k >= n-1, 0-based)
            assert acts[first_send].loss == k and first_send < first_recv
        # Each arriving stream that goes on is forwarded before the next is awaited.
        for i, a in enumerate(acts):
            if isinstance(a, S.RecvStream) and a.loss in plan.continuing(k):
                assert kinds[i + 1 : i + 3] == ["InputGrad", "SendStream"]
        # The weight gradient comes after every send: off the critical path.
        assert kinds.index("WeightGrad") > max(i for i, kd in enumerate(kinds) if kd == "SendStream")
        assert [a for a in acts if getattr(a, "last", False)] == [acts[kinds.index("WeightGrad")]]


def test_end_to_end_is_one_backward_pass_per_component():
    plan = il.EndToEnd().plan(3)
    kinds = [[a.kind for a in S.build_schedule(plan, k, has_head=True, split_backward=False)] for k in range(3)]
    assert kinds[0] == ["Forward", "SendActivation", "HeadLoss", "RecvStream", "WeightGrad", "Update"]
    assert kinds[1] == ["RecvActivation", "Forward", "SendActivation", "HeadLoss", "RecvStream", "FullGrad", "SendStream", "Update"]
    assert kinds[2] == ["RecvActivation", "Forward", "HeadLoss", "FullGrad", "SendStream", "Update"]


def test_the_simulated_engine_runs_one_pass_by_default_and_the_distributed_rule_splits():
    # One process runs the components one after another: a split shortens nothing there, so the
    # simulated engine's default is plain backprop; the builder's rule (the distributed engines'
    # default, None) splits every lone stream; the simulated engine splits when asked.
    blocks, heads, x, y, loss_fn = PARTS["mlp"](3, seed=0)
    sgd = lambda p: torch.optim.SGD(p, lr=0.1)

    def kinds(**kw):
        engine = il.Engine(il.ComponentNet(blocks=blocks, heads=heads), il.EndToEnd(), optimizer=sgd,
                                    loss_fn=loss_fn, **kw)
        return [[a.kind for a in w.schedule] for w in engine.workers]

    one_pass = [[a.kind for a in S.build_schedule(il.EndToEnd().plan(3), k, has_head=True, split_backward=False)]
                for k in range(3)]
    split = [[a.kind for a in S.build_schedule(il.EndToEnd().plan(3), k, has_head=True)] for k in range(3)]
    assert kinds() == one_pass and "FullGrad" in one_pass[2]
    assert kinds(split_backward=True) == split and "FullGrad" not in split[2] and "InputGrad" in split[2]


_ACTION_CLASSES = [S.RecvActivation, S.Forward, S.SendActivation, S.HeadLoss, S.RecvStream, S.InputGrad,
                   S.FullGrad, S.WeightGrad, S.SendStream, S.Update]


def test_every_action_class_declares_its_metadata():
    assert set(S.BACKWARD_CATEGORIES) <= set(S.CATEGORIES)
    for cls in _ACTION_CLASSES:
        assert cls.category in S.CATEGORIES, cls
        assert cls.comm in (None, "recv", "send"), cls
        assert (cls.comm is None) == (cls.peer_offset == 0) == (cls.category != "communication"), cls
    assert S.Action.category is None  # the base class is no action of a schedule
    # A message's peer and tag come from the fields; compute has neither.
    recv, send, fwd = S.RecvStream(2, 1, mb=3), S.SendActivation(mb=0), S.Forward()
    assert (recv.peer(4), recv.recv_from(4), recv.send_to(4), recv.tag) == (5, 5, None, ("stream", 2, 1, 3))
    assert recv.incoming(4) == (5, ("stream", 2, 1, 3)) and recv.outgoing(4) is None
    assert (send.peer(4), send.send_to(4), send.recv_from(4), send.tag) == (5, 5, None, ("activation", 0))
    assert send.outgoing(4) == (5, ("activation", 0)) and send.incoming(4) is None
    assert (fwd.peer(4), fwd.tag, fwd.incoming(4), fwd.outgoing(4)) == (None, None, None, None)
    assert S.SendStream(0, 0).send_to(1) == 0 and S.RecvActivation().recv_from(1) == 0


@pytest.mark.parametrize("strategy", [il.Local(), il.Interlocking(2), il.Interlocking(3, "sum"), il.EndToEnd()])
@pytest.mark.parametrize("split,m,batch", [(False, 1, False), (None, 1, False), (None, 3, False), (None, 2, True)])
def test_every_receive_pairs_with_a_send_of_its_neighbour_by_fields_alone(strategy, split, m, batch):
    # The pairing every consumer (clock, pre-posting, runtimes) relies on, derived only from
    # recv_from / send_to / tag: per ordered channel, the receives take exactly the sends, in order.
    K = 4
    plan = strategy.plan(K)
    scheds = [S.build_schedule(plan, k, has_head=True, split_backward=split, microbatches=m, batch_streams=batch)
              for k in range(K)]
    sent: dict[tuple[int, int], list[tuple]] = {}
    taken: dict[tuple[int, int], list[tuple]] = {}
    for k, sched in enumerate(scheds):
        for a in sched:
            assert a.category in S.CATEGORIES
            if (out := a.outgoing(k)) is not None:
                assert 0 <= out[0] < K and abs(out[0] - k) == 1 and out[1] is not None
                sent.setdefault((k, out[0]), []).append(out[1])
            if (inc := a.incoming(k)) is not None:
                assert 0 <= inc[0] < K and abs(inc[0] - k) == 1 and inc[1] is not None
                taken.setdefault((inc[0], k), []).append(inc[1])
    assert sent == taken
    # Activations up on every boundary, m per step; the stream count is the plan's boundary crossings.
    assert all(sent[(k, k + 1)][:m] == [S.activation_tag(None if m == 1 else i) for i in range(m)] for k in range(K - 1))
    crossings = sum(len(plan.continuing(k)) for k in range(1, K))
    assert sum(len(v) for (src, dst), v in sent.items() if dst < src) == crossings * m
