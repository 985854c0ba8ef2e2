"""Interlocking with micro-batches (engine option ``microbatches=m``) and the split weight pass.

The contract with m micro-batches: the step's loss is the mean over micro-batches of their
mean losses, so without batch statistics every component's update equals the whole batch's
to float rounding; with BatchNorm each micro-batch is normalised by its own statistics (GPipe).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

import interlock as il
from interlock.timemodel import clock
from interlock.core import schedule as S
from interlock.timemodel.emulate import emulated_batch, emulated_costs, emulated_net
from reference import PARTS, contract_grads, state_of

import dist_helpers as H

STEPS = 3


def sgd(params):
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-3)


def batches_for(x, y, steps=STEPS):
    return [(x.roll(s, 0), y.roll(s, 0)) for s in range(steps)]


def train(K, strategy, *, parts="mlp", seed=0, heads_none=(), weights=None, **opts):
    blocks, heads, x, y, loss_fn = PARTS[parts](K, seed=seed)
    heads = [None if k in heads_none else h for k, h in enumerate(heads)]
    net = il.ComponentNet(blocks=blocks, heads=heads)
    engine = il.Engine(net, strategy, optimizer=sgd, loss_fn=loss_fn, loss_weights=weights, **opts)
    losses = [engine.step(bx, by).losses for bx, by in batches_for(x, y)]
    return net, losses, engine


def plain_cases(K):
    """The distributed tests' strategy cases whose options are schedule options (the ones with their own
    loss weights or test-only "_" options are covered by the tests below and tests/test_distributed.py)."""
    return [c for c in H.strategy_cases(K) if not any(k == "loss_weights" or k.startswith("_") for k in c[2])]


def assert_close_states(a, b, what):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=lambda m: f"{what} {key}: {m}")


def assert_close_losses(a, b, what):
    for la, lb in zip(a, b):
        for p, q in zip(la, lb):
            assert (math.isnan(p) and math.isnan(q)) or abs(p - q) <= 1e-5 * max(1.0, abs(q)), (what, la, lb)


# -- micro-batched == whole batch ---------------------------------------------------------------------


@pytest.mark.parametrize("K", [2, 3, 4])
def test_microbatched_equals_whole_batch_on_every_strategy(K):
    weights = [0.5 + 0.5 * k for k in range(K)]
    for name, strategy, opts in plain_cases(K):
        whole, whole_losses, _ = train(K, strategy, seed=K, weights=weights, **opts)
        for m in (1, 2, 4):
            net, losses, engine = train(K, strategy, seed=K, weights=weights, microbatches=m, **opts)
            assert_close_states(state_of([net]), state_of([whole]), f"{name} m={m}")
            assert_close_losses(losses, whole_losses, f"{name} m={m}")
            if m > 1:
                assert all(w.schedule.count(S.Update()) == 1 for w in engine.workers)  # one update per step
                assert engine.runtime.transport.pending() == 0


@pytest.mark.parametrize("strategy,heads_none", [(il.EndToEnd(), (0, 1)), (il.Interlocking(2), (0,)), (il.Interlocking(3, "sum"), ())])
def test_microbatched_with_missing_heads_matches_the_brute_force_contract(strategy, heads_none):
    # A head that trains nothing may be None; the reference is the whole-batch contract.
    K, m = 4, 4
    weights = [1.0, 0.5, 2.0, 1.5]
    net, losses, _ = train(K, strategy, seed=9, heads_none=heads_none, weights=weights, microbatches=m)
    whole, whole_losses, _ = train(K, strategy, seed=9, heads_none=heads_none, weights=weights)
    assert_close_states(state_of([net]), state_of([whole]), strategy.name)
    assert_close_losses(losses, whole_losses, strategy.name)
    assert all(math.isnan(l[k]) for l in losses for k in heads_none)


def test_one_microbatch_is_todays_engine_bit_for_bit():
    for K in (2, 3):
        for name, strategy, opts in plain_cases(K):
            plan = strategy.plan(K)
            for k in range(K):
                today = S.build_schedule(plan, k, has_head=True, **opts)
                assert S.build_schedule(plan, k, has_head=True, microbatches=1, **opts) == today
                assert all(getattr(a, "mb", None) is None for a in today)
            for parts in ("mlp", "bn"):
                a, la, _ = train(K, strategy, parts=parts, seed=K, **opts)
                b, lb, _ = train(K, strategy, parts=parts, seed=K, microbatches=1, **opts)
                sa, sb = state_of([a]), state_of([b])
                assert all(torch.equal(sa[key], sb[key]) for key in sa), (name, parts)
                assert la == lb


def gpipe_reference(blocks, heads, batches, loss_fn, *, n, mix, m):
    """Brute force, GPipe semantics: each micro-batch's forward (its own BatchNorm statistics, running
    statistics moved once per micro-batch), the contract's gradients of (1/m) x its losses, summed."""
    blocks, heads = copy.deepcopy(blocks), copy.deepcopy(heads)
    opts = [sgd(list(b.parameters()) + list(h.parameters())) for b, h in zip(blocks, heads)]
    history = []
    for x, y in batches:
        total: dict = {}
        step_losses = []
        for xi, yi in zip(x.split(len(x) // m), y.split(len(y) // m)):
            grads, losses = contract_grads(blocks, heads, xi, yi, loss_fn, n=n, mix=mix, weights=[1.0 / m] * len(blocks))
            for p, g in grads.items():
                total[p] = total[p] + g if p in total else g
            step_losses.append(losses)
        for opt in opts:
            for group in opt.param_groups:
                for p in group["params"]:
                    p.grad = total.get(p)
            opt.step()
        history.append([sum(col) / m for col in zip(*step_losses)])
    return blocks, heads, history


@pytest.mark.parametrize("n,mix", [(1, "furthest"), (2, "furthest"), (3, "sum"), (3, "furthest")])
def test_batchnorm_normalises_each_microbatch_by_its_own_statistics(n, mix):
    K, m = 3, 2
    blocks, heads, x, y, loss_fn = PARTS["bn"](K, seed=4)
    batches = batches_for(x, y)
    ref_blocks, ref_heads, ref_losses = gpipe_reference(blocks, heads, batches, loss_fn, n=n, mix=mix, m=m)
    net, losses, _ = train(K, il.Interlocking(n, mix), parts="bn", seed=4, microbatches=m)
    assert_close_states(state_of(list(net.blocks) + list(net.heads)), state_of(ref_blocks + ref_heads), f"{n} {mix}")
    assert_close_losses(losses, ref_losses, f"{n} {mix}")
    assert all(b[1].num_batches_tracked.item() == STEPS * m for b in net.blocks)  # BatchNorm moved once per micro-batch


def test_microbatches_are_validated():
    blocks, heads, x, y, loss_fn = PARTS["bn"](2, seed=0)  # a batch of 6
    net = il.ComponentNet(blocks=blocks, heads=heads)
    for bad in (0, -1, True, 2.0, "2"):
        with pytest.raises(ValueError, match=r"microbatches=.*: give an integer m >= 1"):
            il.Engine(net, il.Local(), optimizer=sgd, loss_fn=loss_fn, microbatches=bad)
    engine = il.Engine(net, il.Interlocking(2), optimizer=sgd, loss_fn=loss_fn, microbatches=4)
    before = copy.deepcopy(state_of([net]))
    with pytest.raises(ValueError, match=r"a batch of 6 examples does not split into 4 equal micro-batches; use a batch size divisible by microbatches=4"):
        engine.step(x, y)
    assert all(torch.equal(before[k], v) for k, v in state_of([net]).items())  # nothing moved
    with pytest.raises(ValueError, match=r"async-local does not cut batches into micro-batches.*leave microbatches=1"):
        il.Engine(net, il.AsyncLocal(), total_steps=3, optimizer=sgd, loss_fn=loss_fn, microbatches=2)
    with pytest.raises(ValueError, match=r"split_backward='yes'"):
        il.Engine(net, il.Local(), optimizer=sgd, loss_fn=loss_fn, split_backward="yes")


# -- the schedules ----------------------------------------------------------------------------------


def test_microbatched_schedules_pipeline_and_tag_every_message():
    K, m = 4, 3
    for strategy in (il.EndToEnd(), il.Local(), il.Interlocking(2), il.Interlocking(3, "sum")):
        plan = strategy.plan(K)
        for k in range(K):
            acts = S.build_schedule(plan, k, has_head=True, microbatches=m)
            kinds = [a.kind for a in acts]
            forwards = [i for i, a in enumerate(acts) if isinstance(a, S.Forward)]
            assert [acts[i].mb for i in forwards] == list(range(m))
            # Every forward (and activation sent up) comes before any stream from above is awaited.
            if "RecvStream" in kinds:
                assert forwards[-1] < kinds.index("RecvStream")
            # The own loss's stream of micro-batch i goes down right after its head loss.
            if k in plan.continuing(k):
                for i in range(m):
                    h = next(p for p, a in enumerate(acts) if isinstance(a, S.HeadLoss) and a.mb == i)
                    assert kinds[h + 1 : h + 3] == ["InputGrad", "SendStream"] and acts[h + 2].mb == i
            assert acts[-1] == S.Update() and kinds.count("Update") == 1
            # Exactly one pass per micro-batch frees its graph, and it is that micro-batch's last.
            for i in range(m):
                passes = [a for a in acts if isinstance(a, (S.InputGrad, S.FullGrad, S.WeightGrad)) and a.mb == i]
                assert [a.last for a in passes] == [False] * (len(passes) - 1) + [True]
        # Both ends of every channel agree on the order of its messages (the simulation checks tags).
        clock.predict([S.build_schedule(plan, k, has_head=True, microbatches=m) for k in range(K)],
                      clock.ComputeCosts.units(), steps=2)
    assert S.activation_tag(2) == ("activation", 2) and S.stream_tag(3, 1, 2) == ("stream", 3, 1, 2)
    assert S.activation_tag() == S.ACTIVATION_TAG and S.stream_tag(3, 1) == ("stream", 3, 1)


def test_microbatches_shorten_the_predicted_step():
    # Unit costs split over m micro-batches: end-to-end becomes GPipe (bubble (K-1)/m of a step),
    # and every strategy's step gets shorter as m grows, towards the 2 units a component works.
    costs = clock.ComputeCosts.units(split=0.5)
    K, steps = 4, 8
    for strategy in (il.EndToEnd(), il.Local(), il.Interlocking(2), il.Interlocking(3, "sum")):
        plan = strategy.plan(K)
        per_step = []
        for m in (1, 2, 4, 8):
            schedules = [S.build_schedule(plan, k, has_head=True, microbatches=m) for k in range(K)]
            per_step.append(clock.predict(schedules, costs.per_microbatch(m), steps=steps).makespan_s / steps)
        assert all(a > b for a, b in zip(per_step, per_step[1:])), (strategy.name, per_step)
        assert per_step[-1] >= 2.0


# -- split_backward by default ------------------------------------------------------------------------


def test_split_backward_by_default_never_lengthens_the_critical_path():
    # The builder splits every lone stream; under unit costs each single split is never longer,
    # and the default schedules are never slower than the unsplit ones (K <= 6, m in {1, 2, 4}).
    costs = clock.ComputeCosts.units(split=0.5)
    shorter = 0
    for K in range(2, 7):
        for n in range(1, K + 1):
            for mix in ("furthest", "sum"):
                plan = il.Interlocking(n, mix).plan(K)
                for m in (1, 2, 4):
                    c = costs.per_microbatch(m)
                    unsplit = [S.build_schedule(plan, k, has_head=True, split_backward=False, microbatches=m) for k in range(K)]
                    default = [S.build_schedule(plan, k, has_head=True, microbatches=m) for k in range(K)]
                    assert default == [S.build_schedule(plan, k, has_head=True, split_backward=True, microbatches=m) for k in range(K)]
                    assert not any(a.kind == "FullGrad" for s in default for a in s)
                    before = clock.predict(unsplit, c, steps=3).makespan_s
                    for k in range(K):
                        if any(a.kind == "FullGrad" for a in unsplit[k]):
                            one = list(unsplit)
                            one[k] = default[k]
                            after = clock.predict(one, c, steps=3).makespan_s
                            assert after <= before + 1e-9, (K, n, mix, m, k)
                            shorter += after < before - 1e-9
                    assert clock.predict(default, c, steps=3).makespan_s <= before + 1e-9
    assert shorter >= 100, shorter  # nearly always strictly shorter (110 of 120 splits here)


@pytest.mark.parametrize("parts", sorted(PARTS))
@pytest.mark.parametrize("n,mix", [(2, "furthest"), (3, "furthest"), (3, "sum"), (4, "sum")])
def test_weight_pass_from_kept_gradients_equals_a_full_pass(parts, n, mix):
    # One stream: bit for bit (the kept gradients are the ones a full pass feeds the same nodes).
    # A sum of streams: to float rounding (the sum of the kept gradients, not the gradient of the sum).
    K = 4
    split, _, e1 = train(K, il.Interlocking(n, mix), parts=parts, seed=n)
    full, _, e2 = train(K, il.Interlocking(n, mix), parts=parts, seed=n, split_backward=False)
    assert any(a.kind == "FullGrad" for w in e2.workers for a in w.schedule)
    reused_sums = any(isinstance(a, S.WeightGrad) and a.reuse and len(a.losses) > 1 for w in e1.workers for a in w.schedule)
    a, b = state_of([split]), state_of([full])
    if reused_sums:
        assert_close_states(a, b, f"{parts} {n} {mix}")
    else:
        assert all(torch.equal(a[key], b[key]) for key in a), (parts, n, mix)


# -- emulated compute: the clock predicts micro-batched runs --------------------------------------------


@pytest.mark.parametrize("m", [2, 4])
def test_microbatched_emulated_actions_cost_what_the_clock_charges(m):
    K, fwd, bwd = 3, 0.02, 0.02
    net = emulated_net(K, forward_s=fwd / m, backward_s=bwd / m, split=0.5)
    engine = il.Engine(net, il.Interlocking(3, "sum"), optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
                                loss_fn=F.cross_entropy, microbatches=m)
    x, y = emulated_batch(8, seed=0)
    engine.step(x, y)  # warm-up
    records = engine.step(x, y).records
    costs = emulated_costs(forward_s=fwd, backward_s=bwd, split=0.5).per_microbatch(m)
    reused = 0
    for w in engine.workers:
        measured = [r for r in records if r.component == w.index]
        assert [r.action for r in measured] == list(w.schedule)
        for r, e in zip(measured, costs.durations(w.schedule)):
            assert e - 1e-3 <= r.duration_s <= e + 0.015, (w.index, r.action, r.duration_s, e)
            reused += isinstance(r.action, S.WeightGrad) and r.action.reuse
    assert reused >= m  # the weight pass of a sum of streams costs only the weight part
