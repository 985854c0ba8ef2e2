"""Async DGL and Hogwild with one process per component, against the simulated engines.

One spawn of K = 3 gloo processes runs every scenario (tests/dist_async_helpers.py); the
tests compare what each rank returned with the simulated engines, computed here.
"""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch

import interlock as il
from interlock.runtime.launch import run_local

import dist_async_helpers as A
import dist_helpers as H
from test_distributed import assert_bitwise_equal, component_state

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="this PyTorch build has no torch.distributed")

HOGWILD_CASES = [("bn", 0), ("dropout", 0), ("bn", 2)]
LOCKSTEP_CASES = [("bn", 1), ("bn", 3)]


@pytest.fixture(scope="module")
def ranks():
    scenarios = [(f"hogwild-{p}-{f}", "hogwild", (p, f)) for p, f in HOGWILD_CASES]
    scenarios += [(f"lockstep-{p}-{m}", "async_lockstep", (p, m)) for p, m in LOCKSTEP_CASES]
    scenarios.append(("slow", "async_slow", ()))
    scenarios.append(("tail", "async_tail", ()))
    scenarios.append(("across", "async_across", ("bn", _local_half_states())))
    return run_local(A.rank_main, A.K, scenarios, timeout_s=240)


ACROSS = il.AsyncLocal(buffer_size=2, schedule="round_robin")


def _local_half_states() -> list[bytes]:
    """The one-process round-robin run's component checkpoints after 2 of its A.ASYNC_STEPS steps."""
    _, _, engine, _ = _simulated(ACROSS, "bn", 2, total=A.ASYNC_STEPS)
    out = []
    for k in range(A.K):
        buf = io.BytesIO()
        torch.save(engine.component_state(k), buf)
        out.append(buf.getvalue())
    return out


def _simulated(strategy, parts, steps, *, total=None, seed=A.SEED, states=None, **opts):
    """``steps`` steps of a ``total``-step run (default: all) in one process; ``states``: component checkpoints
    (bytes) to resume from first."""
    blocks, heads, _, _, loss_fn = H.ALL_PARTS[parts](A.K, seed=seed)  # (the weights a checkpoint replaces)
    x, y = H.ALL_PARTS[parts](A.K, seed=A.SEED)[2:4]  # the data is the run's, whatever the seed
    net = il.ComponentNet(blocks=blocks, heads=heads)
    engine = il.Engine(net, strategy, optimizer=H.sgd, loss_fn=loss_fn, lr_scheduler=H.step_lr,
                       total_steps=total or steps, **opts)
    for k, state in enumerate(states or []):
        engine.load_component_state(k, torch.load(io.BytesIO(state), weights_only=True))
    losses = [engine.step(bx, by).losses for bx, by in H.batches_for(x, y, total or steps)[engine.step_count:][:steps]]
    return net, losses, engine, x


@pytest.mark.parametrize("parts,flush_every", HOGWILD_CASES)
def test_hogwild_pipeline_equals_the_simulated_stale_engine(ranks, parts, flush_every):
    net, losses, engine, x = _simulated(il.HogwildStashed(), parts, A.HOGWILD_STEPS, flush_every=flush_every,
                                        rng_seed=A.RNG_SEED)
    net.eval()
    with torch.no_grad():
        predictions = net.heads_forward(x)
    for k in range(A.K):
        got = ranks[k][f"hogwild-{parts}-{flush_every}"]
        assert got["in_flight"] == 0  # drained at the end
        assert_bitwise_equal(got["state"], component_state(net, k), f"hogwild {parts} flush_every={flush_every} component {k + 1}")
        assert got["losses"] == [l[k] for l in losses]
        if predictions[k] is not None:
            assert torch.equal(got["prediction"], predictions[k])


def test_hogwild_is_stale_not_end_to_end(ranks):
    # The same batches under plain end-to-end give other weights below the top (the delays matter).
    net, _, _, _ = _simulated(il.EndToEnd(), "bn", A.HOGWILD_STEPS, rng_seed=A.RNG_SEED)
    got = ranks[0]["hogwild-bn-0"]["state"]
    want = component_state(net, 0)
    assert any(not torch.equal(got[key], want[key]) for key in want if want[key].is_floating_point())


@pytest.mark.parametrize("parts,buffer_size", LOCKSTEP_CASES)
def test_async_in_lockstep_equals_the_simulated_round_robin_and_synchronous_local(ranks, parts, buffer_size):
    strategy = il.AsyncLocal(buffer_size=buffer_size, schedule="round_robin")
    net, losses, _, _ = _simulated(strategy, parts, A.ASYNC_STEPS)
    local_net, local_losses, _, _ = _simulated(il.Local(), parts, A.ASYNC_STEPS)
    assert losses == local_losses
    for k in range(A.K):
        got = ranks[k][f"lockstep-{parts}-{buffer_size}"]
        assert_bitwise_equal(got["state"], component_state(net, k), f"M={buffer_size} component {k + 1}")
        assert_bitwise_equal(got["state"], component_state(local_net, k), f"M={buffer_size} component {k + 1} vs Local")
        assert got["losses"] == [l[k] for l in losses]
        # Resumed from a checkpoint after 2 steps (buffers included): the uninterrupted run's numbers.
        assert_bitwise_equal(got["resumed_state"], got["state"], f"M={buffer_size} component {k + 1} resumed")
        assert got["tail_losses"] == got["losses"][2:]


def test_a_slowed_rank_slows_nobody_above_it_and_every_rank_makes_its_quota(ranks):
    slow, mid, top = (ranks[k]["slow"] for k in range(A.K))
    for r in (slow, mid, top):
        assert r["steps"] == A.SLOW_STEPS and r["finite"]
    # Component 1 needs at least SLOW_STEPS * sleep * S seconds; the ranks above only wait for its first output.
    floor = A.SLOW_STEPS * A.SLOW_SLEEP_S * A.SLOWDOWN
    assert slow["finished_s"] >= floor
    assert top["finished_s"] < 0.6 * slow["finished_s"] and mid["finished_s"] < 0.6 * slow["finished_s"]
    # So the rank above re-read entries (it trained faster than it was fed) ...
    assert mid["reuses"] > 0
    # ... and every output was received (one activation and its labels per step), none lost at the end.
    assert mid["received"] == top["received"] == 2 * A.SLOW_STEPS
    # Rank 0's log rows hold the latest report of each rank: NaN before its first, then never going back.
    rows = slow["rows"]
    for j in (1, 2):
        seen = [r[j] for r in rows if not math.isnan(r[j])]
        assert seen == sorted(seen) and all(1 <= v <= A.SLOW_STEPS for v in seen)
    assert [r[0] for r in rows] == list(range(1, A.SLOW_STEPS + 1))


def test_past_its_quota_a_rank_forwards_with_fixed_weights_until_every_rank_above_made_its_own(ranks):
    # The one rule of both runtimes (engine/policies/replay.py): the top component is slowed, so the ranks
    # below make their quotas first and keep feeding it outputs of their frozen weights.
    low, mid, top = (ranks[k]["tail"] for k in range(A.K))
    Q = A.TAIL_QUOTA
    assert top["updates"] == Q and top["frozen"] == 0 and top["steps"] == Q
    for r in (low, mid):
        assert r["updates"] == Q and r["frozen"] > 0 and r["steps"] == Q + r["frozen"]
        assert r["updated"] == [True] * Q + [False] * r["frozen"]  # no update past the quota ...
        assert_bitwise_equal(r["state"], r["at_quota"], "frozen past the quota")  # ... and no change of weights
    # Every output sent up was received, the forward-only ones included (an activation and its labels each).
    assert mid["received"] == 2 * (low["updates"] + low["frozen"]) and top["received"] == 2 * (mid["updates"] + mid["frozen"])
    # The ranks agree on the run's step count: rank 0's, the fresh batches read (as in one process).
    assert {r["agreed"] for r in (low, mid, top)} == {low["steps"]}
    assert low["counters"] == {"updates_1": Q, "frozen_forwards_1": low["frozen"]}
    assert mid["saved"]["updates"] == Q and mid["saved"]["frozen_forwards"] == mid["frozen"]


def test_the_one_process_rule_at_the_quota_is_the_same():
    # One process, the top component drawn 8x less often: the ones below run forward only past their quota.
    strategy = il.AsyncLocal(buffer_size=2, slowdown=8.0, slow_component=A.K, seed=1)
    blocks, heads, x, y, loss_fn = H.ALL_PARTS["mlp"](A.K, seed=A.SEED)
    engine = il.Engine(il.ComponentNet(blocks=blocks, heads=heads), strategy, optimizer=H.sgd, loss_fn=loss_fn, total_steps=3)
    data, i = H.batches_for(x, y, 8), 0
    while i < 3 or engine.wants_more:
        engine.step(*data[i % 8])
        i += 1
    p = engine.policy
    assert p.updates == [3] * A.K and p.frozen[A.K - 1] == 0 and p.frozen[0] > 0 and i == 3 + p.frozen[0]
    assert engine.end_training() == i


def test_round_robin_checkpoints_load_across_runtimes(ranks):
    full_net, full_losses, _, _ = _simulated(ACROSS, "bn", A.ASYNC_STEPS)
    # The ranks' 2-step checkpoints, resumed in one process for the remaining steps ...
    halves = [ranks[k]["across"]["half"] for k in range(A.K)]
    net, losses, _, _ = _simulated(ACROSS, "bn", A.ASYNC_STEPS - 2, total=A.ASYNC_STEPS, seed=A.SEED + 100, states=halves)
    assert losses == full_losses[2:]
    for k in range(A.K):
        assert_bitwise_equal(component_state(net, k), component_state(full_net, k), f"ranks -> local, component {k + 1}")
        # ... and the one process's 2-step checkpoint resumed on ranks: the uninterrupted run's numbers.
        got = ranks[k]["across"]
        assert_bitwise_equal(got["resumed_state"], component_state(full_net, k), f"local -> ranks, component {k + 1}")
        assert got["tail_losses"] == [l[k] for l in full_losses[2:]]


def test_a_drawn_runs_checkpoint_is_refused_on_ranks_with_the_reason():
    _, _, engine, _ = _simulated(il.AsyncLocal(buffer_size=2), "mlp", 2, total=4)
    state = engine.component_state(1)
    blocks, heads, _, _, loss_fn = H.ALL_PARTS["mlp"](A.K, seed=A.SEED)
    other = il.Engine(il.ComponentNet(blocks=blocks, heads=heads), il.AsyncLocal(buffer_size=2), optimizer=H.sgd,
                      loss_fn=loss_fn, lr_scheduler=H.step_lr, total_steps=4)
    state["policy"]["runtime"] = "ranks"  # as if written on ranks: the drawn schedule does not cross over
    with pytest.raises(ValueError, match="only round-robin runs agree step for step across runtimes"):
        other.load_component_state(1, state)


def test_the_rank_engines_refuse_what_they_cannot_run():
    blocks, heads, _, _, loss_fn = H.ALL_PARTS["mlp"](2, seed=0)
    net = il.ComponentNet(blocks=blocks, heads=heads)
    with pytest.raises(ValueError, match="total_steps"):
        il.Engine(copy.deepcopy(net), il.AsyncLocal(), runtime="ranks", total_steps=0, optimizer=H.sgd, loss_fn=loss_fn)
    with pytest.raises(ValueError, match="split_backward"):
        il.Engine(copy.deepcopy(net), il.HogwildStashed(), runtime="ranks", total_steps=3, split_backward=True,
                                   optimizer=H.sgd, loss_fn=loss_fn)
    with pytest.raises(ValueError, match="flush_every"):
        il.Engine(copy.deepcopy(net), il.HogwildStashed(), runtime="ranks", total_steps=3, flush_every=-1, optimizer=H.sgd, loss_fn=loss_fn)
    with pytest.raises(ValueError, match="needs the run's length: pass total_steps"):
        il.Engine(copy.deepcopy(net), il.HogwildStashed(), runtime="ranks", optimizer=H.sgd, loss_fn=loss_fn)
    with pytest.raises(ValueError, match="one process only"):
        il.Engine(copy.deepcopy(net), il.Sequential(), runtime="ranks", total_steps=3, optimizer=H.sgd, loss_fn=loss_fn)


# -- through the training program (interlock train --engine distributed) ----------------------------


def test_train_hogwild_and_lockstep_async_distributed_equal_simulated_and_free_async_finishes(tmp_path):
    pytest.importorskip("sklearn", reason="the bundled digits data set needs scikit-learn")
    from interlock.app.distributed_run import run_distributed
    from interlock.training.loop import run
    from test_train import assert_states_equal, component_states, config

    # checkpoint_every=3: hogwild's pipeline drains there on both engines (and the checkpoint is exact).
    extra = ["steps=6", "checkpoint_every=3", "threads=1", "data.eval_chunk=32", "eval_every=0"]
    for name, strategy in (("hogwild", ["strategy=hogwild-stashed"]),
                           ("lockstep", ["strategy=async-local", "replay.schedule=round_robin", "replay.buffer_size=2"])):
        simulated = run(config(tmp_path / f"sim-{name}", *extra, *strategy))
        distributed = run_distributed(config(tmp_path / f"dist-{name}", *extra, *strategy, "engine=distributed"), resume=False)
        assert distributed == simulated.final, name
        assert_states_equal(component_states(tmp_path / f"dist-{name}" / "run"), component_states(tmp_path / f"sim-{name}" / "run"))

    free = ["strategy=async-local", "replay.buffer_size=3", "replay.slowdown=2", "replay.slow_component=2", "log_every=2"]
    final = run_distributed(config(tmp_path / "free", *extra, *free, "engine=distributed"), resume=False)
    assert 0 <= final["test_final_acc"] <= 1 and final["test_acc_1"] is not None
    rows = [r for r in (tmp_path / "free" / "run" / "metrics.jsonl").read_text().splitlines() if '"train"' in r]
    assert len(rows) == 3  # every log row written by rank 0, none waiting for the slowed rank


def test_train_with_the_pipeline_engine_and_its_config_errors(tmp_path):
    pytest.importorskip("sklearn", reason="the bundled digits data set needs scikit-learn")
    from interlock.training.config import load_config
    from interlock.app.distributed_run import run_distributed
    from test_train import config

    extra = ["steps=4", "threads=1", "model.components=2", "strategy=end-to-end", "engine=pipeline", "eval_every=0"]
    for schedule in ("zb1p", "gpipe"):
        final = run_distributed(config(tmp_path / schedule, *extra, f"pipeline.schedule={schedule}", "pipeline.microbatches=2"),
                                resume=False)
        assert 0 <= final["test_final_acc"] <= 1 and final["test_acc_1"] is None  # the pipeline trains no auxiliary head
    for bad, match in (("strategy=2-wise", "use strategy=end-to-end"), ("pipeline.microbatches=3", "does not divide"),
                       ("pipeline.schedule=zbv", "pipeline.schedule='zbv'")):
        with pytest.raises(ValueError, match=match):
            load_config(None, ["steps=4", "model.components=2", "strategy=end-to-end", "engine=pipeline", "data.batch_size=32", bad])
