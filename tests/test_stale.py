"""Hogwild (stale end-to-end gradients): the staleness each component sees, checked by hand."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import interlock as il
from interlock.training.config import load_config
from interlock.core.strategies import staleness
from reference import PARTS, scalar_net, state_of, weights


def test_staleness_is_the_distance_from_the_top():
    assert staleness(1) == (0,)
    assert staleness(4) == (3, 2, 1, 0)


def test_two_scalar_components_by_hand():
    # Loss (w2 w1 x - y)^2 with x = 1, y = 0, SGD lr 0.1: dL/dw1 = 2 r w2, dL/dw2 = 2 r w1 (r = w2 w1).
    # Component 2 applies each gradient at once; component 1 one step late, the last at the flush.
    net = scalar_net([1.0, 0.5])
    engine = il.Engine(net, il.HogwildStashed(), optimizer=lambda p: torch.optim.SGD(p, lr=0.1), loss_fn=F.mse_loss,
                            total_steps=3)
    x, y = torch.ones(1, 1), torch.zeros(1, 1)
    engine.step(x, y)
    # r = 0.5: g1 = 0.5 (queued), g2 = 1.0 -> w2 = 0.4
    assert weights(net) == pytest.approx([1.0, 0.4])
    engine.step(x, y)
    # r = 0.4: g1 = 0.32 (queued), g2 = 0.8 -> w2 = 0.32; w1 applies the step-0 gradient 0.5 -> 0.95
    assert weights(net) == pytest.approx([0.95, 0.32])
    engine.step(x, y)
    # r = 0.304: g1 = 0.19456, g2 = 0.5776 -> w2 = 0.26224; w1 applies 0.32 -> 0.918, then the flush 0.19456
    assert weights(net) == pytest.approx([0.898544, 0.26224])
    assert all(not q for q in engine.policy.pending)


def delayed_sgd_reference(ws, batches, *, lr, momentum, delays):
    """Delayed SGD on the scalar chain, written out: gradient of batch t at the weights of step t,
    applied by component k at step t + delays[k]; remaining gradients applied at the end."""
    params = [torch.tensor(float(w), requires_grad=True) for w in ws]
    opts = [torch.optim.SGD([p], lr=lr, momentum=momentum) for p in params]
    queues = [[] for _ in params]

    def apply(k, g):
        params[k].grad = g
        opts[k].step()

    for x, y in batches:
        out = x
        for p in params:
            out = p * out
        grads = torch.autograd.grad(F.mse_loss(out, y), params)
        for k, g in enumerate(grads):
            queues[k].append(g)
            if len(queues[k]) > delays[k]:
                apply(k, queues[k].pop(0))
    for k, q in enumerate(queues):
        for g in q:
            apply(k, g)
    return [p.item() for p in params]


def test_three_scalar_components_follow_delayed_sgd():
    ws = [0.9, 1.1, 0.8]
    batches = [(torch.tensor([[v]]), torch.tensor([[0.5 * v]])) for v in (1.0, -0.5, 2.0, 0.3, -1.2)]
    net = scalar_net(ws)
    engine = il.Engine(net, il.HogwildStashed(), optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
                            loss_fn=F.mse_loss, total_steps=len(batches))
    for x, y in batches:
        engine.step(x, y)
    expected = delayed_sgd_reference(ws, batches, lr=0.05, momentum=0.9, delays=(2, 1, 0))
    assert weights(net) == pytest.approx(expected, rel=1e-5)


def test_one_component_is_end_to_end():
    blocks, heads, x, y, loss_fn = PARTS["bn"](1, seed=3)
    sgd = lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)
    a = il.ComponentNet(blocks=copy.deepcopy(blocks), heads=copy.deepcopy(heads))
    b = il.ComponentNet(blocks=copy.deepcopy(blocks), heads=copy.deepcopy(heads))
    stale, e2e = il.Engine(a, il.HogwildStashed(), optimizer=sgd, loss_fn=loss_fn), il.Engine(b, il.EndToEnd(), optimizer=sgd, loss_fn=loss_fn)
    for s in range(3):
        assert stale.step(x.roll(s, 0), y.roll(s, 0)).losses == e2e.step(x.roll(s, 0), y.roll(s, 0)).losses
    sa, sb = state_of([a]), state_of([b])
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_keeps_the_queued_gradients():
    K = 3
    blocks, heads, x, y, loss_fn = PARTS["bn"](K, seed=4)
    sgd = lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)
    data = [(x.roll(s, 0), y.roll(s, 0)) for s in range(5)]
    make = lambda b, h: il.Engine(il.ComponentNet(blocks=b, heads=h), il.HogwildStashed(), optimizer=sgd, loss_fn=loss_fn,
                                       total_steps=5)
    full = make(copy.deepcopy(blocks), copy.deepcopy(heads))
    for bx, by in data:
        full.step(bx, by)
    part = make(copy.deepcopy(blocks), copy.deepcopy(heads))
    for bx, by in data[:2]:
        part.step(bx, by)
    saved = copy.deepcopy([part.component_state(k) for k in range(K)])
    assert [len(s["policy"]["pending"]) for s in saved] == [2, 1, 0]
    resumed = make(*PARTS["bn"](K, seed=9)[:2])
    for k, s in enumerate(saved):
        resumed.load_component_state(k, s)
    for bx, by in data[2:]:
        resumed.step(bx, by)
    sa, sb = state_of([resumed.net]), state_of([full.net])
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # A checkpoint of another strategy has no queue: the error names the strategy that wrote it.
    local = il.Engine(il.ComponentNet(blocks=copy.deepcopy(blocks), heads=copy.deepcopy(heads)), il.Local(),
                               optimizer=sgd, loss_fn=loss_fn)
    with pytest.raises(ValueError, match=r"component 1 has no queued gradients: it was not written by hogwild-stashed; "
                                         r"resume it with the strategy that wrote it \(local\)"):
        resumed.load_component_state(0, local.component_state(0))


def test_hogwild_from_the_config():
    assert load_config(None, ["steps=2", "strategy=hogwild-stashed"]).strategy_obj == il.HogwildStashed()
    assert load_config(None, ["steps=2", "strategy=hogwild-stashed", "engine=distributed"]).engine == "distributed"
    with pytest.raises(ValueError, match="sequential runs in one process only"):
        load_config(None, ["steps=2", "strategy=sequential", "engine=distributed"])
