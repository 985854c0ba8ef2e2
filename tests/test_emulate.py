"""Emulated compute: sleeps follow the accounting, and the clock predicts what they measure.

Sleeps overshoot (scheduler latency on a shared machine), so timings are checked with a
one-sided generous margin: never shorter than asked (less a little clock slack), at most
SLACK longer. The sleeps are distinct enough (20/30/50 ms) that a wrong charge fails.
"""

from __future__ import annotations

import threading
import time

import pytest
import torch
import torch.nn.functional as F

import interlock as il
from interlock.timemodel import clock
from interlock.timemodel.emulate import EmulatedBlock, emulated_batch, emulated_costs, emulated_net

FWD, IN, W = 0.02, 0.03, 0.05
SLACK = 0.015  # seconds a sleep may overshoot on a loaded machine


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def assert_took(seconds, expected):
    assert expected - 1e-3 <= seconds <= expected + SLACK, f"took {seconds * 1e3:.1f} ms, expected {expected * 1e3:.1f} ms"


def block():
    return EmulatedBlock(forward_s=FWD, input_grad_s=IN, weight_grad_s=W, features=3)


def test_passes_sleep_by_what_they_ask_and_give_exact_gradients():
    b = block()
    with torch.no_grad():
        b.weight.copy_(torch.tensor([1.0, 2.0, -1.0]))
    x = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]], requires_grad=True)
    g = torch.tensor([[1.0, 0.0, 2.0], [3.0, 1.0, -1.0]])
    want_w = torch.tensor([1 * 1 + 3 * 0.5, 0 * 2 + 1 * -1.0, 2 * 3 + -1 * 2.0])

    took, y = timed(lambda: b(x))
    assert_took(took, FWD)
    torch.testing.assert_close(y, x.detach() * b.weight.detach())

    took, (gx,) = timed(lambda: torch.autograd.grad(y, x, g, retain_graph=True))  # input only
    assert_took(took, IN)
    torch.testing.assert_close(gx, g * torch.tensor([1.0, 2.0, -1.0]))

    # A weight-only pass from the output walks the block's internal layers again: both parts.
    took, _ = timed(lambda: torch.autograd.backward(y, g, inputs=[b.weight], retain_graph=True))
    assert_took(took, IN + W)
    torch.testing.assert_close(b.weight.grad, want_w)

    took, _ = timed(lambda: torch.autograd.backward(y, g, inputs=[x, b.weight]))  # both
    assert_took(took, IN + W)


def test_the_weight_pass_from_kept_gradients_costs_only_the_weight_part():
    # interlock.core.backward: the input pass keeps the gradients where the weight enters; the weight
    # pass starts there, for one stream or for the sum of several (a new tensor).
    from interlock.core.backward import KeptGradients

    b = block()
    x = torch.randn(2, 3, requires_grad=True)
    g1, g2 = torch.randn(2, 3), torch.randn(2, 3)
    y = b(x)
    kept = KeptGradients(y, x, [b.weight])
    took, gx = timed(lambda: kept.input_grad(y, x, g1))
    assert_took(took, IN)
    torch.testing.assert_close(gx, g1 * b.weight.detach())
    took, _ = timed(lambda: kept.input_grad(y, x, g2))
    assert_took(took, IN)
    took, _ = timed(lambda: kept.weight_pass(retain_graph=False))
    assert_took(took, W)
    torch.testing.assert_close(b.weight.grad, ((g1 + g2) * x.detach()).sum(0))


def test_first_component_and_batched_streams():
    b = block()
    x = torch.randn(4, 3)  # the network input: no input gradient exists
    y = b(x)
    took, _ = timed(lambda: torch.autograd.backward(y, torch.ones_like(y), inputs=[b.weight]))
    assert_took(took, IN + W)  # nothing was kept (no input gradient exists): the full pass

    a = torch.randn(4, 3, requires_grad=True)
    y = b(a)
    vs = torch.randn(2, 4, 3)  # two streams in one batched call: one input pass
    took, (gs,) = timed(lambda: torch.autograd.grad(y, a, vs, is_grads_batched=True))
    assert_took(took, IN)
    torch.testing.assert_close(gs, vs * b.weight.detach())


def test_dry_runs_do_not_sleep_and_bad_arguments_say_what_to_change():
    net = emulated_net(3, forward_s=0.5, backward_s=0.5)
    emulated_net(1, forward_s=0.0, backward_s=0.0).check(torch.randn(2, 8))  # the first meta dry run warms up slowly
    took, _ = timed(lambda: net.check(torch.randn(2, 8)))  # meta device: no sleeps
    assert took < 0.5
    with pytest.raises(ValueError, match=r"forward_s=-1: must be a finite number of seconds >= 0"):
        EmulatedBlock(forward_s=-1, input_grad_s=0, weight_grad_s=0, features=2)
    with pytest.raises(ValueError, match=r"split=2: the input-gradient share"):
        emulated_net(2, forward_s=0.0, backward_s=0.0, split=2)
    with pytest.raises(ValueError, match=r"expects inputs of shape \(..., 8\)"):
        net.blocks[0](torch.randn(2, 5))


def test_sleeps_overlap_across_threads():
    # What lets K processes overlap on 2 cores: a sleeping block holds neither CPU nor GIL.
    b = EmulatedBlock(forward_s=0.1, input_grad_s=0.0, weight_grad_s=0.0, features=2)
    threads = [threading.Thread(target=b, args=(torch.zeros(1, 2),)) for _ in range(4)]
    took, _ = timed(lambda: ([t.start() for t in threads], [t.join() for t in threads]))
    assert took < 0.1 + 0.05  # not 4 x 0.1


def test_batch_is_seeded_and_shaped():
    x, y = emulated_batch(5, features=6, classes=3, seed=7)
    x2, y2 = emulated_batch(5, features=6, classes=3, seed=7)
    assert x.shape == (5, 6) and y.shape == (5,) and int(y.min()) >= 0 and int(y.max()) < 3
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, emulated_batch(5, features=6, classes=3, seed=8)[0])
    a, b = emulated_net(2, forward_s=0, backward_s=0, seed=1), emulated_net(2, forward_s=0, backward_s=0, seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("strategy", [il.Local(), il.Interlocking(2), il.EndToEnd(), il.Interlocking(3, "sum")], ids=lambda s: s.name)
def test_engine_measurements_follow_the_clock(strategy):
    K, fwd, bwd = 3, 0.02, 0.02
    net = emulated_net(K, forward_s=fwd, backward_s=bwd, split=0.5)
    engine = il.Engine(net, strategy, optimizer=lambda p: torch.optim.SGD(p, lr=0.1), loss_fn=F.cross_entropy)
    x, y = emulated_batch(8, seed=0)
    engine.step(x, y)  # warm-up (first calls of the head and optimizer)
    # A loaded machine can stretch any one sleep, so each action's upper limit is checked on its
    # fastest of 4 steps (every step must still take at least what the accounting charges).
    steps = [engine.step(x, y).records for _ in range(4)]
    costs = emulated_costs(forward_s=fwd, backward_s=bwd, split=0.5)
    for w in engine.workers:
        expected = costs.durations(w.schedule)
        measured = [[r for r in records if r.component == w.index] for records in steps]
        for records in measured:
            assert [r.action for r in records] == list(w.schedule)
            for r, e in zip(records, expected):
                assert r.duration_s >= e - 1e-3, (w.index, r.action, r.duration_s, e)
        for i, e in enumerate(expected):
            fastest = min(records[i].duration_s for records in measured)
            assert fastest <= e + SLACK, (w.index, w.schedule[i], fastest, e)
    schedules = [w.schedule for w in engine.workers]
    predicted = clock.predict(schedules, costs, steps=2).makespan_s
    replayed = [clock.critical_path(clock.work_from_records(a + b, mode="replay")).makespan_s
                for a, b in zip(steps[0::2], steps[1::2])]
    # Every action overshoots a little; the critical path holds at most ~20 of them.
    assert all(t >= predicted - 1e-3 for t in replayed)
    assert min(replayed) <= predicted + 0.03


def test_pipeline_stage_costs_come_from_an_end_to_end_runs_actions():
    # Emulated blocks sleep per call, so per micro-batch: forward 10 ms, backward 20 ms (half input,
    # half weight), 2 micro-batches a batch. Per whole batch every stage's forward is then 20 ms and
    # its input and weight parts 20 ms each, except the first stage's: no input gradient, and a
    # weight pass that walks the block (40 ms).
    from interlock.timemodel.pipeline_clock import stage_costs_from_records

    K, m, steps = 3, 2, 2
    net = emulated_net(K, forward_s=0.02 / m, backward_s=0.04 / m, split=0.5)
    engine = il.Engine(net, il.EndToEnd(), optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
                                loss_fn=F.cross_entropy, split_backward=True, microbatches=m)
    x, y = emulated_batch(8, seed=0)
    engine.step(x, y)
    records = [r for _ in range(steps) for r in engine.step(x, y).records]
    costs = stage_costs_from_records(records, num_components=K, microbatches=m, steps=steps)
    want = [(0.02, 0.0, 0.04)] + [(0.02, 0.02, 0.02)] * (K - 1)
    for k, (c, (f, i, w)) in enumerate(zip(costs, want)):
        for got, expected in ((c.forward_s, f), (c.input_grad_s, i), (c.weight_grad_s, w)):
            assert expected - 1e-3 <= got <= expected + 2 * SLACK, (k, got, expected)
    with pytest.raises(ValueError, match="no action of component 4"):
        stage_costs_from_records(records, num_components=4, microbatches=m, steps=steps)
