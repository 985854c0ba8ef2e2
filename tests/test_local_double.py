"""1-wise double size: adjacent components merged, local learning on the merged network."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import interlock as il
from interlock.training.config import load_config
from interlock.network.net import parameter_count
from reference import PARTS, reference_train, state_of


def sgd(params):
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-3)


@pytest.mark.parametrize("K,groups", [(4, [[0, 1], [2, 3]]), (5, [[0, 1], [2, 3], [4]]), (1, [[0]])])
def test_merge_keeps_the_modules_and_the_upper_heads(K, groups):
    blocks, heads, x, y, _ = PARTS["bn"](K, seed=1)
    net = il.ComponentNet(blocks=blocks, heads=heads)
    merged = il.merge_adjacent(net, 2)
    assert merged.num_components == len(groups)
    for i, members in enumerate(groups):
        assert merged.heads[i] is heads[members[-1]]  # the top member's head, the very module
        got = [merged.blocks[i]] if len(members) == 1 else list(merged.blocks[i])
        assert all(a is blocks[m] for a, m in zip(got, members))
    dropped = sum(parameter_count(heads[m]) for g in groups for m in g[:-1])
    assert parameter_count(merged) == parameter_count(net) - dropped
    with torch.no_grad():
        net.eval(), merged.eval()
        torch.testing.assert_close(merged(x), net(x), rtol=0, atol=0)


def test_a_step_matches_the_brute_force_reference_on_the_merged_network():
    K = 5
    blocks, heads, x, y, loss_fn = PARTS["bn"](K, seed=3)
    data = [(x.roll(s, 0), y.roll(s, 0)) for s in range(2)]
    net = il.ComponentNet(blocks=copy.deepcopy(blocks), heads=copy.deepcopy(heads))
    engine = il.Engine(net, il.LocalDouble(), optimizer=sgd, loss_fn=loss_fn)
    assert engine.num_components == 3 and len(engine.workers) == 3
    losses = [engine.step(bx, by).losses for bx, by in data]
    # The reference: local learning (n = 1) of the network written by hand with pairs merged.
    ref_blocks = [nn.Sequential(blocks[0], blocks[1]), nn.Sequential(blocks[2], blocks[3]), blocks[4]]
    ref_heads = [heads[1], heads[3], heads[4]]
    rb, rh, ref_losses = reference_train(ref_blocks, ref_heads, data, loss_fn, n=1, mix="furthest", make_opt=sgd)
    a, b = state_of(list(engine.net.blocks) + list(engine.net.heads)), state_of(rb + rh)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(ref_losses))
    # Trained in place: the original modules moved; the dropped heads did not.
    assert not torch.equal(net.blocks[0][0].weight, blocks[0][0].weight)
    assert torch.equal(net.heads[0][2].weight, heads[0][2].weight)


def test_local_double_from_the_config():
    cfg = load_config(None, ["steps=2", "strategy=local-double", "model.components=4"])
    assert cfg.strategy_obj == il.LocalDouble() and cfg.strategy_obj.name == "local-double"
    with pytest.raises(ValueError, match="local-double runs in one process only"):
        load_config(None, ["steps=2", "strategy=local-double", "engine=distributed"])
