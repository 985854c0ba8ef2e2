"""Every engine offers the training program the same interface (interlock.engines.base.Engine)."""

from __future__ import annotations

import inspect

import pytest
import torch

import interlock as il
from interlock import engines
from interlock.engines.base import Engine
from reference import PARTS


def sgd(params):
    return torch.optim.SGD(params, lr=0.1)


@pytest.mark.parametrize("strategy", [il.Local(), il.Interlocking(2), il.AsyncLocal(), il.Sequential(), il.Hogwild(), il.HogwildStashed(),
                                      il.LocalDouble()], ids=lambda s: s.name)
def test_single_process_engines_satisfy_the_protocol(strategy):
    blocks, heads, x, y, loss_fn = PARTS["mlp"](4, seed=0)
    engine = engines.create(il.ComponentNet(blocks=blocks, heads=heads), strategy, total_steps=8, optimizer=sgd, loss_fn=loss_fn)
    assert isinstance(engine, Engine)
    engine.step(x, y)
    assert engine.wants_more in (True, False) and isinstance(engine.counters(), dict)
    table = torch.arange(8.0).reshape(4, 2)
    assert torch.equal(engine.log_sum(table), table)
    assert engine.device == torch.device("cpu")


def test_rank_engines_define_every_method_of_the_protocol():
    wanted = {n for n, v in vars(Engine).items() if not n.startswith("_") and (callable(v) or isinstance(v, property))}
    for cls in (engines.DistributedEngine, engines.PipelineEngine, engines.ReplayRankEngine, engines.StaleRankEngine):
        missing = {n for n in wanted if not hasattr(cls, n)}
        assert not missing, (cls.__name__, missing)
        assert inspect.signature(cls.step).parameters.keys() >= {"x", "y"}
