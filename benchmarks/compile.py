"""Compiled against eager: one local-runtime engine step per variant, side by side in one run.

The network is benchmarks/step_overhead.py's convnet (K components of two conv + BatchNorm + ReLU,
a small head each) on random CIFAR-shaped batches. Variants: eager and ``compile=True`` engines (and,
with ``--precision``, those at bf16 too). Each engine's first steps compile its blocks and heads
(dynamo traces, inductor builds kernels): that time is reported apart, as ``first_step_s`` (the
first step) and ``warmup_s`` (all ``--warmup`` steps), not in the step times. Then the variants
step interleaved, round after round, so the machine's noise hits them alike; each prints one
JSON line with its median step time and its ratio to the eager engine at the first ``--precision``.

    python benchmarks/compile.py                       # K=4, batch 64, <n>-wise (n=2), 1 thread
    python benchmarks/compile.py --strategy end-to-end --precision fp32 bf16
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

import interlock as il
from interlock.engine.specs import parse_strategy
from step_overhead import build, sgd


def engine(args, *, compile: bool, precision: str) -> il.Engine:
    blocks, heads = build(args.components, args.width, seed=0)  # the same weights for every variant
    return il.Engine(il.ComponentNet(blocks=blocks, heads=heads), parse_strategy(args.strategy), optimizer=sgd,
                     loss_fn=F.cross_entropy, rng_seed=0, compile=compile, precision=precision,
                     compile_mode=args.mode if compile else None)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--components", type=int, default=4)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--strategy", default="2-wise")
    p.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16", "fp16"])
    p.add_argument("--mode", default=None, help="torch.compile's mode (default: its own)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=3, help="steps per variant before timing (the compiled ones compile here)")
    p.add_argument("--rounds", type=int, default=10)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(args.batch, 3, 32, 32, generator=g), torch.randint(0, 10, (args.batch,), generator=g)

    variants, warm = {}, {}
    for precision in args.precision:
        for compiled in (False, True):
            name = f"{'compiled' if compiled else 'eager'}-{precision}"
            e = engine(args, compile=compiled, precision=precision)
            t0 = time.perf_counter()
            e.step(x, y)
            first = time.perf_counter() - t0
            for _ in range(args.warmup - 1):
                e.step(x, y)
            warm[name] = {"first_step_s": round(first, 2), "warmup_s": round(time.perf_counter() - t0, 2)}
            variants[name] = e
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, e in variants.items():
            t0 = time.perf_counter()
            e.step(x, y)
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times[f"eager-{args.precision[0]}"])
    for name, ts in times.items():
        row = {"bench": "compile", "variant": name, "strategy": args.strategy, "components": args.components,
               "width": args.width, "batch": args.batch, "threads": args.threads, "mode": args.mode,
               "rounds": args.rounds, "torch": torch.__version__,
               "step_ms": round(1000 * statistics.median(ts), 2), "min_step_ms": round(1000 * min(ts), 2),
               "ratio_to_eager": round(statistics.median(ts) / base, 3), **warm[name]}
        print(json.dumps(row))


if __name__ == "__main__":
    main()
