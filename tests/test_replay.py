"""Async DGL with replay buffers: buffer policy, draws, quotas, Local() equivalence, resume."""

from __future__ import annotations

import copy

import pytest
import torch

import interlock as il
from interlock.training.config import load_config
from interlock.engine.policies.buffer import ReplayBuffer
from interlock.engine.policies.replay import ComponentSampler
from reference import PARTS, state_of


def sgd(params):
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-3)


def batches(x, y, steps):
    return [(x.roll(s, 0), y.roll(s, 0)) for s in range(steps)]


def tagged(i):
    """A batch whose activation is the number i (so a read says which write it got)."""
    return torch.tensor([float(i)]), torch.tensor([i])


def read_ids(buffer, n):
    return [int(buffer.read()[0]) for _ in range(n)]


# -- the buffer's policy, on hand-built sequences ----------------------------------------------


def test_reads_are_last_in_first_out_among_the_least_reused():
    b = ReplayBuffer(3)
    for i in range(3):
        b.write(*tagged(i))
    # All unread: newest first. Then all read once: newest first again.
    assert read_ids(b, 3) == [2, 1, 0]
    assert b.rereads == 0  # three fresh entries
    assert read_ids(b, 4) == [2, 1, 0, 2]
    assert b.contents() == [(0, 2), (1, 2), (2, 3)]
    assert b.rereads == 4  # every read since took an entry read before


def test_a_fresh_write_is_read_next_and_overwrites_the_oldest_write():
    b = ReplayBuffer(2)
    b.write(*tagged(0))
    b.write(*tagged(1))
    assert read_ids(b, 1) == [1]
    # Full: the next write replaces entry 0 (the oldest), although entry 0 was never read and 1 was.
    b.write(*tagged(2))
    assert b.contents() == [(1, 1), (2, 0)]
    assert read_ids(b, 3) == [2, 2, 1]  # 2 (0 reuses), then a tie at 1 reuse: 2 is newer; then 1 (1 < 2 reuses)
    b.write(*tagged(3))  # replaces 1, now the oldest
    assert b.contents() == [(2, 2), (3, 0)]
    assert read_ids(b, 2) == [3, 3]


def test_buffer_of_one_always_holds_the_last_write():
    b = ReplayBuffer(1)
    with pytest.raises(LookupError, match="empty"):
        b.read()
    for i in range(3):
        b.write(*tagged(i))
        assert read_ids(b, 2) == [i, i]
    with pytest.raises(ValueError, match="M >= 1"):
        ReplayBuffer(0)


def test_buffer_state_round_trips():
    a = ReplayBuffer(3)
    for i in range(5):
        a.write(*tagged(i))
        read_ids(a, i % 2)
    b = ReplayBuffer(3)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    assert b.contents() == a.contents()
    assert read_ids(b, 5) == read_ids(a, 5)
    assert b.rereads == a.rereads > 0
    with pytest.raises(ValueError, match="replay.buffer_size=3"):
        ReplayBuffer(2).load_state_dict(a.state_dict())


# -- the draws ------------------------------------------------------------------------------------


def test_pmf_divides_the_slow_component_by_S():
    p = il.AsyncLocal(slowdown=4.0, slow_component=2).pmf(4)
    assert p == pytest.approx([1 / 3.25, 0.25 / 3.25, 1 / 3.25, 1 / 3.25])
    assert il.AsyncLocal().pmf(3) == pytest.approx([1 / 3] * 3)


def test_draws_follow_the_pmf_and_the_seed():
    strategy = il.AsyncLocal(slowdown=3.0, slow_component=3, seed=7)
    K, n = 4, 20_000
    sampler = ComponentSampler(strategy, K)
    counts = torch.bincount(torch.tensor([sampler.draw() for _ in range(n)]), minlength=K).double()
    p = torch.tensor(strategy.pmf(K), dtype=torch.float64)
    sigma = (n * p * (1 - p)).sqrt()
    assert ((counts - n * p).abs() < 4 * sigma).all(), (counts, n * p)
    a, b = ComponentSampler(strategy, K), ComponentSampler(strategy, K)
    assert [a.draw() for _ in range(100)] == [b.draw() for _ in range(100)]  # seeded: reproducible
    rr = ComponentSampler(il.AsyncLocal(schedule="round_robin"), 3)
    assert [rr.draw() for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]


# -- the engine ----------------------------------------------------------------------------------


@pytest.mark.parametrize("parts", ["mlp", "bn"])
def test_buffer_of_one_round_robin_equals_synchronous_local_bit_for_bit(parts):
    K, steps = 3, 4
    blocks, heads, x, y, loss_fn = PARTS[parts](K, seed=11)
    data = batches(x, y, steps)
    local_net = il.ComponentNet(blocks=copy.deepcopy(blocks), heads=copy.deepcopy(heads))
    local = il.Engine(local_net, il.Local(), optimizer=sgd, loss_fn=loss_fn)
    local_losses = [local.step(bx, by).losses for bx, by in data]

    net = il.ComponentNet(blocks=copy.deepcopy(blocks), heads=copy.deepcopy(heads))
    engine = il.Engine(net, il.AsyncLocal(buffer_size=1, schedule="round_robin"), optimizer=sgd,
                             loss_fn=loss_fn, total_steps=steps)
    losses = [engine.step(bx, by).losses for bx, by in data]
    assert engine.policy.finished and not engine.wants_more and engine.policy.updates == [steps] * K
    assert losses == local_losses
    a, b = state_of([net]), state_of([local_net])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # BatchNorm statistics included


def run_to_quota(engine, data, quota):
    """What the training loop does: one fresh batch per step until every component made its quota."""
    steps, i = [], 0
    while i < quota or engine.wants_more:
        bx, by = data[i % len(data)]
        steps.append(engine.step(bx, by))
        assert all(u <= quota for u in engine.policy.updates)
        i += 1
    return steps


def test_quota_every_component_makes_exactly_its_updates_and_a_finished_one_stops():
    K, quota = 3, 12
    blocks, heads, x, y, loss_fn = PARTS["bn"](K, seed=4)
    net = il.ComponentNet(blocks=blocks, heads=heads)
    # Component 2 is drawn 4x less often: components 1 and 3 make their quota long before it.
    engine = il.Engine(net, il.AsyncLocal(buffer_size=2, slowdown=4.0, slow_component=2, seed=3),
                             optimizer=sgd, loss_fn=loss_fn, total_steps=quota)
    data = batches(x, y, 5)
    frozen = None
    i = 0
    while i < quota or engine.wants_more:
        result = engine.step(*data[i % len(data)])
        i += 1
        if engine.policy.updates[0] == quota and frozen is None:
            frozen = copy.deepcopy(state_of([net.blocks[0], net.heads[0]]))  # component 1 just finished
        assert result.updated[0] == (i <= quota)  # component 1 trains on each of the first `quota` batches only
    assert engine.policy.updates == [quota] * K and engine.policy.finished
    assert i > quota  # component 2 needed more batches, fed through the finished component 1
    after = state_of([net.blocks[0], net.heads[0]])
    assert all(torch.equal(after[k], frozen[k]) for k in after)  # parameters and BatchNorm statistics
    assert engine.policy.skipped > 0  # component 3's draws once it finished (and any before B_2 held something)
    row = engine.counters()
    assert [row[f"updates_{k}"] for k in (1, 2, 3)] == [quota] * 3 and row["draws"] == engine.policy.sampler.draws


def test_starved_components_are_skipped_until_something_is_written_below():
    K = 4
    blocks, heads, x, y, loss_fn = PARTS["mlp"](K, seed=2)
    engine = il.Engine(il.ComponentNet(blocks=blocks, heads=heads), il.AsyncLocal(seed=5), optimizer=sgd,
                             loss_fn=loss_fn, total_steps=50)
    result = engine.step(x, y)
    # Before component 1's first batch every buffer is empty; afterwards component j can only have
    # trained if component j-1 trained before it.
    assert result.updated[0]
    for j in range(1, K):
        assert engine.policy.updates[j] <= engine.policy.updates[j - 1] or engine.policy.updates[j - 1] > 0


def test_resume_from_component_states_continues_the_same_draws():
    K, quota = 3, 6
    blocks, heads, x, y, loss_fn = PARTS["bn"](K, seed=8)
    data = batches(x, y, 4)
    strategy = il.AsyncLocal(buffer_size=3, slowdown=2.0, slow_component=3, seed=1)
    make = lambda b, h: il.Engine(il.ComponentNet(blocks=b, heads=h), strategy, optimizer=sgd, loss_fn=loss_fn,
                                        total_steps=quota)
    full = make(copy.deepcopy(blocks), copy.deepcopy(heads))
    full_losses = [r.losses for r in run_to_quota(full, data, quota)]
    part = make(copy.deepcopy(blocks), copy.deepcopy(heads))
    first = [part.step(*data[i]).losses for i in range(3)]
    saved = copy.deepcopy([part.component_state(k) for k in range(K)])
    fresh_blocks, fresh_heads, *_ = PARTS["bn"](K, seed=99)
    resumed = make(fresh_blocks, fresh_heads)
    for k, state in enumerate(saved):
        resumed.load_component_state(k, state)
    rest = [resumed.step(*data[i % len(data)]).losses for i in range(3, len(full_losses))]
    torch.testing.assert_close(torch.tensor(first + rest), torch.tensor(full_losses), rtol=0, atol=0, equal_nan=True)
    assert resumed.policy.updates == full.policy.updates and resumed.policy.sampler.draws == full.policy.sampler.draws
    a, b = state_of([resumed.net]), state_of([full.net])
    assert all(torch.equal(a[k], b[k]) for k in a)
    local_state = il.Engine(il.ComponentNet(blocks=blocks, heads=heads), il.Local(), optimizer=sgd,
                                     loss_fn=loss_fn).component_state(0)
    with pytest.raises(ValueError, match="not written by async-local"):
        resumed.load_component_state(0, local_state)


@pytest.mark.parametrize("override,match", [
    ("replay.buffer_size=0", r"replay.buffer_size=0: use an integer M >= 1"),
    ("replay.slowdown=0", r"replay.slowdown=0.0: use a finite S > 0"),
    ("replay.slowdown=-2", r"replay.slowdown=-2.0: use a finite S > 0"),
    ("replay.slow_component=4", r"slow_component=4 is out of range for 3 components; use 1..3"),
    ("replay.slow_component=0", r"replay.slow_component=0: use a component number"),
    ("replay.schedule=lifo", r"replay.schedule='lifo'"),
    ("replay.slowdown=inf", r"replay.slowdown=inf: use a finite S > 0"),
])
def test_bad_replay_options_name_what_to_set(override, match):
    with pytest.raises(ValueError, match=match):
        load_config(None, ["steps=4", "strategy=async-local", "model.components=3", override])


@pytest.mark.parametrize("kwargs,match", [
    (dict(buffer_size=0), r"^buffer_size=0: use an integer M >= 1"),
    (dict(slowdown=True), r"^slowdown=True: use a finite S > 0"),
    (dict(slow_component=1.5), r"^slow_component=1.5: use a component number"),
    (dict(schedule="lifo"), r"^schedule='lifo': use one of random, round_robin"),
    (dict(seed=None), r"^seed=None: use an integer"),
])
def test_bad_async_local_arguments_say_what_to_change(kwargs, match):
    # The same checks as the config's replay section, named as the strategy's own arguments.
    with pytest.raises(ValueError, match=match):
        il.AsyncLocal(**kwargs)


def test_config_builds_the_strategy_with_its_options_and_the_run_seed():
    cfg = load_config(None, ["steps=4", "strategy=async-local", "model.components=3", "seed=5",
                             "replay.buffer_size=4", "replay.slowdown=2", "replay.slow_component=3"])
    assert cfg.strategy_obj == il.AsyncLocal(buffer_size=4, slowdown=2.0, slow_component=3, seed=5)
    cfg = load_config(None, ["steps=4", "strategy=async", "replay.seed=9", "replay.schedule=round_robin"])
    assert cfg.strategy_obj == il.AsyncLocal(schedule="round_robin", seed=9)


# -- through the training program ------------------------------------------------------------------

DIGITS = ["data.name=digits", "data.batch_size=32", "data.eval_batch_size=500", "data.val_size=100",
          "model.name=toy_cnn_strided", "model.components=3", "optim.lr=0.05", "log_every=2", "eval_every=4"]


def test_train_async_local_resumes_exactly_and_reads_past_total_steps_until_every_quota(tmp_path):
    pytest.importorskip("sklearn", reason="the bundled digits data set needs scikit-learn")
    from interlock.training.checkpoint import latest_checkpoint
    from interlock.training.metrics import read_metrics
    from interlock.training.loop import run

    extra = DIGITS + ["steps=8", "strategy=async-local", "checkpoint_every=3", "replay.buffer_size=2",
                      "replay.slowdown=3", "replay.slow_component=2", "lr.name=cosine"]
    full = run(load_config(None, extra + [f"run_dir={tmp_path / 'a'}"]))
    train_rows = [r for r in full.history if r["kind"] == "train"]
    assert [train_rows[-1][f"updates_{k}"] for k in (1, 2, 3)] == [8, 8, 8]
    assert full.steps > 8  # the slow component 2 needed more batches than its quota
    assert full.final["test_final_acc"] is not None

    cfg = load_config(None, extra + [f"run_dir={tmp_path / 'b'}"])
    run(cfg, stop_after=7)
    assert latest_checkpoint(tmp_path / "b").name == "step_00000006"
    resumed = run(cfg, resume=True)
    assert resumed.final == full.final and resumed.steps == full.steps
    drop = ("step_time_s", "samples_per_s", "predicted_parallel_step_time_s", "busy_s_", "wait_s_", "comm_s_")
    clean = lambda rows: [{k: v for k, v in r.items() if not k.startswith(drop)} for r in rows]
    assert clean(read_metrics(tmp_path / "b")) == clean(read_metrics(tmp_path / "a"))
    for k in (1, 2, 3):
        a = torch.load(latest_checkpoint(tmp_path / "a") / f"component_{k}.pt", weights_only=False)
        b = torch.load(latest_checkpoint(tmp_path / "b") / f"component_{k}.pt", weights_only=False)
        assert all(torch.equal(a["block"][n], b["block"][n]) for n in a["block"])
