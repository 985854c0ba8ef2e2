"""track.memory: the bytes autograd keeps per component, counted by hand, freed after each step, and in the metrics."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import interlock as il
from interlock.measure import memstats
from interlock.training.config import load_config
from interlock.training.metrics import read_metrics
from interlock.training.loop import run

B, D, H, C = 64, 8, 32, 4
FLOAT, LONG = 4, 8


@pytest.fixture(autouse=True)
def meters_off():
    memstats.reset()
    yield
    memstats.enable(False)


def chain(K: int) -> il.ComponentNet:
    torch.manual_seed(0)
    blocks = [nn.Sequential(nn.Linear(D if k == 0 else H, H), nn.ReLU()) for k in range(K)]
    return il.ComponentNet(blocks=blocks, heads=[nn.Linear(H, C) for _ in range(K)])


def engine(net, strategy, **kw):
    return il.Engine(net, strategy, optimizer=lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
                              loss_fn=F.cross_entropy, **kw)


def test_one_component_keeps_exactly_what_its_backward_needs():
    # Counted by hand: the linear layer keeps its input x (its weight is a parameter: training
    # state, not counted); ReLU keeps its output, which the head's linear layer also keeps (one
    # storage, counted once); cross-entropy keeps the log-softmax, the labels and nll's total weight.
    memstats.enable(True)
    engine(chain(1), il.EndToEnd()).step(torch.randn(B, D), torch.randint(0, C, (B,)))
    m = memstats.meter(0)
    assert m.peak == B * D * FLOAT + B * H * FLOAT + B * C * FLOAT + B * LONG + FLOAT
    assert m.live == 0  # the graph was freed with the update


@pytest.mark.parametrize("strategy", [il.EndToEnd(), il.Local(), il.Interlocking(n=2), il.Interlocking(n=2, mix="sum")])
@pytest.mark.parametrize("microbatches", [1, 4])
def test_every_graph_is_freed_after_a_step(strategy, microbatches):
    memstats.enable(True)
    eng = engine(chain(3), strategy, microbatches=microbatches)
    for _ in range(2):
        eng.step(torch.randn(B, D), torch.randint(0, C, (B,)))
    assert all(memstats.meter(k).live == 0 for k in range(3))
    # Component 2 receives a (B, H) activation and keeps it, as its own layer's input.
    assert memstats.meter(1).peak >= B * H * FLOAT // microbatches


def test_state_bytes_are_parameters_gradients_and_optimizer_state():
    net = chain(1)
    eng = engine(net, il.EndToEnd())
    eng.step(torch.randn(B, D), torch.randint(0, C, (B,)))
    params = sum(p.numel() for p in [*net.blocks[0].parameters(), *net.heads[0].parameters()]) * FLOAT
    has_grads = any(p.grad is not None for p in net.blocks[0].parameters())
    # SGD with momentum keeps one buffer per parameter.
    assert memstats.state_bytes(eng.optimizers[0]) == params * (3 if has_grads else 2)


def test_the_meters_cost_nothing_when_off():
    eng = engine(chain(2), il.Local())
    eng.step(torch.randn(B, D), torch.randint(0, C, (B,)))
    assert not memstats.enabled() and memstats._METERS == {}


pytest.importorskip("sklearn", reason="the bundled digits data set needs scikit-learn")
BASE = ["data.name=digits", "data.batch_size=32", "data.eval_batch_size=200", "model.name=toy_cnn_strided",
        "model.components=2", "strategy=2-wise", "log_every=2", "threads=1", "data.eval_chunk=32",
        "track.memory=true", "split_backward=false"]


def memory_fields(run_dir):
    rows = [r for r in read_metrics(run_dir) if r["kind"] == "train"]
    return [{k: v for k, v in r.items() if k.startswith(("peak_", "state_bytes"))} for r in rows]


def test_metrics_rows_hold_each_components_peak_and_the_distributed_engine_agrees(tmp_path):
    from interlock.app.distributed_run import run_distributed

    run(load_config(None, [*BASE, "steps=4", f"run_dir={tmp_path / 'sim'}"]))
    sim = memory_fields(tmp_path / "sim")
    assert len(sim) == 2 and all(r[f"peak_saved_bytes_{k}"] > 0 and r[f"state_bytes_{k}"] > 0 for r in sim for k in (1, 2))
    assert all(r[f"peak_memory_bytes_{k}"] == r[f"peak_saved_bytes_{k}"] + r[f"state_bytes_{k}"] for r in sim for k in (1, 2))
    run_distributed(load_config(None, [*BASE, "steps=4", "engine=distributed", f"run_dir={tmp_path / 'dist'}"]), resume=False)
    assert memory_fields(tmp_path / "dist") == sim  # the same tensors are kept, one process or one per component
