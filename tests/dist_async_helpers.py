"""What the processes spawned by tests/test_distributed_async.py run (module level, so "spawn" can import it).

Each function runs on every rank of one K = 3 process group and returns plain data for the
parent process to compare with the simulated engines.
"""

from __future__ import annotations

import io
import time

import torch
from torch import nn

import interlock as il
from interlock.engine import Engine
from dist_helpers import ALL_PARTS, Sleep, _init_group, batches_for, own_state, sgd, step_lr

K = 3
SEED = 33
HOGWILD_STEPS = 5
ASYNC_STEPS = 4
SLOW_STEPS, SLOW_SLEEP_S, SLOWDOWN = 6, 0.05, 3.0
TAIL_QUOTA, TAIL_SLEEP_S = 3, 0.03
RNG_SEED = 9


def hogwild(parts: str, flush_every: int) -> dict:
    """Hogwild, one process per component: this rank's parameters and losses."""
    blocks, heads, x, y, loss_fn = ALL_PARTS[parts](K, seed=SEED)
    net = il.ComponentNet(blocks=blocks, heads=heads)
    engine = Engine(net, il.HogwildStashed(), runtime="ranks", total_steps=HOGWILD_STEPS, flush_every=flush_every, optimizer=sgd,
                             loss_fn=loss_fn, lr_scheduler=step_lr, rng_seed=RNG_SEED, timeout_s=60)
    losses = [engine.step(bx if engine.rank == 0 else None, by).losses[engine.rank]
              for bx, by in batches_for(x, y, HOGWILD_STEPS)]
    net.eval()
    prediction = engine.heads_forward(x if engine.rank == 0 else None)[engine.rank]
    out = {"state": own_state(engine), "losses": losses, "prediction": prediction, "in_flight": len(engine.policy.in_flight)}
    engine.close()
    return out


def _replay(strategy, parts: str, total_steps: int, seed: int = SEED) -> Engine:
    blocks, heads, _, _, loss_fn = ALL_PARTS[parts](K, seed=seed)
    net = il.ComponentNet(blocks=blocks, heads=heads)
    return Engine(net, strategy, runtime="ranks", total_steps=total_steps, optimizer=sgd, loss_fn=loss_fn, lr_scheduler=step_lr,
                            timeout_s=60)


def async_lockstep(parts: str, buffer_size: int) -> dict:
    """Round-robin (the forced interleaving): this rank's parameters and losses after ASYNC_STEPS steps,
    and the same run interrupted after 2 steps and resumed from its component state."""
    strategy = il.AsyncLocal(buffer_size=buffer_size, schedule="round_robin")
    x, y = ALL_PARTS[parts](K, seed=SEED)[2:4]
    data = batches_for(x, y, ASYNC_STEPS)

    def train(engine, part):
        return [engine.step(bx if engine.rank == 0 else None, by if engine.rank == 0 else None).losses[engine.rank]
                for bx, by in part]

    full = _replay(strategy, parts, ASYNC_STEPS)
    losses = train(full, data)
    out = {"state": own_state(full), "losses": losses}
    full.close()

    half = _replay(strategy, parts, ASYNC_STEPS)
    train(half, data[:2])
    buf = io.BytesIO()
    torch.save(half.component_state(half.rank), buf)
    half.close()
    resumed = _replay(strategy, parts, ASYNC_STEPS, seed=SEED + 100)
    buf.seek(0)
    resumed.load_component_state(resumed.rank, torch.load(buf, weights_only=False))
    out["tail_losses"] = train(resumed, data[2:])
    out["resumed_state"] = own_state(resumed)
    resumed.close()
    return out


def async_slow() -> dict:
    """Free-running async DGL with component 1 slowed S-fold for real: when each rank finishes, what it
    read, and what rank 0's log rows hold."""
    blocks, heads, x, y, loss_fn = ALL_PARTS["mlp"](K, seed=SEED)
    blocks[0] = nn.Sequential(Sleep(SLOW_SLEEP_S), blocks[0])
    net = il.ComponentNet(blocks=blocks, heads=heads)
    strategy = il.AsyncLocal(buffer_size=4, slowdown=SLOWDOWN, slow_component=1)
    engine = Engine(net, strategy, runtime="ranks", total_steps=SLOW_STEPS, optimizer=sgd, loss_fn=loss_fn, timeout_s=60)
    rows = []
    for bx, by in batches_for(x, y, SLOW_STEPS):
        result = engine.step(bx if engine.rank == 0 else None, by if engine.rank == 0 else None)
        table = torch.zeros(K, 4, dtype=torch.float64)
        table[engine.rank, 0] = float(engine.step_count)  # "this rank has made n updates"
        rows.append(engine.log_sum(table)[:, 0].tolist())
        assert result.updated == [j == engine.rank for j in range(K)]
    finished_s = time.perf_counter() - engine.epoch_s
    out = {"finished_s": finished_s, "steps": engine.step_count, "reuses": 0 if engine.policy.buffer is None else engine.policy.buffer.rereads, "rows": rows,
           "buffer": None if engine.policy.buffer is None else engine.policy.buffer.contents()}
    engine.close()
    out["received"] = None if engine.policy.inbox is None else engine.policy.inbox.received
    out["finite"] = all(bool(torch.isfinite(t).all()) for t in own_state(engine).values() if t.is_floating_point())
    return out


def async_tail() -> dict:
    """Free-running async DGL with the top component slowed: the ranks below make their quotas first and run
    forward only until it has made its own, as the training loop drives them (``wants_more``)."""
    blocks, heads, x, y, loss_fn = ALL_PARTS["mlp"](K, seed=SEED)
    blocks[K - 1] = nn.Sequential(Sleep(TAIL_SLEEP_S), blocks[K - 1])
    net = il.ComponentNet(blocks=blocks, heads=heads)
    strategy = il.AsyncLocal(buffer_size=2, slowdown=SLOWDOWN, slow_component=K)
    engine = Engine(net, strategy, runtime="ranks", total_steps=TAIL_QUOTA, optimizer=sgd, loss_fn=loss_fn, timeout_s=60)
    data = batches_for(x, y, 8)
    steps, at_quota, updated = 0, None, []
    while engine.step_count < TAIL_QUOTA or engine.wants_more:
        bx, by = data[steps % len(data)]
        result = engine.step(bx if engine.rank == 0 else None, by if engine.rank == 0 else None)
        updated.append(result.updated[engine.rank])
        steps += 1
        if engine.policy.updates == TAIL_QUOTA and at_quota is None:
            at_quota = own_state(engine)
    agreed = engine.end_training()
    out = {"steps": steps, "agreed": agreed, "updated": updated, "updates": engine.policy.updates,
           "frozen": engine.policy.frozen, "state": own_state(engine), "at_quota": at_quota,
           "counters": engine.counters(), "saved": engine.component_state(engine.rank)["policy"]}
    engine.close()
    out["received"] = None if engine.policy.inbox is None else engine.policy.inbox.received
    return out


def async_across(parts: str, local_states: list[bytes]) -> dict:
    """Round robin across runtimes: this rank's state after 2 steps (for the one-process engine to resume), and
    after resuming the one-process engine's 2-step checkpoint for the remaining steps."""
    strategy = il.AsyncLocal(buffer_size=2, schedule="round_robin")
    x, y = ALL_PARTS[parts](K, seed=SEED)[2:4]
    data = batches_for(x, y, ASYNC_STEPS)
    half = _replay(strategy, parts, ASYNC_STEPS)
    for bx, by in data[:2]:
        half.step(bx if half.rank == 0 else None, by if half.rank == 0 else None)
    buf = io.BytesIO()
    torch.save(half.component_state(half.rank), buf)
    half.close()
    resumed = _replay(strategy, parts, ASYNC_STEPS, seed=SEED + 100)
    resumed.load_component_state(resumed.rank, torch.load(io.BytesIO(local_states[resumed.rank]), weights_only=True))
    losses = [resumed.step(bx if resumed.rank == 0 else None, by if resumed.rank == 0 else None).losses[resumed.rank]
              for bx, by in data[2:]]
    out = {"half": buf.getvalue(), "resumed_state": own_state(resumed), "tail_losses": losses}
    resumed.close()
    return out


def rank_main(scenarios: list[tuple[str, str, tuple]]) -> dict:
    _init_group()
    out = {}
    for key, fn, args in scenarios:
        out[key] = globals()[fn](*args)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    return out
