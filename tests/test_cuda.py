"""The CUDA paths: skipped cleanly without a GPU (the development machine has none; see README).

- the simulated engine on CUDA gives the CPU run's parameters to float tolerance;
- action times on a GPU come from CUDA events (interlock.measure.timing) and resolve to seconds;
- the distributed engine over NCCL (one GPU per rank, so it needs two GPUs: NCCL refuses two ranks
  on one device) gives the simulated engine's parameters, with the training program's transport;
- with one GPU, the distributed engine's CUDA code runs with both ranks sharing it over gloo
  (``backend="gloo"``, messages staged through the CPU), timed by CUDA events.
"""

from __future__ import annotations

import pytest
import torch

import interlock as il
from interlock.runtime.launch import run_local
from interlock.measure.timing import Mark, resolve

import dist_helpers as H
from reference import PARTS, state_of

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL needs one GPU per rank: needs 2 CUDA devices")


def _train(device: str, strategy, steps: int = 3):
    blocks, heads, x, y, loss_fn = PARTS["bn"](3, seed=5)
    net = il.ComponentNet(blocks=blocks, heads=heads).to(device)
    engine = il.Engine(net, strategy, optimizer=H.sgd, loss_fn=loss_fn, rng_seed=1)
    records = []
    for bx, by in H.batches_for(x, y, steps):
        records += engine.step(bx.to(device), by.to(device)).records
    return net, records


@cuda
def test_simulated_engine_on_cuda_matches_the_cpu_and_times_actions_with_cuda_events():
    for strategy in (il.EndToEnd(), il.Local(), il.Interlocking(2)):
        cpu, _ = _train("cpu", strategy)
        gpu, records = _train("cuda", strategy)
        a, b = state_of([cpu]), state_of([gpu])
        for key in a:
            torch.testing.assert_close(b[key].cpu(), a[key], rtol=1e-4, atol=1e-5, msg=lambda m: f"{strategy.name} {key}: {m}")
        assert records and all(isinstance(r.start_s, Mark) for r in records)
        seconds = resolve(records)
        assert all(0 <= r.end_s - r.start_s < 10 for r in seconds)


def _assert_ranks_equal_the_simulated_engine(ranks: list[dict], strategy: str) -> None:
    # H.with_backend's run (the 2-component MLP, 3 steps) against the simulated engine on the CPU.
    from interlock.training.config import parse_strategy
    from test_distributed import component_state

    blocks, heads, x, y, loss_fn = PARTS["mlp"](2, seed=7)
    net = il.ComponentNet(blocks=blocks, heads=heads)
    sim = il.Engine(net, parse_strategy(strategy), optimizer=H.sgd, loss_fn=loss_fn)
    for bx, by in H.batches_for(x, y, 3):
        sim.step(bx, by)
    for k, got in enumerate(ranks):
        want = component_state(net, k)
        for key, value in got["state"].items():
            torch.testing.assert_close(value, want[key], rtol=1e-4, atol=1e-5)


@two_gpus
@pytest.mark.parametrize("strategy", ["end-to-end", "local", "2-wise"])
def test_distributed_engine_over_nccl_equals_the_simulated_engine(strategy):
    ranks = run_local(H.with_backend, 2, strategy, "cuda", None, timeout_s=300)  # LOCAL_RANK = rank: GPU k
    assert [got["backend"] for got in ranks] == ["nccl", "nccl"] and not any(got["staged"] for got in ranks)
    _assert_ranks_equal_the_simulated_engine(ranks, strategy)


@cuda
@pytest.mark.parametrize("strategy", ["end-to-end", "local", "2-wise"])
def test_ranks_sharing_one_gpu_over_gloo_equal_the_simulated_engine(strategy):
    ranks = run_local(H.with_backend, 2, strategy, "cuda", "gloo", timeout_s=300)
    for got in ranks:
        assert got["staged"] and got["backend"] == "gloo" and got["device"].startswith("cuda")
        assert got["marks"]  # action times from CUDA events
    _assert_ranks_equal_the_simulated_engine(ranks, strategy)
