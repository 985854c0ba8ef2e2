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
