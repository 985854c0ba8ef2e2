"""The clock: the paper's closed forms, and the critical-path simulation of our schedules.

Unit accounting (ComputeCosts.units): Forward 1; a backward pass 1 split into its
input-gradient part (``split``) and weight-gradient part (1 - split); FullGrad costs both
parts (1); a WeightGrad costs only its weight part if an input gradient already went
through the component's graph this step, else both parts (1); HeadLoss, sends,
receives and Update cost 0. So every plain backward is 1 unit, as in the paper.
"""

from __future__ import annotations

import pytest

import interlock as il
from interlock.core import schedule as S
from interlock.timemodel.clock import (
    ComputeCosts,
    critical_path,
    end_to_end_time_units,
    local_time_units,
    paper_time_units,
    predict,
    step_bound,
    work_from_costs,
    work_from_records,
)
from interlock.core.schedule import build_schedule
from interlock.core.worker import ActionRecord


def schedules(strategy, K, *, batch_streams=False, split_backward=False, microbatches=1):
    # split_backward=False: the paper's plain backprop (one FullGrad where a lone stream is forwarded).
    plan = strategy.plan(K)
    return [S.build_schedule(plan, k, has_head=True, batch_streams=batch_streams, split_backward=split_backward,
                             microbatches=microbatches) for k in range(K)]


def makespan(strategy, K, steps, costs):
    return predict(schedules(strategy, K), costs, steps=steps).makespan_s


# -- closed forms -----------------------------------------------------------------------------


def test_closed_forms_by_hand():
    assert end_to_end_time_units(components=3, steps=2) == 12  # 2ab
    assert local_time_units(components=4, steps=5) == 13  # 2b + a - 1
    assert paper_time_units(components=4, steps=3, n=2) == 14  # 2bn + a - n
    assert paper_time_units(components=4, steps=3, n=4) == end_to_end_time_units(components=4, steps=3)
    assert paper_time_units(components=4, steps=3, n=1) == local_time_units(components=4, steps=3)


@pytest.mark.parametrize("kw,match", [
    (dict(components=3, steps=2, n=4), r"n=4 exceeds the 3 components; use n <= 3"),
    (dict(components=0, steps=2, n=1), r"components=0: must be an integer >= 1"),
    (dict(components=3, steps=True, n=1), r"steps=True: must be an integer >= 1"),
    (dict(components=3, steps=2, n=1.5), r"n=1.5: must be an integer >= 1"),
])
def test_closed_forms_validate(kw, match):
    with pytest.raises(ValueError, match=match):
        paper_time_units(**kw)


# -- our schedules under the paper's accounting ---------------------------------------------


@pytest.mark.parametrize("split", [0.5, 1.0])
def test_end_to_end_and_local_match_the_paper(split):
    # End-to-end uses FullGrads and one lone WeightGrad (component 1); local uses lone
    # WeightGrads: every backward is 1 unit whatever the split, as the paper counts it.
    costs = ComputeCosts.units(split=split)
    for a in range(1, 6):
        for b in range(1, 5):
            assert makespan(il.EndToEnd(), a, b, costs) == end_to_end_time_units(components=a, steps=b)
            assert makespan(il.Local(), a, b, costs) == local_time_units(components=a, steps=b)


def test_n_wise_without_split_is_the_paper_exactly():
    # Paper: each group of n components is backprop over n components, 2n units a step,
    # plus a - n to fill the pipeline: 2bn + a - n. Ours with the whole backward in the
    # input-gradient part (split=1: InputGrad 1, the weight pass of a stream already
    # input-passed 0, of a new one 1): component 1's cycle is n forwards, n-1 input passes
    # bringing L_n down, and its lone weight pass: 2n a step; the last component to finish,
    # a-n+1, ends a - n later.
    costs = ComputeCosts.units(split=1.0)
    for a in range(1, 7):
        for n in range(1, a + 1):
            for b in range(1, 5):
                assert makespan(il.Interlocking(n), a, b, costs) == paper_time_units(components=a, steps=b, n=n), (a, n, b)


def makespan_split(strategy, a, b, costs):
    plan = strategy.plan(a)
    schedules = [build_schedule(plan, k, has_head=True, split_backward=True) for k in range(a)]
    return predict(schedules, costs, steps=b).makespan_s


def test_weight_gradient_split_beats_the_paper():
    costs = ComputeCosts.units(split=0.5)
    # Input and weight passes 0.5 each, one FullGrad where a component forwards and trains
    # on its only stream (the top component): its weight half stays on the critical path.
    # Component a-1 then waits for a forward and a FullGrad above it and ends with a full
    # weight pass (its own stream is not the one it trains on): 1.5n + 1 a step, plus a - n.
    for a in range(3, 7):
        for n in range(2, a):
            for b in range(1, 5):
                assert makespan(il.Interlocking(n), a, b, costs) == b * (1.5 * n + 1) + a - n, (a, n, b)
    # split_backward: the top component also sends its input gradient first and leaves the
    # weight half for later (reused: same stream). Every cycle loses half a unit:
    # b(1.5n + 0.5) + a - n, below the paper's 2bn + a - n for every n >= 2.
    for a in range(3, 7):
        for n in range(2, a + 1):
            for b in range(1, 5):
                got = makespan_split(il.Interlocking(n), a, b, costs)
                assert got == b * (1.5 * n + 0.5) + a - n, (a, n, b)
                assert got < paper_time_units(components=a, steps=b, n=n)
    # The benchmark's case: 2-wise, K=4, b=32 steps, against plain end-to-end (2ab = 256).
    assert makespan_split(il.Interlocking(2), 4, 32, costs) / end_to_end_time_units(components=4, steps=32) == 114 / 256


# -- the lower bound on any schedule -------------------------------------------------------------


def _strategies(K):
    return [il.EndToEnd(), il.Local()] + [il.Interlocking(n, mix) for n in range(2, K + 1) for mix in ("furthest", "sum")]


@pytest.mark.parametrize("K", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("split", [0.0, 0.25, 0.5, 1.0])
@pytest.mark.parametrize("head_s", [0.0, 0.3])
@pytest.mark.parametrize("latency_s", [0.0, 0.2])
def test_default_schedules_reach_the_step_bound(K, split, head_s, latency_s):
    # The time a step adds in the long run (makespan(b+1) - makespan(b)) is the bound exactly:
    # the default schedules are optimal for these costs. Sends and receives that cost time on the
    # device cost at most two more per step (a component sends its activation up before its head).
    for message_s in (0.0, 0.05):
        costs = ComputeCosts(forward_s=1.0, input_grad_s=split, weight_grad_s=1.0 - split, head_s=head_s,
                             message_s=message_s)
        for strategy in _strategies(K):
            sched = [build_schedule(strategy.plan(K), k, has_head=True) for k in range(K)]
            slope = (predict(sched, costs, steps=31, latency_s=latency_s).makespan_s
                     - predict(sched, costs, steps=30, latency_s=latency_s).makespan_s)
            bound = step_bound(strategy.plan(K), costs, latency_s=latency_s)
            assert bound - 1e-9 <= slope <= bound + 2 * message_s + 1e-9, (strategy, message_s, slope, bound)
            if message_s == 0:
                assert slope == pytest.approx(bound, abs=1e-9), (strategy, slope, bound)


def test_step_bound_by_hand():
    units = ComputeCosts.units(split=0.5)
    # Local: forward 1, input 0.5, weight 0.5 on one component: 2 a step (the paper's 2b + a - 1).
    assert step_bound(il.Local().plan(4), units) == 2.0
    # 2-wise: forwards on k and k+1 (2), input pass on k+1 (0.5), a weight-only pass through
    # block k from its output (1): 3.5. End-to-end: 4 forwards, 3 input passes, then component 1's
    # weight-only pass (1): 6.5. Plain backprop's 2 per component (8) is not a bound, a schedule.
    assert step_bound(il.Interlocking(2).plan(4), units) == 3.5
    assert step_bound(il.EndToEnd().plan(4), units) == 6.5
    # Each boundary crossed costs its latency twice (up and down) on 2-wise's cycle.
    assert step_bound(il.Interlocking(2).plan(4), units, latency_s=0.25) == 4.0


@pytest.mark.parametrize("split", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("ratio", [0.25, 1.0, 2.0, 4.0])
def test_two_wise_is_at_least_half_of_end_to_end_on_four_components(split, ratio):
    # Whatever the costs, 2-wise's best step is at least half of end-to-end's best step on K = 4
    # (2(F + I) + W against 4(F + I) + W; half exactly when the weight part costs nothing): a
    # ratio of 0.45 is out of reach against end-to-end with the same split backward, and within
    # reach only against plain backprop (one full backward per component).
    costs = ComputeCosts(forward_s=1.0, input_grad_s=ratio * split, weight_grad_s=ratio * (1 - split))
    two = step_bound(il.Interlocking(2).plan(4), costs)
    e2e = step_bound(il.EndToEnd().plan(4), costs)
    assert two / e2e >= 0.5 - 1e-12
    plain = 4 * (costs.forward_s + costs.input_grad_s + costs.weight_grad_s)  # one FullGrad per component
    assert two / plain < 0.5 + 1e-12


def test_step_bound_validates():
    with pytest.raises(ValueError, match="GradientPlan"):
        step_bound(il.Local(), ComputeCosts.units())
    with pytest.raises(ValueError, match="ComputeCosts"):
        step_bound(il.Local().plan(2), lambda action: 1.0)
    with pytest.raises(ValueError, match="latency_s"):
        step_bound(il.Local().plan(2), ComputeCosts.units(), latency_s=-1)


@pytest.mark.parametrize("mix", ["furthest", "sum"])
@pytest.mark.parametrize("batch_streams", [False, True])
def test_every_schedule_runs_and_lies_between_bounds(mix, batch_streams):
    costs = ComputeCosts.units(split=0.5)
    K, b = 4, 3
    for n in range(1, K + 1):
        sched = schedules(il.Interlocking(n, mix), K, batch_streams=batch_streams)
        run = predict(sched, costs, steps=b)
        serial = sum(sum(costs.durations(s)) for s in sched) * b
        assert max(run.busy_s) <= run.makespan_s <= serial
        assert all(abs(busy + idle - run.makespan_s) < 1e-12 for busy, idle in zip(run.busy_s, run.idle_s))
        assert len(run.records) == sum(len(s) for s in sched) * b


# -- the simulation by hand -----------------------------------------------------------------


def test_local_two_components_by_hand():
    run = predict(schedules(il.Local(), 2), ComputeCosts.units(), steps=2)
    spans = {k: [(r.action.kind, r.start_s, r.end_s) for r in run.records if r.component == k] for k in (0, 1)}
    assert spans[0] == [
        ("Forward", 0, 1), ("SendActivation", 1, 1), ("HeadLoss", 1, 1), ("WeightGrad", 1, 2), ("Update", 2, 2),
        ("Forward", 2, 3), ("SendActivation", 3, 3), ("HeadLoss", 3, 3), ("WeightGrad", 3, 4), ("Update", 4, 4),
    ]
    # Component 2 starts step 2 when step 2's activation arrives (3), not when it is free (3 too: no barrier).
    assert spans[1] == [
        ("RecvActivation", 1, 1), ("Forward", 1, 2), ("HeadLoss", 2, 2), ("WeightGrad", 2, 3), ("Update", 3, 3),
        ("RecvActivation", 3, 3), ("Forward", 3, 4), ("HeadLoss", 4, 4), ("WeightGrad", 4, 5), ("Update", 5, 5),
    ]
    assert run.makespan_s == 5 and run.busy_s == (4, 4) and run.idle_s == (1, 1)


def test_latency_delays_every_message():
    # End-to-end, K=2, one step: F1 [0,1], activation lands at 1+L, F2 [1+L, 2+L],
    # FullGrad [2+L, 3+L], the stream lands at 3+2L, component 1's WeightGrad ends at 4+2L.
    run = predict(schedules(il.EndToEnd(), 2), ComputeCosts.units(), steps=1, latency_s=0.25)
    assert run.makespan_s == 4.5
    recv = [r for r in run.records if isinstance(r.action, S.RecvStream)]
    assert [(r.start_s, r.end_s) for r in recv] == [(3.5, 3.5)]


def test_a_store_and_forward_link_carries_one_message_at_a_time():
    # Local, K = 2, 4 micro-batches of a unit-cost batch, every message held 1 unit: component 1
    # sends 4 activations a step, a quarter unit apart. With any number in flight the link only
    # delays them (2 units a step, the compute); holding one at a time it carries 4 units a step.
    costs = ComputeCosts.units().per_microbatch(4)
    sched = schedules(il.Local(), 2, microbatches=4)

    def per_step(**link):
        return (predict(sched, costs, steps=31, latency_s=1.0, **link).makespan_s
                - predict(sched, costs, steps=30, latency_s=1.0, **link).makespan_s)

    assert per_step() == pytest.approx(2.0)
    assert per_step(store_and_forward=True) == pytest.approx(4.0)
    # The arrivals of one step by hand: sends end at 0.25, 0.5, 0.75, 1; each arrival is the
    # later of its send's end and the previous arrival, plus 1.
    run = predict(sched, costs, steps=1, latency_s=1.0, store_and_forward=True)
    recv = [r.start_s for r in run.records if isinstance(r.action, S.RecvActivation)]
    assert recv == pytest.approx([1.25, 2.25, 3.25, 4.25])


def test_steps_pipeline_without_a_barrier():
    # Local, K=3, component 3 twice as slow: components 1 and 2 run ahead, so the run
    # takes component 3's work after its first activation: 2 + 3 * 4 = 14, not 3 * (1 + 1 + 4).
    sched = schedules(il.Local(), 3)
    def cost(k):
        return lambda a: (2.0 if k == 2 else 1.0) * (1.0 if isinstance(a, (S.Forward, S.WeightGrad)) else 0.0)
    work = [work_from_costs([s], cost(k), steps=3)[0] for k, s in enumerate(sched)]
    assert critical_path(work).makespan_s == 14


def test_mismatched_tags_and_deadlocks_are_errors():
    F = 1.0
    mismatched = [
        [(S.Forward(), F), (S.SendActivation(), 0.0), (S.RecvStream(1, 0), 0.0)],
        [(S.RecvActivation(), 0.0), (S.Forward(), F), (S.SendStream(1, 1), 0.0)],
    ]
    with pytest.raises(ValueError, match=r"component 1's RecvStream expects \('stream', 1, 0\).*\('stream', 1, 1\)"):
        critical_path(mismatched)
    deadlocked = [[(S.Forward(), F)], [(S.RecvActivation(), 0.0), (S.Forward(), F)]]
    with pytest.raises(ValueError, match=r"deadlocks.*2: RecvActivation"):
        critical_path(deadlocked)
    with pytest.raises(ValueError, match=r"talks to component 2, but the work covers components 1..1"):
        critical_path([[(S.Forward(), F), (S.SendActivation(), 0.0)]])
    with pytest.raises(ValueError, match=r"must be a finite number of seconds >= 0"):
        critical_path([[(S.Forward(), -1.0)]])
    with pytest.raises(ValueError, match=r"split=1.5"):
        ComputeCosts.units(split=1.5)


# -- work from measured records -------------------------------------------------------------


def _records(durations_per_step):
    """Synthetic records of Local, K=2, laid out one after the other (times do not matter, only durations)."""
    sched = schedules(il.Local(), 2)
    out, t = [], 0.0
    for step in durations_per_step:
        for k, s in enumerate(sched):
            for a, d in zip(s, step[k]):
                out.append(ActionRecord(k, a, t, t + d))
                t += d + 0.5  # gaps (another component's turn) are not work
    return sched, out


def test_work_from_records_replays_and_averages():
    # Per component: Recv?, Forward, Send?, HeadLoss, WeightGrad, Update.
    step1 = [[1.0, 0.0, 0.0, 1.0, 0.0], [9.0, 2.0, 0.0, 1.0, 0.0]]  # component 2's receive "waited" 9 s
    step2 = [[3.0, 0.0, 0.0, 1.0, 0.0], [5.0, 2.0, 0.0, 3.0, 0.0]]
    sched, records = _records([step1, step2])
    replay = work_from_records(records)
    assert [d for _, d in replay[0]] == step1[0] + step2[0]
    assert [d for _, d in replay[1]] == [0.0] + step1[1][1:] + [0.0] + step2[1][1:]  # receives charged 0
    # Replay: component 1 [0,1] F, [1,2] WG, [2,5] F, [5,6] WG; component 2 F [1,3], WG [3,4], F [5,7], WG [7,10].
    assert critical_path(replay).makespan_s == 10
    mean = work_from_records(records, mode="mean", steps=3)
    assert [d for _, d in mean[0]] == [2.0, 0.0, 0.0, 1.0, 0.0] * 3
    assert [d for _, d in mean[1]] == [0.0, 2.0, 0.0, 2.0, 0.0] * 3
    assert [a for a, _ in mean[1]] == list(sched[1]) * 3


def test_work_from_records_validates():
    sched, records = _records([[[1.0] * 5, [1.0] * 5]])
    with pytest.raises(ValueError, match="do not end with an Update"):
        work_from_records(records[:-1])
    with pytest.raises(ValueError, match="lack components \\[1\\]"):
        work_from_records([r for r in records if r.component == 1])
    with pytest.raises(ValueError, match="pass steps only with mode='mean'"):
        work_from_records(records, steps=2)
    other = [ActionRecord(1, S.Forward(), 0.0, 1.0), ActionRecord(1, S.Update(), 1.0, 1.0)]
    with pytest.raises(ValueError, match="component 2 ran different actions in step 2"):
        work_from_records(records + [ActionRecord(0, a, 9.0, 9.0) for a in sched[0]] + other)


def test_pipeline_schedules_on_the_clock_match_their_closed_forms():
    # Unit costs split in halves, K stages, m micro-batches: GPipe and 1F1B take (m + K - 1)
    # forward and (m + K - 1) backward slots of 1/m each per step; zero bubble fills part of it.
    from interlock.timemodel.emulate import emulated_costs
    from interlock.timemodel.pipeline_clock import pipeline_order, predict_pipeline

    costs = emulated_costs(forward_s=1.0, backward_s=1.0, split=0.5)
    for K, m in ((2, 2), (4, 4), (4, 8)):
        for schedule in ("gpipe", "1f1b"):
            assert predict_pipeline(schedule, costs, num_components=K, microbatches=m, steps=3) == pytest.approx(
                3 * 2 * (m + K - 1) / m)
        zb = predict_pipeline("zb1p", costs, num_components=K, microbatches=m, steps=1)
        assert 2 <= zb < 2 * (m + K - 1) / m  # never below the work itself, always below 1F1B
        for order in pipeline_order("zb1p", K, m):  # every micro-batch's forward, input and weight pass, once
            assert sorted(order) == sorted([(k, i) for i in range(m) for k in "FIW"])
    # A link latency delays each hop: GPipe's step grows by the 2 (K - 1) hops of its critical path.
    slow = predict_pipeline("gpipe", costs, num_components=4, microbatches=4, steps=1, latency_s=0.5)
    assert slow == pytest.approx(2 * 7 / 4 + 2 * 3 * 0.5)
    # A store-and-forward link holds one message at a time. GPipe, K = 2, m = 2, latency 1 (a
    # micro-batch's forward and backward 0.5 each): rank 1 gets the activations at 1.5 and 2.5
    # (not 2), runs F F B B until 4, rank 0 gets the gradients at 4.5 and 5.5 and ends at 6 (not 5).
    # Costs per rank: rank 2 twice as slow (micro-batch forward and backward 1 each, rank 1's 0.5).
    # Rank 2 runs F F B B from 0.5 to 4.5; rank 1 takes the gradients at 3.5 and 4.5 and ends at 5.
    slow_top = [costs, emulated_costs(forward_s=2.0, backward_s=2.0, split=0.5)]
    assert predict_pipeline("gpipe", slow_top, num_components=2, microbatches=2, steps=1) == pytest.approx(5.0)
    with pytest.raises(ValueError, match=r"one per rank \(3\)"):
        predict_pipeline("gpipe", slow_top, num_components=3, microbatches=3, steps=1)
    link = dict(num_components=2, microbatches=2, steps=1, latency_s=1.0)
    assert predict_pipeline("gpipe", costs, **link) == pytest.approx(5.0)
    assert predict_pipeline("gpipe", costs, **link, store_and_forward=True) == pytest.approx(6.0)


def test_a_new_action_kind_needs_only_its_metadata():
    # An action kind defined outside the time model and the trace (as a new one in schedule.py would
    # be): a checksum sent up after the activation. The clock pairs it, prices it and the trace
    # draws it by its fields alone.
    from dataclasses import dataclass
    from typing import ClassVar

    from interlock.measure.trace import category, component_times

    @dataclass(frozen=True)
    class SendChecksum(S.Action):
        comm: ClassVar[str | None] = "send"
        peer_offset: ClassVar[int] = 1
        category: ClassVar[str | None] = "communication"

        @property
        def tag(self) -> tuple:
            return ("checksum",)

    @dataclass(frozen=True)
    class RecvChecksum(SendChecksum):
        comm: ClassVar[str | None] = "recv"
        peer_offset: ClassVar[int] = -1

    @dataclass(frozen=True)
    class Verify(S.Action):
        category: ClassVar[str | None] = "head"

    below = [S.Forward(), S.SendActivation(), SendChecksum(), S.Update()]
    above = [S.RecvActivation(), RecvChecksum(), Verify(), S.Forward(), S.Update()]
    costs = ComputeCosts(forward_s=1.0, input_grad_s=0.0, weight_grad_s=0.0, head_s=0.5, message_s=0.25)
    assert costs.durations(below) == (1.0, 0.25, 0.25, 0.0) and costs.durations(above) == (0.25, 0.25, 0.5, 1.0, 0.0)
    run = predict([below, above], costs, steps=1, latency_s=1.0)
    # The checksum lands at 1.5 + 1; the activation at 1.25 + 1: Verify [2.75, 3.25], Forward [3.25, 4.25].
    spans = {r.action.kind: (r.start_s, r.end_s) for r in run.records if r.component == 1}
    assert spans["RecvChecksum"] == (2.5, 2.75) and spans["Verify"] == (2.75, 3.25) and run.makespan_s == 4.25
    assert [category(r.action) for r in run.records if r.component == 1] == [
        "communication", "communication", "head", "forward", "update"]
    t1, t2 = component_times(list(run.records))
    # Sends count as communication, receives as waiting (here only their local cost), the rest as busy.
    assert (t1["comm_s"], t1["busy_s"], t2["wait_s"], t2["busy_s"], t2["steps"]) == (0.5, 1.0, 0.5, 1.5, 1)
    # A checksum whose tag the receiver does not expect is caught as any other mismatch.
    with pytest.raises(ValueError, match="the schedules disagree"):
        predict([[S.Forward(), SendChecksum(), S.SendActivation(), S.Update()], above], costs, steps=1)
