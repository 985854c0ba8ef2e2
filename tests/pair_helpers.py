"""Runs of every (policy, runtime) pair the strategy registry declares, for tests/test_engine_pairs.py.

:func:`train` is the one recipe: a small BatchNorm network with dropout-free heads, ``STEPS``
steps, optionally checkpointed after ``RESUME_AT`` and resumed into a network of other weights.
The parent runs it on the local runtime; :func:`rank_main` runs it on the ranks runtime for
every registered pair there, in one launch (one process group, created once).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.distributed as dist

import interlock as il
from interlock.engine.specs import STRATEGIES
from reference import PARTS

STEPS, RESUME_AT, K = 6, 3, 3


def builtin_names() -> list[str]:
    """The strategies interlock itself registers. A test may register one of its own (tests/test_new_strategy.py);
    the processes a ranks test spawns import interlock only and do not know it, so launches take these."""
    from interlock.engine.specs import STRATEGIES, strategy_names

    return [n for n in strategy_names() if STRATEGIES.get(n).strategy.__module__.startswith("interlock.")]


def sgd(params):
    return torch.optim.SGD(params, lr=0.05, momentum=0.9)


def step_lr(optimizer):
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)


def batches(K_: int, seed: int):
    _, _, x, y, _ = PARTS["bn"](K_, seed=seed)
    return [(x[i % 2::2], y[i % 2::2]) for i in range(STEPS)]


def make(name: str, runtime: str, *, net_seed: int, K_: int = K, **options):
    spec = STRATEGIES.get(name)
    blocks, heads, _, _, loss_fn = PARTS["bn"](K_ * (2 if name == "local-double" else 1), seed=net_seed)
    net = il.ComponentNet(blocks=blocks, heads=heads)
    opts = {} if runtime == "local" else {"timeout_s": 60}
    return il.Engine(net, spec.example(), runtime=runtime, optimizer=sgd, loss_fn=loss_fn, lr_scheduler=step_lr, rng_seed=7,
                     total_steps=STEPS, flush_every=RESUME_AT, **opts, **options)


def run_steps(engine, data):
    out = []
    for x, y in data:
        r = engine.step(x if 0 in engine.local_components else None, y)
        out.append([v for v in r.losses])
    return out


def held_state(engine) -> dict:
    """The parameters and buffers of the components this process holds, by name."""
    held = set(engine.local_components)
    return {f"{k}.{n}": t.detach().clone() for k in held for m in (engine.net.blocks[k], engine.net.heads[k]) if m is not None
            for n, t in [*m.named_parameters(), *m.named_buffers()]}


def train(name: str, runtime: str, *, resume: bool, K_: int = K, **options) -> dict:
    """The run of pair (name, runtime): uninterrupted, or checkpointed at RESUME_AT and resumed elsewhere.
    ``options``: more engine options (precision=...)."""
    data = batches(K_, seed=1)
    engine = make(name, runtime, net_seed=0, K_=K_, **options)
    losses = run_steps(engine, data[:RESUME_AT] if resume else data)
    if resume:
        saved = {k: copy.deepcopy(engine.component_state(k)) for k in engine.local_components}
        engine.close()
        engine = make(name, runtime, net_seed=99, K_=K_, **options)  # other weights: the load must overwrite everything
        for k, state in saved.items():
            engine.load_component_state(k, state)
        losses += run_steps(engine, data[RESUME_AT:])
    out = {"state": held_state(engine), "losses": losses, "step_count": engine.step_count,
           "wants_more": engine.wants_more, "counters": engine.counters(), "skipped_steps": engine.skipped_steps()}
    engine.close()
    return out


def rank_main(names: list[str]) -> dict:
    """On every rank: each ranks pair's uninterrupted and resumed runs (one process group for all)."""
    dist.init_process_group("gloo")
    try:
        return {(name, resume): train(name, "ranks", resume=resume) for name in names for resume in (False, True)}
    finally:
        dist.destroy_process_group()


def rank_main_runs(runs: list[tuple[str, bool, dict]]) -> dict:
    """On every rank: the runs (name, resume, engine options) given, in one process group."""
    dist.init_process_group("gloo")
    try:
        return {(name, resume, tuple(sorted(options.items()))): train(name, "ranks", resume=resume, **options)
                for name, resume, options in runs}
    finally:
        dist.destroy_process_group()


def same_losses(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        len(u) == len(v) and all((math.isnan(p) and math.isnan(q)) or p == q for p, q in zip(u, v)) for u, v in zip(a, b))
