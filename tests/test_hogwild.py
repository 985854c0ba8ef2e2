"""The paper's Hogwild (Gomez et al. 2022, sec. 2 and Fig. 3): no weight stashing, checked by hand and against the figure."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import interlock as il
from interlock.training.config import load_config
from interlock.engine.policies.hogwild import hogwild_timeline, hogwild_versions
from interlock.core.strategies import mismatch
from reference import PARTS, scalar_net, state_of, weights

# Fig. 3 of the paper, as its text gives it: the theta index each accelerator holds in each of 12 time slots.
FIG3 = {
    3: [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4],  # accelerator 3 (the top)
    2: [0, 0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4],
    1: [0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 3, 3],
}


def sgd(lr):
    return lambda p: torch.optim.SGD(p, lr=lr)


def test_the_pipeline_gives_fig3s_grid_and_its_captions_example():
    grid = hogwild_timeline(3, 12)
    assert {k + 1: row for k, row in enumerate(grid)} == FIG3
    # Caption: the fourth batch's forward on component 1 at theta_0, its backward at theta_3.
    assert hogwild_versions(3, 12)[0][3] == (0, 3)


def test_the_mismatch_is_two_slots_per_component_above():
    assert mismatch(3) == (4, 2, 0) and mismatch(1) == (0,)
    for K in (2, 3, 4, 5):
        for k, seen in enumerate(hogwild_versions(K, 80)):
            steady = [b - f for b, (f, bw) in seen.items() if b > mismatch(K)[k]]
            assert steady and set(steady) == {mismatch(K)[k]}, (K, k)
            assert all(bw == b for b, (f, bw) in seen.items())  # updates in batch order


def test_two_scalar_components_by_hand():
    # Loss (w2 w1 x - y)^2, x = 1, y = 0, SGD 0.1. Component 1 runs batch t's backward 2 steps after
    # its forward; with one linear weight its gradient is (output gradient) x (stored input), so
    # w1 stays 1 until step 2, and the three gradients 0.5, 0.32, 0.2048 (each 2 r w2 at the top's
    # weights of that batch) land at step 2 and at the drain.
    net = scalar_net([1.0, 0.5])
    engine = il.Engine(net, il.Hogwild(), optimizer=sgd(0.1), loss_fn=F.mse_loss, total_steps=3)
    x, y = torch.ones(1, 1), torch.zeros(1, 1)
    engine.step(x, y)  # r = 0.5: top gradient 1.0 -> w2 = 0.4; g_1 = 2 r w2 = 0.5 sent down
    assert weights(net) == pytest.approx([1.0, 0.4])
    engine.step(x, y)  # r = 0.4: top gradient 0.8 -> w2 = 0.32; g_1 = 0.32
    assert weights(net) == pytest.approx([1.0, 0.32])
    engine.step(x, y)  # r = 0.32: w2 = 0.256; w1 applies 0.5 -> 0.95, then the drain 0.32 and 0.2048
    assert weights(net) == pytest.approx([0.89752, 0.256])
    assert not any(engine.policy.in_flight(k) for k in range(2))


def test_three_scalar_components_by_hand_show_the_mismatch():
    # K = 3, x = 1, y = 0, SGD 0.1, w = (1, 1, 0.5); D = (4, 2, 0). The top (D = 0): step 0, a3 = 0.5,
    # dL/da3 = 2 r = 1, gradient 1 x a2 = 1 -> w3 = 0.4, sends g2 = 1 x w3 = 0.5 (w3 before its update);
    # step 1: r = 0.4 -> w3 = 0.32, g2 = 0.8 x 0.4 = 0.32; step 2: r = 0.32 -> w3 = 0.256. Component 2
    # runs batch 0 at step 2: gradient 0.5 x stored input 1 -> w2 = 0.95, sends 0.5 x w2 (1, its weight
    # when the backward reached it).
    net = scalar_net([1.0, 1.0, 0.5])
    engine = il.Engine(net, il.Hogwild(), optimizer=sgd(0.1), loss_fn=F.mse_loss)
    engine.policy.track_versions()
    x, y = torch.ones(1, 1), torch.zeros(1, 1)
    for _ in range(3):
        engine.step(x, y)
    assert weights(net) == pytest.approx([1.0, 0.95, 0.256])
    assert engine.policy.in_flight(0)[0].item() == pytest.approx(0.5)  # 0.5 (from above) x w2 = 1 at the backward
    engine.step(x, y)
    # Step 3: batch 3's forward meets w2 = 0.95, so a2 = 0.95 and r = 0.95 x 0.256 = 0.2432: w3 = 0.256 -
    # 0.1 x 2 x 0.2432 x 0.95 = 0.209792. Component 2 runs batch 1: output gradient 0.32 (from step 1),
    # stored input 1 -> w2 = 0.95 - 0.032 = 0.918, and sends 0.32 x 0.95: the w2 the backward met, while
    # batch 1's forward had used w2 = 1 (the mismatch of Fig. 3).
    assert weights(net) == pytest.approx([1.0, 0.918, 0.209792])
    assert engine.policy.in_flight(0)[1].item() == pytest.approx(0.32 * 0.95)
    engine.step(x, y)
    # Step 4: component 1 runs batch 0 (D_1 = 4): its gradient 0.5 x stored input 1 -> w1 = 0.95.
    assert weights(net)[0] == pytest.approx(0.95)
    assert engine.policy.versions[1][1] == (0, 1)  # batch 1 at component 2: forward at w2^(0), backward at w2^(1)


def reference_hogwild(ws, batches, *, lr):
    """The definition written out on scalar chains a_k = w_k a_{k-1}, loss (a_K - y)^2, plain floats:
    batch t's forward at step t with the weights then; component k's backward of batch s at step s + D_k
    with the weights then: dL/dw_k = g_k^s a_{k-1}^s (stored input), g_{k-1}^s = g_k^s w_k (now)."""
    K, w = len(ws), list(ws)
    D = [2 * (K - 1 - k) for k in range(K)]
    inp = [{} for _ in range(K)]
    grad = [{} for _ in range(K)]

    def backward(k, s):
        g = grad[k].pop(s)
        dw, down = g * inp[k].pop(s), g * w[k]
        w[k] -= lr * dw
        if k:
            grad[k - 1][s] = down

    for t, (x, y) in enumerate(batches):
        a = x
        for k in range(K):
            inp[k][t] = a
            a = w[k] * a
        grad[K - 1][t] = 2 * (a - y)
        backward(K - 1, t)
        for k in range(K - 2, -1, -1):
            if t - D[k] >= 0:
                backward(k, t - D[k])
    for k in range(K - 2, -1, -1):
        for s in sorted(inp[k]):
            backward(k, s)
    return w


@pytest.mark.parametrize("K", [2, 3, 4])
def test_scalar_chains_follow_the_definition(K):
    ws = [0.9, 1.1, 0.8, 1.05][:K]
    batches = [(v, 0.5 * v) for v in (1.0, -0.5, 2.0, 0.3, -1.2, 0.7, 1.5, -0.9, 0.4)]
    net = scalar_net(ws)
    engine = il.Engine(net, il.Hogwild(), optimizer=sgd(0.05), loss_fn=F.mse_loss, total_steps=len(batches))
    engine.policy.track_versions()
    for x, y in batches:
        engine.step(torch.tensor([[x]]), torch.tensor([[y]]))
    assert weights(net) == pytest.approx(reference_hogwild(ws, batches, lr=0.05), rel=1e-5)
    # Every batch's versions are those of the figure's pipeline (the warm-up included), up to the drain.
    fig = hogwild_versions(K, 4 * len(batches))
    for k in range(K):
        for s in range(len(batches) - mismatch(K)[k]):
            assert engine.policy.versions[k][s] == fig[k][s], (K, k, s)


def test_it_differs_from_the_stashing_variant_and_one_component_is_end_to_end():
    x, y = torch.ones(1, 1), torch.zeros(1, 1)
    paper, stashed = scalar_net([1.0, 1.0, 0.5]), scalar_net([1.0, 1.0, 0.5])
    a = il.Engine(paper, il.Hogwild(), optimizer=sgd(0.1), loss_fn=F.mse_loss, total_steps=6)
    b = il.Engine(stashed, il.HogwildStashed(), optimizer=sgd(0.1), loss_fn=F.mse_loss, total_steps=6)
    for _ in range(6):
        a.step(x, y), b.step(x, y)
    assert weights(paper) != pytest.approx(weights(stashed), rel=1e-3)
    blocks, heads, bx, by, loss_fn = PARTS["bn"](1, seed=3)
    one = il.ComponentNet(blocks=copy.deepcopy(blocks), heads=copy.deepcopy(heads))
    e2e = il.ComponentNet(blocks=copy.deepcopy(blocks), heads=copy.deepcopy(heads))
    ha = il.Engine(one, il.Hogwild(), optimizer=sgd(0.1), loss_fn=loss_fn)
    hb = il.Engine(e2e, il.EndToEnd(), optimizer=sgd(0.1), loss_fn=loss_fn)
    for s in range(3):
        la, lb = ha.step(bx.roll(s, 0), by.roll(s, 0)).losses, hb.step(bx.roll(s, 0), by.roll(s, 0)).losses
        assert list(la) == pytest.approx(list(lb))
    sa, sb = state_of([one]), state_of([e2e])
    assert all(torch.allclose(sa[k], sb[k]) for k in sa)


def dropout_parts(K: int, *, seed: int):
    blocks, heads, x, y, loss_fn = PARTS["mlp"](K, seed=seed)
    return [nn.Sequential(*b, nn.Dropout(0.5)) for b in blocks], heads, x, y, loss_fn


def test_a_recomputed_backward_draws_its_forwards_dropout_mask():
    # K = 2: component 1's first backward (batch 0, at step 2) meets the weights its forward used (no update
    # yet), so the recomputed output equals the forward's exactly when the dropout masks agree.
    blocks, heads, x, y, loss_fn = dropout_parts(2, seed=1)
    net = il.ComponentNet(blocks=blocks, heads=heads)
    seen = []
    net.blocks[0].register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()) if o.device.type != "meta" else None)
    engine = il.Engine(net, il.Hogwild(), optimizer=sgd(0.1), loss_fn=loss_fn)
    for s in range(3):
        engine.step(x.roll(s, 0), y.roll(s, 0))
    assert len(seen) == 4  # forwards of batches 0, 1, 2 and the recomputation of batch 0
    assert torch.equal(seen[0], seen[3]) and not torch.equal(seen[0], seen[1])


@pytest.mark.parametrize("parts", ["bn", "dropout"])
def test_resume_keeps_the_batches_in_flight_and_batchnorm_moves_once_per_forward(parts):
    K = 3
    build = PARTS["bn"] if parts == "bn" else dropout_parts
    blocks, heads, x, y, loss_fn = build(K, seed=4)
    opt = lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)
    data = [(x.roll(s, 0), y.roll(s, 0)) for s in range(7)]
    make = lambda b, h: il.Engine(il.ComponentNet(blocks=b, heads=h), il.Hogwild(), optimizer=opt, loss_fn=loss_fn,
                                         total_steps=7, rng_seed=5)
    full = make(copy.deepcopy(blocks), copy.deepcopy(heads))
    for bx, by in data:
        full.step(bx, by)
    bn = [m for m in full.net.blocks[0].modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.num_batches_tracked.item() == len(data) for m in bn)  # the recomputed backwards left them alone
    part = make(copy.deepcopy(blocks), copy.deepcopy(heads))
    for bx, by in data[:3]:
        part.step(bx, by)
    saved = [torch.load(io.BytesIO(_saved(part.component_state(k))), weights_only=True) for k in range(K)]  # (as files)
    assert [len(s["policy"]["held"]) for s in saved] == [3, 2, 0]  # batches 0-2 in flight on component 1
    resumed = make(*build(K, seed=9)[:2])
    for k, s in enumerate(saved):
        resumed.load_component_state(k, s)
    for bx, by in data[3:]:
        resumed.step(bx, by)
    sa, sb = state_of([resumed.net]), state_of([full.net])
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def _saved(state) -> bytes:
    out = io.BytesIO()
    torch.save(state, out)
    return out.getvalue()


def test_hogwild_from_the_config_runs_in_one_process_only():
    assert load_config(None, ["steps=2", "strategy=hogwild"]).strategy_obj == il.Hogwild()
    assert load_config(None, ["steps=2", "strategy=hogwild-stashed"]).strategy_obj == il.HogwildStashed()
    with pytest.raises(ValueError, match="hogwild runs in one process only"):
        load_config(None, ["steps=2", "strategy=hogwild", "engine=distributed"])
