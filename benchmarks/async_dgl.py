"""Async DGL vs synchronous local learning with one slowed component, on real processes.

DGL's claim (Belilovsky et al. 2020, section 4.2): with replay buffers each component trains
at its own pace, so one slow worker does not slow the others. Measured here with K processes
(one per component, gloo) whose blocks emulate compute: each forward sleeps ``--unit-ms``
(the slowed component's forward ``S`` times as long), so the measurement does not depend on
how many cores the machine has. For each S, two runs side by side:

* ``async``: ``AsyncLocal`` (replay buffers of ``--buffer-size`` batches) on
  ``Engine(net, AsyncLocal(...), runtime="ranks")``;
* ``sync``: ``Local()`` on ``Engine(net, Local(), runtime="ranks")``, where a component
  needs its neighbour's output of the same step (the ones above the slow component wait for
  it; the one below runs ahead until its ``max_pending_sends`` sends are outstanding).

Each rank's updates/s is its steps over the time from the common start to its last update.
The ratios divide it by the same mode's rate at S = 1 (measured in the same run). Target:
the unslowed ranks keep >= 0.9 of their rate under async, against about 1/S under sync.

    python benchmarks/async_dgl.py                     # S in 1, 1.2, 2; K = 4, component 2 slowed
    python benchmarks/async_dgl.py --slowdowns 1,1.5,3 --steps 200 --unit-ms 5

One JSON line per (mode, S, rank), then a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

import interlock as il
from interlock.engine import Engine
from interlock.runtime.launch import run_local


class Compute(nn.Module):
    """A small linear layer whose forward also takes ``seconds`` (emulated compute)."""

    def __init__(self, width: int, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.linear = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return torch.relu(self.linear(x))


def _rank(spec: dict) -> dict:
    K, width = spec["K"], spec["width"]
    torch.manual_seed(0)
    unit = spec["unit_ms"] / 1000
    blocks = [Compute(width, unit * (spec["S"] if k == spec["slow"] - 1 else 1.0)) for k in range(K)]
    heads = [nn.Linear(width, 10) for _ in range(K)]
    net = il.ComponentNet(blocks=blocks, heads=heads)
    opts = dict(optimizer=lambda p: torch.optim.SGD(p, lr=0.01), loss_fn=F.cross_entropy, timeout_s=120)
    if spec["mode"] == "async":
        engine = Engine(net, il.AsyncLocal(buffer_size=spec["buffer_size"]), runtime="ranks", total_steps=spec["steps"], **opts)
    else:
        engine = Engine(net, il.Local(), runtime="ranks", **opts)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(spec["batch"], width, generator=g)
    y = torch.randint(0, 10, (spec["batch"],), generator=g)
    for _ in range(spec["steps"]):
        engine.step(x if engine.rank == 0 else None, y)
    finished = time.perf_counter() - engine.epoch_s
    engine.close()
    return {"rank": engine.rank, "finished_s": finished}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--components", type=int, default=4)
    p.add_argument("--slow", type=int, default=2, help="the slowed component, 1..K")
    p.add_argument("--slowdowns", default="1,1.2,2", help="comma-separated S values (1 is the reference)")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--unit-ms", type=float, default=10.0, help="emulated forward time of an unslowed component")
    p.add_argument("--buffer-size", type=int, default=8)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--width", type=int, default=64)
    args = p.parse_args(argv)
    K = args.components
    if not 1 <= args.slow <= K:
        p.error(f"--slow {args.slow}: use a component number 1..{K}")
    slowdowns = [float(s) for s in args.slowdowns.split(",")]
    if 1.0 not in slowdowns:
        slowdowns = [1.0] + slowdowns  # the reference the ratios divide by
    rates: dict[tuple[str, float], list[float]] = {}
    for S in slowdowns:
        for mode in ("async", "sync"):
            spec = {"K": K, "slow": args.slow, "S": S, "mode": mode, "steps": args.steps, "unit_ms": args.unit_ms,
                    "buffer_size": args.buffer_size, "batch": args.batch, "width": args.width}
            results = sorted(run_local(_rank, K, spec, timeout_s=600), key=lambda r: r["rank"])
            rates[mode, S] = [args.steps / r["finished_s"] for r in results]
    rows = []
    for (mode, S), rate in rates.items():
        for k, r in enumerate(rate):
            row = {"bench": "async_dgl", "mode": mode, "S": S, "component": k + 1, "slowed": k + 1 == args.slow,
                   "updates_per_s": round(r, 3), "ratio_to_S1": round(r / rates[mode, 1.0][k], 3),
                   "K": K, "steps": args.steps, "unit_ms": args.unit_ms, "buffer_size": args.buffer_size}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\nupdates/s of each component relative to S = 1 (component {args.slow} slowed by S; K = {K}, "
          f"{args.steps} steps, {args.unit_ms:g} ms forward, M = {args.buffer_size}):\n", file=sys.stderr)
    print("| S | mode | " + " | ".join(f"comp {k + 1}" for k in range(K)) + " | mean of the unslowed |", file=sys.stderr)
    print("|---|---|" + "---|" * (K + 1), file=sys.stderr)
    for S in slowdowns:
        for mode in ("async", "sync"):
            r = [x for x in rows if x["mode"] == mode and x["S"] == S]
            others = statistics.mean(x["ratio_to_S1"] for x in r if not x["slowed"])
            cells = " | ".join(f"{x['ratio_to_S1']:.2f}" + ("*" if x["slowed"] else "") for x in r)
            print(f"| {S:g} | {mode} | {cells} | {others:.2f} |", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
