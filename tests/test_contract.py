"""The gradient contract: every strategy against a brute-force autograd reference."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import interlock as il
from reference import PARTS, reference_train, state_of

STEPS = 3


def sgd(params):
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-3)


def batches_for(x, y, steps=STEPS):
    # Different batches per step, derived from the one sample batch, so steps are not repeats.
    return [(x.roll(s, 0), y.roll(s, 0)) for s in range(steps)]


def engine_train(blocks, heads, batches, loss_fn, strategy, **kw):
    blocks, heads = copy.deepcopy(blocks), copy.deepcopy(heads)
    net = il.ComponentNet(blocks=blocks, heads=heads)
    engine = il.Engine(net, strategy, optimizer=sgd, loss_fn=loss_fn, **kw)
    history = [engine.step(x, y).losses for x, y in batches]
    return net, history, engine


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=lambda m: f"{key}: {m}")


CASES = [(K, n, mix) for K in (1, 2, 3, 5) for n in range(1, K + 1) for mix in ("furthest", "sum")]


@pytest.mark.parametrize("parts", sorted(PARTS))
@pytest.mark.parametrize("K,n,mix", CASES)
def test_interlocking_matches_brute_force(parts, K, n, mix):
    blocks, heads, x, y, loss_fn = PARTS[parts](K, seed=10 * K + n)
    batches = batches_for(x, y)
    ref_blocks, ref_heads, ref_losses = reference_train(blocks, heads, batches, loss_fn, n=n, mix=mix, make_opt=sgd)
    net, losses, _ = engine_train(blocks, heads, batches, loss_fn, il.Interlocking(n, mix))
    assert_same_state(state_of(list(net.blocks) + list(net.heads)), state_of(ref_blocks + ref_heads))
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(ref_losses))


@pytest.mark.parametrize("mix", ["furthest", "sum"])
def test_loss_weights_scale_each_loss(mix):
    K, weights = 3, [0.5, 2.0, 1.5]
    blocks, heads, x, y, loss_fn = PARTS["mlp"](K, seed=3)
    batches = batches_for(x, y)
    ref_blocks, ref_heads, _ = reference_train(blocks, heads, batches, loss_fn, n=2, mix=mix, make_opt=sgd, weights=weights)
    net, _, _ = engine_train(blocks, heads, batches, loss_fn, il.Interlocking(2, mix), loss_weights=weights)
    assert_same_state(state_of(list(net.blocks) + list(net.heads)), state_of(ref_blocks + ref_heads))


@pytest.mark.parametrize("parts", ["mlp", "bn"])
def test_batched_streams_match_one_at_a_time(parts):
    blocks, heads, x, y, loss_fn = PARTS[parts](5, seed=7)
    batches = batches_for(x, y)
    a, la, _ = engine_train(blocks, heads, batches, loss_fn, il.Interlocking(4, "sum"))
    b, lb, _ = engine_train(blocks, heads, batches, loss_fn, il.Interlocking(4, "sum"), batch_streams=True)
    assert_same_state(state_of([a]), state_of([b]))


@pytest.mark.parametrize("parts", sorted(PARTS))
def test_end_to_end_equals_interlocking_K_equals_unsplit_network(parts):
    K = 3
    blocks, heads, x, y, loss_fn = PARTS[parts](K, seed=5)
    batches = batches_for(x, y)
    e2e, e2e_losses, _ = engine_train(blocks, heads, batches, loss_fn, il.EndToEnd())
    ilk, ilk_losses, _ = engine_train(blocks, heads, batches, loss_fn, il.Interlocking(K))
    # The unsplit network, trained by a plain PyTorch loop with one optimizer.
    seq = nn.Sequential(*copy.deepcopy(blocks), copy.deepcopy(heads[-1]))
    opt = sgd(seq.parameters())
    for bx, by in batches:
        opt.zero_grad()
        loss_fn(seq(bx), by).backward()
        opt.step()
    unsplit = {f"{i}.{k}": v for i, m in enumerate(seq) for k, v in m.state_dict().items()}
    as_seq = lambda net: {f"{i}.{k}": v for i, m in enumerate([*net.blocks, net.heads[-1]]) for k, v in m.state_dict().items()}
    assert_same_state(as_seq(e2e), unsplit)
    assert_same_state(as_seq(ilk), unsplit)
    assert e2e_losses == ilk_losses


def test_local_is_interlocking_one():
    blocks, heads, x, y, loss_fn = PARTS["bn"](3, seed=2)
    batches = batches_for(x, y)
    a, _, _ = engine_train(blocks, heads, batches, loss_fn, il.Local())
    b, _, _ = engine_train(blocks, heads, batches, loss_fn, il.Interlocking(1))
    assert_same_state(state_of([a]), state_of([b]))


def test_watching_heads_learn_but_do_not_train_blocks():
    # End-to-end with auxiliary heads: blocks follow the unsplit network; heads still learn on L_k.
    K = 3
    blocks, heads, x, y, loss_fn = PARTS["mlp"](K, seed=4)
    batches = batches_for(x, y)
    with_heads, losses, _ = engine_train(blocks, heads, batches, loss_fn, il.EndToEnd())
    without, losses_none, _ = engine_train(blocks, [None, None, heads[-1]], batches, loss_fn, il.EndToEnd())
    assert_same_state(state_of(list(with_heads.blocks)), state_of(list(without.blocks)))
    assert not torch.equal(with_heads.heads[0].weight, heads[0].weight)  # the aux head trained

    assert not any(math.isnan(l) for l in losses[0])
    assert math.isnan(losses_none[0][0]) and math.isnan(losses_none[0][1]) and not math.isnan(losses_none[0][2])


def test_every_block_runs_forward_once_per_step():
    K = 4
    blocks, heads, x, y, loss_fn = PARTS["bn"](K, seed=1)
    net = il.ComponentNet(blocks=blocks, heads=heads)
    calls = [0] * K
    for k, b in enumerate(blocks):
        b.register_forward_hook(lambda *_, k=k: calls.__setitem__(k, calls[k] + 1))
    steps = 0
    for strategy in (il.EndToEnd(), il.Local(), il.Interlocking(2), il.Interlocking(3, "sum")):
        engine = il.Engine(net, strategy, optimizer=sgd, loss_fn=loss_fn, sample_input=x)
        before = list(calls)  # the shape check above ran on the meta device; count from here
        engine.step(x, y)
        engine.step(x, y)
        steps += 2
        assert [c - b for c, b in zip(calls, before)] == [2] * K, strategy
        # BatchNorm statistics moved exactly once per step, and not during the shape checks.
        assert all(b[1].num_batches_tracked.item() == steps for b in blocks)


def test_trains_the_given_modules_in_place():
    blocks, heads, x, y, loss_fn = PARTS["mlp"](2, seed=0)
    net = il.ComponentNet(blocks=blocks, heads=heads)
    w = blocks[0][0].weight
    before = w.detach().clone()
    il.Engine(net, il.Interlocking(2), optimizer=sgd, loss_fn=loss_fn).step(x, y)
    assert net.blocks[0][0].weight is w and not torch.equal(w, before)


def test_lr_scheduler_per_component_is_stepped():
    blocks, heads, x, y, loss_fn = PARTS["mlp"](2, seed=0)
    net = il.ComponentNet(blocks=blocks, heads=heads)
    engine = il.Engine(
        net, il.Local(), optimizer=sgd, loss_fn=loss_fn,
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5),
    )
    engine.step(x, y)
    engine.step(x, y)
    assert [o.param_groups[0]["lr"] for o in engine.optimizers] == [0.025, 0.025]


def test_resume_from_component_states_equals_uninterrupted():
    blocks, heads, x, y, loss_fn = PARTS["bn"](3, seed=8)
    batches = batches_for(x, y, steps=4)
    scheduler = lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
    full, full_losses, _ = engine_train(blocks, heads, batches, loss_fn, il.Interlocking(2), lr_scheduler=scheduler)
    _, _, engine = engine_train(blocks, heads, batches[:2], loss_fn, il.Interlocking(2), lr_scheduler=scheduler)
    saved = copy.deepcopy([engine.component_state(k) for k in range(3)])
    fresh_blocks, fresh_heads, *_ = PARTS["bn"](3, seed=99)  # different weights, overwritten by the load
    resumed = il.ComponentNet(blocks=fresh_blocks, heads=fresh_heads)
    engine2 = il.Engine(resumed, il.Interlocking(2), optimizer=sgd, loss_fn=loss_fn, lr_scheduler=scheduler)
    for k, state in enumerate(saved):
        engine2.load_component_state(k, state)
    tail = [engine2.step(bx, by).losses for bx, by in batches[2:]]
    assert tail == full_losses[2:]
    assert_same_state(state_of([resumed]), state_of([full]))
    with pytest.raises(ValueError, match="holds component 1 of 3; load the file of component 2 of 3"):
        engine2.load_component_state(1, saved[0])


def test_predicted_time_of_local_is_the_slowest_component_pipelined():
    # Local learning: no component waits for a later one, so K devices need about the busiest
    # component's time per step (plus the pipeline fill), far less than the sum over components.
    blocks, heads, x, y, loss_fn = PARTS["bn"](4, seed=3)
    net = il.ComponentNet(blocks=blocks, heads=heads)
    engine = il.Engine(net, il.Local(), optimizer=sgd, loss_fn=loss_fn)
    records = [r for _ in range(6) for r in engine.step(x, y).records]
    span = engine.predicted_time(records)
    busy = span.busy_s
    assert span.makespan_s < sum(busy) and span.makespan_s >= max(busy)
    e2e = il.Engine(net, il.EndToEnd(), optimizer=sgd, loss_fn=loss_fn)
    e2e_records = [r for _ in range(6) for r in e2e.step(x, y).records]
    e2e_span = e2e.predicted_time(e2e_records)
    # End-to-end cannot overlap forward and backward of different components within a step.
    assert e2e_span.makespan_s >= 0.95 * sum(r.duration_s for r in e2e_records if r.action.kind in ("Forward", "FullGrad", "WeightGrad"))


@pytest.mark.parametrize("n,mix", [(1, "furthest"), (2, "furthest"), (3, "furthest"), (2, "sum"), (3, "sum")])
def test_split_backward_keeps_the_contract(n, mix):
    # Sending a lone stream's input gradient before its weight gradient changes timing only.
    blocks, heads, x, y, loss_fn = PARTS["bn"](3, seed=6)
    batches = batches_for(x, y)
    ref_blocks, ref_heads, _ = reference_train(blocks, heads, batches, loss_fn, n=n, mix=mix, make_opt=sgd)
    net, _, engine = engine_train(blocks, heads, batches, loss_fn, il.Interlocking(n, mix), split_backward=True)
    assert not any(a.kind == "FullGrad" for w in engine.workers for a in w.schedule)
    assert_same_state(state_of(list(net.blocks) + list(net.heads)), state_of(ref_blocks + ref_heads))
