"""Tied parameters across components (interlock.network.ties): the gradient of a tied tensor is the sum of
its copies' gradients, on the simulated engine and on the distributed one, and the copies stay equal."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import interlock as il
from interlock.runtime.launch import run_local
from reference import contract_grads
import tie_helpers as T

CONTRACT = {"end-to-end": (3, "furthest"), "local": (1, "furthest"), "2-wise": (2, "furthest"), "2-wise-sum": (2, "sum")}


def reference_step(net: il.ComponentNet, x, y, *, n: int, mix: str, lr: float = 0.5) -> dict:
    """One SGD step of the untied network (every copy its own parameter) with brute-force contract
    gradients, each tied copy then moved by the sum of all copies' gradients."""
    net = copy.deepcopy(net)
    grads, _ = contract_grads(list(net.blocks), list(net.heads), x, y, T.token_loss, n=n, mix=mix)
    with torch.no_grad():
        for group in net.ties:
            total = sum(grads.get(p, torch.zeros_like(p)) for p in group)
            for p in group:
                grads[p] = total
        for p in net.parameters():
            if p in grads:
                p -= lr * grads[p]
    return net


@pytest.mark.parametrize("name", list(T.STRATEGIES))
def test_tied_gradient_is_the_sum_over_the_untied_copies(name):
    net, batches = T.tied_net()
    n, mix = CONTRACT[name]
    x, y = batches[0]
    want = reference_step(net, x, y, n=n, mix=mix)
    engine = il.Engine(net, T.STRATEGIES[name], optimizer=T.sgd, loss_fn=T.token_loss)
    engine.step(x, y)
    for (key, got), (_, ref) in zip(net.state_dict().items(), want.state_dict().items()):
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-12, msg=f"{name}: {key}")
    # Without the sum the copies would have moved apart after one step.
    first = net.ties[0][0]
    assert all(torch.equal(p, first) for p in net.ties[0])


def test_copies_stay_equal_and_untied_copies_would_drift():
    net, batches = T.tied_net()
    untied = il.ComponentNet(blocks=copy.deepcopy(list(net.blocks)), heads=copy.deepcopy(list(net.heads)))
    for n_, make in ((net, True), (untied, False)):
        engine = il.Engine(n_, il.Interlocking(2), optimizer=lambda p: torch.optim.Adam(p, lr=0.01), loss_fn=T.token_loss)
        for x, y in batches:
            engine.step(x, y)
    copies = net.ties[0]
    assert all(torch.equal(p, copies[0]) for p in copies)
    emb, proj = untied.blocks[0][0].weight, untied.heads[2][1].weight
    assert not torch.allclose(emb, proj)  # the test could fail: untied, the copies part


def test_ties_are_validated():
    net, _ = T.tied_net()
    blocks, heads = list(net.blocks), list(net.heads)
    with pytest.raises(ValueError, match="not a trainable parameter"):
        il.ComponentNet(blocks=blocks, heads=heads, ties=[[net.ties[0][0], nn.Parameter(net.ties[0][1].detach().clone())]])
    with torch.no_grad():
        net.ties[0][1].add_(1.0)
    with pytest.raises(ValueError, match="start equal"):
        il.ComponentNet(blocks=blocks, heads=heads, ties=net.ties)
    with pytest.raises(ValueError, match="two or more"):
        il.ComponentNet(blocks=blocks, heads=heads, ties=[[net.ties[0][0]]])
    emb, head_weight = blocks[0][0].weight, heads[0][1].weight  # both in component 1
    with torch.no_grad():
        head_weight.copy_(emb)
    with pytest.raises(ValueError, match="share one parameter"):
        il.ComponentNet(blocks=blocks, heads=heads, ties=[[emb, head_weight]])


def test_engines_that_do_not_sum_tied_gradients_refuse_tied_networks():
    net, _ = T.tied_net()
    with pytest.raises(ValueError, match="tied parameters"):
        il.Engine(net, il.Sequential(), optimizer=T.sgd, loss_fn=T.token_loss, total_steps=3)


@pytest.fixture(scope="module")
def ranks3():
    return run_local(T.rank_main, 3, 3, timeout_s=180)


def test_distributed_tied_gradient_is_the_sum_over_the_untied_copies(ranks3):
    for name in T.STRATEGIES:
        net, batches = T.tied_net()
        n, mix = CONTRACT[name]
        want = reference_step(net, *batches[0], n=n, mix=mix).state_dict()
        for k in range(3):
            got = ranks3[k][name + "/1"]
            assert got and all(key.startswith((f"blocks.{k}.", f"heads.{k}.")) for key in got)
            for key, v in got.items():
                torch.testing.assert_close(v, want[key], rtol=0, atol=1e-12, msg=f"{name} rank {k}: {key}")


def test_distributed_sums_tied_gradients_as_the_simulated_engine_bit_for_bit(ranks3):
    for name, strategy in T.STRATEGIES.items():
        net, batches = T.tied_net()
        engine = il.Engine(net, strategy, optimizer=T.sgd, loss_fn=T.token_loss)
        for x, y in batches:
            engine.step(x, y)
        for k in range(3):
            mine = {f"blocks.{k}.": net.blocks[k], f"heads.{k}.": net.heads[k]}
            want = {p + key: v for p, m in mine.items() for key, v in m.state_dict().items()}
            got = ranks3[k][name]
            assert got.keys() == want.keys()
            for key in want:
                assert torch.equal(got[key], want[key]), f"{name} rank {k}: {key}"


def test_local_double_merges_tied_components_and_keeps_the_copies_equal():
    net, batches = T.tied_net(K=4)
    engine = il.Engine(net, il.LocalDouble(), optimizer=T.sgd, loss_fn=T.token_loss)
    for x, y in batches:
        engine.step(x, y)
    merged = engine.net.ties  # the heads of merged members (and the copies they held) are dropped
    assert len(merged) == 1 and len(merged[0]) == 3
    assert all(torch.equal(p, merged[0][0]) for p in merged[0])
    assert not torch.equal(merged[0][0], T.tied_net(K=4)[0].ties[0][0])  # it trained
