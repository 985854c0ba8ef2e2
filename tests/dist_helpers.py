"""What the processes spawned by tests/test_distributed.py run (module level, so "spawn" can import it).

Each function runs on every rank and returns plain data (state dicts, floats, counts)
for the parent process to compare with the simulated engine.
"""

from __future__ import annotations

import io
import time
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

import interlock as il
from interlock.engine import Engine
from interlock.core.strategies import EndToEnd
from reference import PARTS

STEPS = 3


def sgd(params):
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-3)


def step_lr(opt):
    return torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)


def batches_for(x, y, steps=STEPS):
    # Different batches per step, derived from the one sample batch (as in test_contract.py).
    return [(x.roll(s, 0), y.roll(s, 0)) for s in range(steps)]


def dropout_parts(K: int, *, seed: int):
    """The MLP of reference.py with dropout in every block and head: masks must match across engines."""
    blocks, heads, x, y, loss_fn = PARTS["mlp"](K, seed=seed)
    blocks = [nn.Sequential(*b, nn.Dropout(0.3)) for b in blocks]
    heads = [nn.Sequential(nn.Dropout(0.2), h) for h in heads]
    return blocks, heads, x, y, loss_fn


class Sleep(nn.Module):
    """Stands in for a slow component: sleeps in its forward."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return x


ALL_PARTS = {**PARTS, "dropout": dropout_parts}


def strategy_cases(K: int) -> list[tuple[str, il.Strategy, dict]]:
    """(name, strategy, engine options): end-to-end, local and every n-wise interlocking with both mixes,
    with split_backward, loss weights and heads left out where the strategy allows.

    Options starting with "_" are the test's, not the engines': ``_no_aux_heads`` drops every head
    but the top one; ``_headers`` runs the distributed engine without static shapes (a header per
    message, nothing posted ahead) instead of the training program's setting.
    """
    cases = [("end-to-end", il.EndToEnd(), {}), ("local", il.Local(), {})]
    for n in range(2, K + 1):
        for mix in ("furthest", "sum"):
            if n < K or mix == "sum":  # Interlocking(K, "furthest") is EndToEnd()
                cases.append((il.Interlocking(n, mix).name, il.Interlocking(n, mix), {}))
    if K >= 3:
        cases.append(("3-wise-sum batched", il.Interlocking(3, "sum"), {"batch_streams": True}))
    cases += [
        ("end-to-end split", il.EndToEnd(), {"split_backward": True}),
        ("2-wise split", il.Interlocking(2), {"split_backward": True}),
        ("2-wise weighted", il.Interlocking(2), {"loss_weights": [0.5 + 0.25 * k for k in range(K)]}),
        ("end-to-end no aux heads", il.EndToEnd(), {"_no_aux_heads": True}),
        ("local headers", il.Local(), {"_headers": True}),
    ]
    return cases


def case_net(parts: str, K: int, seed: int, opts: dict):
    """(net, x, y, loss_fn, engine options) of a strategy case (the "_" options applied)."""
    blocks, heads, x, y, loss_fn = ALL_PARTS[parts](K, seed=seed)
    if opts.get("_no_aux_heads"):
        heads = [None] * (K - 1) + [heads[-1]]
    engine_opts = {k: v for k, v in opts.items() if not k.startswith("_")}
    return il.ComponentNet(blocks=blocks, heads=heads), x, y, loss_fn, engine_opts


def own_state(engine) -> dict[str, torch.Tensor]:
    k = engine.rank
    out = {f"block.{n}": t.clone() for n, t in engine.net.blocks[k].state_dict().items()}
    if engine.net.heads[k] is not None:
        out.update({f"head.{n}": t.clone() for n, t in engine.net.heads[k].state_dict().items()})
    return out


def _init_group() -> None:
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))


# -- scenarios ------------------------------------------------------------------------------


def train_strategies(K: int, parts: str, seed: int, steps: int = STEPS, rng_seed: int | None = None) -> dict:
    """Every strategy case on ``parts``; per case this rank's parameters, losses, message counts, eval prediction."""
    out = {}
    for name, strategy, opts in strategy_cases(K):
        net, x, y, loss_fn, engine_opts = case_net(parts, K, seed, opts)
        # The training program's transport (static shapes, receives posted ahead, across steps too) unless "_headers".
        static = not opts.get("_headers")
        engine = Engine(net, strategy, runtime="ranks", optimizer=sgd, loss_fn=loss_fn, rng_seed=rng_seed, timeout_s=60,
                                   static_shapes=static, total_steps=steps if static else None, **engine_opts)
        losses, records = [], []
        for bx, by in batches_for(x, y, steps):
            result = engine.step(bx if engine.rank == 0 else None, by)
            losses.append(result.losses)
            records.append([(r.action.kind, r.start_s, r.end_s) for r in result.records])
        gathered = engine.gather_losses(losses[-1])
        net.eval()
        prediction = engine.heads_forward(x if engine.rank == 0 else None)[engine.rank]
        net.train()
        out[name] = {
            "state": own_state(engine),
            "losses": losses,
            "gathered": gathered,
            "sent_by_kind": dict(engine.runtime.transport.sent_by_kind + engine.runtime.channel.sent_by_kind),
            "received": engine.runtime.transport.messages_received + engine.runtime.channel.messages_received,
            "headers": engine.runtime.channel.headers_sent,
            "posted_ahead": engine.runtime.channel.posted_ahead,
            "records": records,
            "prediction": prediction,
            "rank_sum": engine.all_reduce_sum(torch.tensor([float(engine.rank + 1)])).item(),
        }
        engine.close()
    return out


MICROBATCHES = (2, 4)
MICRO_STEPS = 2


def microbatch_cases(K: int) -> list[tuple[str, il.Strategy, dict, tuple[int, ...]]]:
    """(name, strategy, engine options, components without a head) of the micro-batched runs, with loss weights."""
    cases = [(name, strategy, {**opts, "loss_weights": [0.5 + 0.5 * k for k in range(K)]}, ())
             for name, strategy, opts in strategy_cases(K) if not any(key.startswith("_") for key in opts)]
    # Heads whose loss trains nothing may be None: end-to-end's auxiliary heads, 2-wise's first head.
    cases.append(("end-to-end no aux", il.EndToEnd(), {}, tuple(range(K - 1))))
    cases.append(("2-wise no head 1", il.Interlocking(2), {"loss_weights": [1.0] + [2.0] * (K - 1)}, (0,)))
    return cases


def micro_parts(K: int, seed: int, heads_none: tuple[int, ...]):
    blocks, heads, x, y, loss_fn = PARTS["mlp"](K, seed=seed)
    return blocks, [None if k in heads_none else h for k, h in enumerate(heads)], x, y, loss_fn


def train_microbatched(K: int, seed: int) -> dict:
    """Every micro-batch case for m in MICROBATCHES: this rank's parameters and losses."""
    out = {}
    for name, strategy, opts, heads_none in microbatch_cases(K):
        for m in MICROBATCHES:
            blocks, heads, x, y, loss_fn = micro_parts(K, seed, heads_none)
            net = il.ComponentNet(blocks=blocks, heads=heads)
            # The training program's transport: static shapes, receives posted ahead (per micro-batch tag).
            engine = Engine(net, strategy, runtime="ranks", optimizer=sgd, loss_fn=loss_fn, microbatches=m, timeout_s=60,
                                       static_shapes=True, total_steps=MICRO_STEPS, **opts)
            losses = [engine.step(bx if engine.rank == 0 else None, by).losses for bx, by in batches_for(x, y, MICRO_STEPS)]
            out[name, m] = {"state": own_state(engine), "losses": losses}
            engine.close()
    return out


def emulated_makespan(K: int, unit_s: float, microbatches: int, steps: int) -> dict:
    """Emulated compute (sleeps), 2-wise and end-to-end with micro-batches: when does this rank start and
    end ``steps`` steps after a warm-up step and a barrier (seconds since the common epoch)?"""
    from interlock.timemodel.emulate import emulated_batch, emulated_net

    out = {}
    for name, strategy in (("2-wise", il.Interlocking(2)), ("end-to-end", il.EndToEnd())):
        net = emulated_net(K, forward_s=unit_s / microbatches, backward_s=unit_s / microbatches)
        engine = Engine(net, strategy, runtime="ranks", optimizer=lambda p: torch.optim.SGD(p, lr=0.1), loss_fn=F.cross_entropy,
                                   microbatches=microbatches, timeout_s=60)
        x, y = emulated_batch(8, seed=0)
        engine.step(x if engine.rank == 0 else None, y)  # warm-up: first calls of the head, optimizer, transport
        engine.runtime.transport.flush()
        engine.barrier()
        start = time.perf_counter() - engine.epoch_s
        for _ in range(steps):
            engine.step(x if engine.rank == 0 else None, y)
        out[name] = (start, time.perf_counter() - engine.epoch_s)
        engine.close()
    return out


def run_ahead(sleep_s: float, steps: int) -> dict:
    """K=2, component 2 sleeps ``sleep_s`` per forward: when does each rank finish its steps (s since the epoch)?"""
    out = {}
    for name, strategy in (("local", il.Local()), ("end-to-end", il.EndToEnd())):
        blocks, heads, x, y, loss_fn = PARTS["mlp"](2, seed=1)
        blocks[1] = nn.Sequential(Sleep(sleep_s), blocks[1])
        net = il.ComponentNet(blocks=blocks, heads=heads)
        engine = Engine(net, strategy, runtime="ranks", optimizer=sgd, loss_fn=loss_fn, timeout_s=60)
        for bx, by in batches_for(x, y, steps):
            engine.step(bx if engine.rank == 0 else None, by)
        out[name] = time.perf_counter() - engine.epoch_s
        engine.close()
    return out


def resume(K: int, seed: int) -> dict:
    """4 uninterrupted steps vs 2 steps, a checkpoint per component, a fresh engine, 2 more steps."""
    strategy = il.Interlocking(2)
    batches = batches_for(*ALL_PARTS["dropout"](K, seed=seed)[2:4], steps=4)

    def make(net_seed: int) -> Engine:
        blocks, heads, _, _, loss_fn = ALL_PARTS["dropout"](K, seed=net_seed)
        net = il.ComponentNet(blocks=blocks, heads=heads)
        return Engine(net, strategy, runtime="ranks", optimizer=sgd, loss_fn=loss_fn, lr_scheduler=step_lr, rng_seed=5, timeout_s=60)

    def train(engine, part):
        return [engine.step(bx if engine.rank == 0 else None, by).losses[engine.rank] for bx, by in part]

    full = make(seed)
    full_losses = train(full, batches)
    full_state = own_state(full)
    full.close()

    half = make(seed)
    train(half, batches[:2])
    buf = io.BytesIO()
    torch.save(half.component_state(half.rank), buf)  # what the caller writes, one file per component
    half.close()

    resumed = make(seed + 100)  # different initial weights: everything must come from the checkpoint
    buf.seek(0)
    resumed.load_component_state(resumed.rank, torch.load(buf, weights_only=False))
    step_after_load = resumed.step_count
    tail_losses = train(resumed, batches[2:])
    out = {
        "full_state": full_state, "full_losses": full_losses, "resumed_state": own_state(resumed),
        "tail_losses": tail_losses, "step_after_load": step_after_load,
        "lr": resumed.worker(resumed.rank).optimizer.param_groups[0]["lr"], "full_lr": full.worker(full.rank).optimizer.param_groups[0]["lr"],
    }
    resumed.close()
    return out


def pipeline(K: int, seed: int, schedule: str, microbatches: int, steps: int = 2) -> dict:
    """End to end through torch.distributed.pipelining: this rank's parameters, losses, eval prediction."""
    blocks, heads, x, y, loss_fn = PARTS["mlp"](K, seed=seed)
    net = il.ComponentNet(blocks=blocks, heads=heads)
    engine = Engine(net, EndToEnd(), runtime="ranks", optimizer=sgd, loss_fn=loss_fn, microbatches=microbatches, pipeline=schedule, timeout_s=60)
    losses = [engine.step(bx if engine.rank == 0 else None, by).losses for bx, by in batches_for(x, y, steps)]
    prediction = engine.heads_forward(x if engine.rank == 0 else None)[engine.rank]
    out = {"state": own_state(engine), "losses": losses, "prediction": prediction}
    engine.close()
    return out


# -- what one spawn runs ----------------------------------------------------------------------


def rank_main(K: int, scenarios: list[tuple[str, str, tuple]]) -> dict:
    """Run ``scenarios`` [(key, function name, args)] in order in one process group; their results by key."""
    _init_group()
    out = {}
    for key, fn, args in scenarios:
        out[key] = globals()[fn](*args)
    dist.barrier()
    dist.destroy_process_group()
    return out


def fail_mid_run(fail_rank: int, fail_step: int, steps: int) -> None:
    """End-to-end training in which ``fail_rank`` raises before step ``fail_step``; the others block on it."""
    blocks, heads, x, y, loss_fn = PARTS["mlp"](3, seed=0)
    net = il.ComponentNet(blocks=blocks, heads=heads)
    engine = Engine(net, il.EndToEnd(), runtime="ranks", optimizer=sgd, loss_fn=loss_fn, timeout_s=10)
    for s, (bx, by) in enumerate(batches_for(x, y, steps)):
        if engine.rank == fail_rank and s == fail_step:
            raise ValueError(f"deliberate failure on rank {fail_rank} at step {s}")
        engine.step(bx if engine.rank == 0 else None, by)
    engine.close()


def pipeline_bn_counts(K: int, seed: int, microbatches: int) -> int:
    """One pipeline step on a BatchNorm network: how often did this rank's BatchNorm run?"""
    blocks, heads, x, y, loss_fn = PARTS["bn"](K, seed=seed)
    net = il.ComponentNet(blocks=blocks, heads=heads)
    engine = Engine(net, EndToEnd(), runtime="ranks", pipeline="gpipe", optimizer=sgd, loss_fn=loss_fn, microbatches=microbatches, timeout_s=60)
    engine.step(x if engine.rank == 0 else None, y)
    engine.close()
    return int(engine.policy.block[1].num_batches_tracked)


# -- the transport on its own ------------------------------------------------------------------


def transport_payloads() -> list[torch.Tensor]:
    """Tensors of awkward layouts and dtypes; both ranks build the same ones."""
    base = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    return [
        base.to(memory_format=torch.channels_last),  # dense, permuted strides: kept as they are
        base[0, 0].t(),  # dense transpose
        base[:, :, ::2],  # not dense: sent contiguous
        torch.empty(0, 3),  # nothing to send but the header
        torch.arange(7, dtype=torch.int64),
        torch.tensor([True, False, True]),
        torch.tensor(3.5, dtype=torch.float64),  # 0-dim
    ]


def transport_round_trip() -> list[tuple[torch.Tensor, tuple[int, ...]]] | None:
    """Rank 0 sends every payload to rank 1 (tag per index); rank 1 returns what arrived, with its strides."""
    from interlock.runtime.transport import TorchDistributedTransport

    transport = TorchDistributedTransport(max_pending_sends=2)  # more sends than that: waits for the oldest
    payloads = transport_payloads()
    if dist.get_rank() == 0:
        for i, t in enumerate(payloads):
            transport.send(t, src=0, dst=1, tag=("case", i))
        transport.flush()
        return None
    got = [transport.recv(src=0, dst=1, tag=("case", i)) for i in range(len(payloads))]
    return [(t, tuple(t.stride())) for t in got]


def tag_mismatch() -> None:
    """Rank 1 expects a stream where rank 0 sends an activation: a schedule bug, a loud error on rank 1."""
    from interlock.runtime.transport import TorchDistributedTransport

    _init_group()
    transport = TorchDistributedTransport(timeout_s=30)
    if dist.get_rank() == 0:
        transport.send(torch.ones(3), src=0, dst=1, tag=("activation",))
        transport.flush()  # never completes: rank 1 fails first
    else:
        transport.recv(src=0, dst=1, tag=("stream", 0, 0))


def engine_lifecycle() -> dict:
    """An engine that initialises the process group itself destroys it on close()."""
    blocks, heads, x, y, loss_fn = PARTS["mlp"](2, seed=0)
    engine = Engine(il.ComponentNet(blocks=blocks, heads=heads), il.Local(), runtime="ranks", optimizer=sgd, loss_fn=loss_fn)
    engine.step(x if engine.rank == 0 else None, y)
    during = dist.is_initialized()
    engine.close()
    return {"during": during, "after": dist.is_initialized(), "kept": [b is not None for b in engine.net.blocks]}


def with_backend(strategy_name: str, device: str | None, backend: str | None) -> dict:
    """Three steps of the 2-component MLP on ``device`` over ``backend``: this rank's parameters (on the CPU),
    whether its messages were staged through the CPU, and whether its action times were device marks."""
    from interlock.training.config import parse_strategy
    from interlock.measure.timing import Mark

    blocks, heads, x, y, loss_fn = PARTS["mlp"](2, seed=7)
    engine = Engine(il.ComponentNet(blocks=blocks, heads=heads), parse_strategy(strategy_name), runtime="ranks", optimizer=sgd,
                               loss_fn=loss_fn, device=device, backend=backend, static_shapes=True, total_steps=STEPS)
    records = []
    for bx, by in batches_for(x, y):
        records += engine.step(bx if engine.rank == 0 else None, by).records
    out = {"state": {k: v.cpu() for k, v in own_state(engine).items()}, "staged": engine.runtime.group.staged,
           "device": str(engine.device), "marks": bool(records) and all(isinstance(r.start_s, Mark) for r in records),
           "backend": engine.runtime.group.backend}
    engine.close()
    return out


def wrong_world_size() -> None:
    blocks, heads, x, y, loss_fn = PARTS["mlp"](3, seed=0)
    Engine(il.ComponentNet(blocks=blocks, heads=heads), il.Local(), runtime="ranks", optimizer=sgd, loss_fn=loss_fn)


def hang_on_rank_1(timeout_s: float) -> None:
    """Rank 1 stops sending (stuck, not dead): rank 0 fails at the process-group timeout."""
    blocks, heads, x, y, loss_fn = PARTS["mlp"](2, seed=0)
    engine = Engine(
        il.ComponentNet(blocks=blocks, heads=heads), il.EndToEnd(), runtime="ranks", optimizer=sgd, loss_fn=loss_fn, timeout_s=timeout_s
    )
    if engine.rank == 1:
        time.sleep(600)
    engine.step(x, y)


def die_on_rank_1() -> None:
    """Rank 1 vanishes without an exception (as if killed)."""
    import os

    _init_group()
    if dist.get_rank() == 1:
        os._exit(3)
    dist.barrier()


def record_pid_and_sleep(folder: str, seconds: float = 120.0) -> None:
    """Each rank writes its process id to ``folder``/rank<R>.pid, then sleeps (a rank busy with a long run)."""
    import os
    from pathlib import Path

    path = Path(folder) / f"rank{os.environ['RANK']}.pid"
    path.with_suffix(".tmp").write_text(str(os.getpid()))
    path.with_suffix(".tmp").rename(path)
    time.sleep(seconds)


def train_with_nan_on_rank_1(config_dict: dict, nan_from_step: int) -> dict:
    """interlock.training.loop.run on every rank, but the loss of rank 1's component turns NaN at ``nan_from_step``:
    one rank fails while its peers are healthy."""
    import os

    import interlock.training.loop as train_mod
    from interlock.training.config import TrainConfig

    if os.environ["RANK"] == "1":
        real = train_mod.make_loss_fn
        calls = {"n": 0}

        def make(task, smoothing):
            fn = real(task, smoothing)

            def loss(out, y):
                calls["n"] += 1
                value = fn(out, y)
                return value * float("nan") if calls["n"] >= nan_from_step else value

            return loss

        train_mod.make_loss_fn = make
    return train_mod.run(TrainConfig(**config_dict)).final
