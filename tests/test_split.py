"""interlock.network.split: any module cut into components, the automatic split's balance against brute force."""

from __future__ import annotations

import itertools
import random

import pytest
import torch
from torch import nn

import interlock as il
from interlock.network.split import balanced_cuts, flatten_blocks, split, uniform_cuts


def brute_force(costs, has, K):
    """The smallest largest-component cost over every cut of the blocks into K runs that all hold parameters."""
    n, best = len(costs), None
    for cuts in itertools.combinations(range(1, n), K - 1):
        edges = (0, *cuts, n)
        if not all(any(has[a:b]) for a, b in zip(edges, edges[1:])):
            continue
        worst = max(sum(costs[a:b]) for a, b in zip(edges, edges[1:]))
        best = worst if best is None else min(best, worst)
    return best


def test_balanced_cuts_match_brute_force_over_all_cuts():
    rng = random.Random(0)
    for _ in range(300):
        n = rng.randint(1, 8)
        costs = [rng.choice([0, rng.randint(1, 20)]) for _ in range(n)]
        has = [rng.random() < 0.7 for _ in range(n)]
        K = rng.randint(1, n)
        if sum(has) < K:
            with pytest.raises(ValueError, match="have parameters"):
                balanced_cuts(costs, K, has_params=has)
            continue
        cuts = balanced_cuts(costs, K, has_params=has)
        edges = (0, *cuts, n)
        assert len(cuts) == K - 1 and list(cuts) == sorted(set(cuts))
        assert all(any(has[a:b]) for a, b in zip(edges, edges[1:])), (costs, has, cuts)
        assert max(sum(costs[a:b]) for a, b in zip(edges, edges[1:])) == brute_force(costs, has, K), (costs, has, K, cuts)


def flat_mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3), nn.ReLU())


def test_no_component_is_left_without_parameters():
    # The case: uniform by block count gave [Flatten, Linear] [ReLU] [Linear] [ReLU].
    blocks = list(flat_mlp())
    assert uniform_cuts(blocks, 3) == (3, 5)  # [Flatten, Linear, ReLU] [Linear, ReLU] [Linear, ReLU]
    with pytest.raises(ValueError, match="only 3 of the 7 blocks have parameters"):
        il.ComponentNet.from_blocks(blocks, heads=[None] * 3 + [nn.Identity()], components=4)
    net = il.ComponentNet.from_blocks(blocks, heads=[None, None, nn.Identity()], components=3)
    assert all(il.parameter_count(b) > 0 for b in net.blocks)
    with pytest.raises(ValueError, match="component 2 .* has no parameters"):
        split(flat_mlp(), cuts=[2, 3], heads=None)  # component 2 = [ReLU] alone


def test_split_walks_nested_sequentials_and_chains_of_children():
    class Net(nn.Module):  # not a Sequential, but its forward is a chain of its children
        def __init__(self):
            super().__init__()
            self.flat = nn.Flatten()
            self.stem = nn.Linear(8, 16)
            self.body = nn.Sequential(nn.ReLU(), nn.Sequential(nn.Linear(16, 16), nn.ReLU()), nn.Linear(16, 16))
            self.out = nn.Linear(16, 3)

        def forward(self, x):
            return self.out(self.body(self.stem(self.flat(x))))

    model, x = Net(), torch.randn(4, 2, 4)
    want = model(x)
    net = split(model, points=["body.1.0", "out"], sample_input=x, heads="linear")
    assert net.split_plan.names == ("flat", "stem", "body.0", "body.1.0", "body.1.1", "body.2", "out")
    assert net.split_plan.cuts == (3, 6)
    torch.testing.assert_close(net(x), want, rtol=0, atol=0)
    assert [h.__class__.__name__ for h in net.heads[:2]] and net.heads[0](net.blocks[0](x)).shape == (4, 3)
    assert "linear on (16,)" in net.split_plan.describe()
    with pytest.raises(ValueError, match="not an nn.Sequential: pass sample_input"):
        split(model, points=["body.1.0"])
    with pytest.raises(ValueError, match="are not modules"):
        split(model, points=["nowhere"], sample_input=x)


def test_a_residual_block_is_kept_whole_and_cutting_inside_it_is_refused():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(6, 6), nn.Linear(6, 6)

        def forward(self, x):
            return x + self.b(self.a(x))

    model, x = nn.Sequential(nn.Linear(4, 6), Residual(), Residual(), nn.Linear(6, 2)), torch.randn(3, 4)
    names, _ = flatten_blocks(model, sample_input=x)
    assert names == ["0", "1", "2", "3"]
    with pytest.raises(ValueError, match="not a chain"):
        split(model, points=["1.b"], sample_input=x)


@pytest.mark.parametrize("balance", ["flops", "time", "params", "uniform"])
def test_automatic_split_trains_with_every_tool(balance):
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8), nn.ReLU(),
                          nn.Linear(8, 3))
    x, y = torch.randn(6, 2, 4), torch.randint(0, 3, (6,))
    net = split(model, components=3, sample_input=x, balance=balance, heads="linear")
    assert net.num_components == 3 and all(il.parameter_count(b) > 0 for b in net.blocks)
    engine = il.Engine(net, il.Interlocking(2), optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
                                loss_fn=nn.functional.cross_entropy)
    assert len(engine.step(x, y).losses) == 3
    if balance == "flops":  # the two 64-wide products (1024 and 8192 FLOPs per example ...) are kept apart
        costs = net.split_plan.component_costs
        assert max(costs) == brute_force(list(net.split_plan.costs), [il.parameter_count(b) > 0 for b in model], 3)


def test_user_heads_and_head_functions():
    model, x = flat_mlp(), torch.randn(2, 2, 4)
    mine = [nn.Linear(16, 3), nn.Linear(16, 3)]
    net = split(model, components=3, balance="uniform", heads=mine)
    assert list(net.heads[:2]) == mine
    net = split(flat_mlp(), components=3, balance="uniform", sample_input=x, heads=lambda k, shape: nn.Linear(shape[-1], 3))
    assert net.split_plan.heads[0] == "yours (Linear)"
    with pytest.raises(ValueError, match="one per cut"):
        split(flat_mlp(), components=3, balance="uniform", heads=mine[:1])
