"""Sequential greedy training: stages, frozen components, each stage equals Local() on frozen outputs."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import interlock as il
from interlock.core.strategies import stage_lengths
from reference import PARTS, state_of


def sgd(params):
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-3)


def batches(x, y, steps):
    return [(x.roll(s, 0), y.roll(s, 0)) for s in range(steps)]


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_stage_lengths_split_the_run_evenly():
    assert stage_lengths(10, 3) == [4, 3, 3]
    assert stage_lengths(6, 3) == [2, 2, 2]
    assert il.Sequential().updates_per_component(3, 7) == [3, 2, 2]
    with pytest.raises(ValueError, match="needs at least 3 steps"):
        stage_lengths(2, 3)


def test_each_stage_trains_one_component_and_freezes_those_below():
    K, per_stage = 3, 3
    blocks, heads, x, y, loss_fn = PARTS["bn"](K, seed=5)
    data = batches(x, y, K * per_stage)
    net = il.ComponentNet(blocks=copy.deepcopy(blocks), heads=copy.deepcopy(heads))
    engine = il.Engine(net, il.Sequential(), optimizer=sgd, loss_fn=loss_fn, total_steps=K * per_stage)
    component = lambda k: copy.deepcopy(state_of([net.blocks[k], net.heads[k]]))
    snapshots = [component(k) for k in range(K)]  # each component's state when its stage starts
    for stage in range(K):
        assert engine.policy.stage() == stage
        start = {k: component(k) for k in range(K)}
        for i in range(per_stage):
            result = engine.step(*data[stage * per_stage + i])
            assert result.updated == [k == stage for k in range(K)]
        for k in range(K):
            changed = not same(component(k), start[k])
            assert changed == (k == stage), (stage, k)  # parameters and BatchNorm statistics
        if stage + 1 < K:
            snapshots[stage + 1] = component(stage + 1)
    with pytest.raises(RuntimeError, match="complete after 9 steps"):
        engine.step(x, y)


def test_a_stage_equals_local_training_of_that_component_on_the_frozen_outputs():
    K, per_stage = 3, 3
    blocks, heads, x, y, loss_fn = PARTS["bn"](K, seed=6)
    data = batches(x, y, K * per_stage)
    net = il.ComponentNet(blocks=copy.deepcopy(blocks), heads=copy.deepcopy(heads))
    engine = il.Engine(net, il.Sequential(), optimizer=sgd, loss_fn=loss_fn, total_steps=K * per_stage)
    for i in range(per_stage):  # stage 1
        engine.step(*data[i])
    frozen = copy.deepcopy(net.blocks[0]).eval()
    single = il.ComponentNet(blocks=[copy.deepcopy(net.blocks[1])], heads=[copy.deepcopy(net.heads[1])])
    local = il.Engine(single, il.Local(), optimizer=sgd, loss_fn=loss_fn)
    for i in range(per_stage, 2 * per_stage):  # stage 2, and the reference beside it
        bx, by = data[i]
        seq_loss = engine.step(bx, by).losses[1]
        with torch.no_grad():
            a = frozen(bx)
        assert local.step(a, by).losses == [seq_loss]
    assert same(state_of([net.blocks[1], net.heads[1]]), state_of([single.blocks[0], single.heads[0]]))


def test_train_sequential_with_per_stage_lr_schedules_and_resume(tmp_path):
    pytest.importorskip("sklearn", reason="the bundled digits data set needs scikit-learn")
    from interlock.training.checkpoint import latest_checkpoint
    from interlock.training.config import load_config
    from interlock.training.loop import run

    base = ["data.name=digits", "data.batch_size=32", "data.eval_batch_size=500", "model.name=toy_cnn_strided",
            "model.components=3", "optim.lr=0.05", "log_every=3", "steps=9", "strategy=sequential",
            "checkpoint_every=2", "lr.name=multistep", "lr.milestones=0.5"]
    full = run(load_config(None, base + [f"run_dir={tmp_path / 'a'}"]))
    rows = [r for r in full.history if r["kind"] == "train"]
    assert [r["step"] for r in rows] == [3, 6, 9] and math.isnan(rows[0]["loss_2"]) and math.isnan(rows[1]["loss_1"])
    cfg = load_config(None, base + [f"run_dir={tmp_path / 'b'}"])
    run(cfg, stop_after=5)  # in stage 2; newest checkpoint at step 4
    resumed = run(cfg, resume=True)
    assert resumed.final == full.final
    for k in (1, 2, 3):
        a = torch.load(latest_checkpoint(tmp_path / "a") / f"component_{k}.pt", weights_only=False)
        b = torch.load(latest_checkpoint(tmp_path / "b") / f"component_{k}.pt", weights_only=False)
        assert all(torch.equal(a["block"][n], b["block"][n]) for n in a["block"])
        # A 3-step stage with its LR milestone at half of it: decayed once (0.05 -> 0.005) after step 2 of 3.
        assert a["lr_scheduler"]["last_epoch"] == 3 and a["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.005)
