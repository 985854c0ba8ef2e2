"""Bad input fails at construction with an error that says what to change."""

from __future__ import annotations

import pytest
import torch
from torch import nn
import torch.nn.functional as F

import interlock as il
from reference import PARTS


def sgd(params):
    return torch.optim.SGD(params, lr=0.1)


def make(K=3):
    blocks, heads, x, y, loss_fn = PARTS["mlp"](K, seed=0)
    return blocks, heads, x, y, loss_fn


def test_n_larger_than_K_says_the_limit():
    blocks, heads, *_ = make(4)
    net = il.ComponentNet(blocks=blocks, heads=heads)
    with pytest.raises(ValueError, match=r"n=5 exceeds the 4 components; use n <= 4"):
        il.Engine(net, il.Interlocking(5), optimizer=sgd, loss_fn=F.cross_entropy)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_n_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        il.Interlocking(bad)


def test_mix_must_be_known():
    with pytest.raises(ValueError, match="mix must be one of"):
        il.Interlocking(2, mix="mean")


def test_heads_and_blocks_must_pair_up():
    blocks, heads, *_ = make(3)
    with pytest.raises(ValueError, match="3 components .* but 2 heads"):
        il.ComponentNet(blocks=blocks, heads=heads[:2])


def test_final_head_is_required():
    blocks, heads, *_ = make(2)
    with pytest.raises(ValueError, match=r"heads\[-1\] is the network's final head"):
        il.ComponentNet(blocks=blocks, heads=[heads[0], None])


def test_missing_head_is_fine_for_end_to_end_but_named_for_local():
    blocks, heads, x, y, loss_fn = make(3)
    net = il.ComponentNet(blocks=blocks, heads=[None, heads[1], heads[2]])
    il.Engine(net, il.EndToEnd(), optimizer=sgd, loss_fn=loss_fn).step(x, y)
    with pytest.raises(ValueError, match=r"loss of component 1, but component 1 has no head.*heads\[0\]"):
        il.Engine(net, il.Local(), optimizer=sgd, loss_fn=loss_fn)
    # 3-wise "furthest" on 3 components never uses L_1: no head needed there either.
    il.Engine(net, il.Interlocking(3), optimizer=sgd, loss_fn=loss_fn)
    with pytest.raises(ValueError, match="component 1 has no head"):
        il.Engine(net, il.Interlocking(3, "sum"), optimizer=sgd, loss_fn=loss_fn)


def test_head_that_does_not_fit_is_named_at_construction():
    blocks, heads, x, y, loss_fn = make(3)
    heads[1] = nn.Linear(7, 3)  # component 2 outputs 6 features
    with pytest.raises(ValueError, match=r"head 2 does not accept the output of component 2 \(shape \(2, 6\)\)"):
        il.ComponentNet(blocks=blocks, heads=heads, sample_input=x)
    net = il.ComponentNet(blocks=blocks, heads=heads)
    with pytest.raises(ValueError, match="head 2 does not accept"):
        il.Engine(net, il.Local(), optimizer=sgd, loss_fn=loss_fn, sample_input=x)
    # Without a sample at construction, the first step checks before any parameter moves.
    engine = il.Engine(net, il.Local(), optimizer=sgd, loss_fn=loss_fn)
    before = blocks[0][0].weight.detach().clone()
    with pytest.raises(ValueError, match="head 2 does not accept"):
        engine.step(x, y)
    assert torch.equal(blocks[0][0].weight, before)


def test_block_that_does_not_fit_is_named():
    blocks, heads, x, *_ = make(3)
    blocks[2] = nn.Sequential(nn.Linear(5, 6))
    with pytest.raises(ValueError, match=r"component 3's blocks do not accept the output of component 2"):
        il.ComponentNet(blocks=blocks, heads=heads, sample_input=x)


class _NoMeta(nn.Module):
    """A block whose forward needs real values (no meta kernel for .item())."""

    def forward(self, x):
        return x * float(x.abs().sum().item() > -1)


def test_shape_check_falls_back_to_a_real_dry_run_without_moving_state():
    blocks, heads, x, *_ = make(2)
    bn = nn.BatchNorm1d(6)
    blocks[0] = nn.Sequential(blocks[0], _NoMeta(), bn)
    il.ComponentNet(blocks=blocks, heads=heads, sample_input=x)
    assert bn.num_batches_tracked.item() == 0
    heads[1] = nn.Linear(4, 3)
    with pytest.raises(ValueError, match="head 2 does not accept"):
        il.ComponentNet(blocks=blocks, heads=heads, sample_input=x)


def test_shared_parameters_across_components_are_refused():
    blocks, heads, *_ = make(2)
    shared = nn.Linear(6, 6)
    blocks[0] = nn.Sequential(blocks[0], shared)
    blocks[1] = nn.Sequential(blocks[1], shared)
    with pytest.raises(ValueError, match="shared by components 1 and 2"):
        il.ComponentNet(blocks=blocks, heads=heads)


@pytest.mark.parametrize("weights,match", [([1.0, 1.0], "one per component"), ([1.0, -1.0, 1.0], "finite and >= 0")])
def test_bad_loss_weights(weights, match):
    blocks, heads, *_ = make(3)
    net = il.ComponentNet(blocks=blocks, heads=heads)
    with pytest.raises(ValueError, match=match):
        il.Engine(net, il.Local(), optimizer=sgd, loss_fn=F.cross_entropy, loss_weights=weights)


def test_optimizer_list_must_match_components():
    blocks, heads, *_ = make(3)
    net = il.ComponentNet(blocks=blocks, heads=heads)
    with pytest.raises(ValueError, match="list of 3 factories"):
        il.Engine(net, il.Local(), optimizer=[sgd, sgd], loss_fn=F.cross_entropy)


def test_not_a_strategy():
    blocks, heads, *_ = make(2)
    net = il.ComponentNet(blocks=blocks, heads=heads)
    with pytest.raises(ValueError, match="strategy must be an interlock strategy"):
        il.Engine(net, "local", optimizer=sgd, loss_fn=F.cross_entropy)
