"""What a split backward costs on this machine's kernels: one block, one pass against input + weight parts.

The block is a component of benchmarks/step_overhead.py's convnet (two conv + BatchNorm + ReLU);
the same gradient arrives at its output each time. "one-pass" is one backward giving the input
and weight gradients; "split" is the input pass keeping the intermediate gradients, then the
weight pass from them (interlock.core.backward.KeptGradients, what ``split_backward`` runs). The FLOPs
are the same; the time need not be. Variants alternate; medians over ``--reps``; one JSON line each.

    python benchmarks/split_backward.py                 # 1 thread, batch 128, block 2 of 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from interlock.core.backward import KeptGradients
from step_overhead import build


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--block", type=int, default=1, help="which block (0-based) of the 4-component convnet")
    p.add_argument("--reps", type=int, default=10)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    blocks, _ = build(4, 32, seed=0)
    block = blocks[args.block]
    channels = next(m for m in block.modules() if isinstance(m, torch.nn.Conv2d)).in_channels
    size = 32 if args.block < 2 else 16  # the first half keeps 32x32, the second half works at 16x16
    a_in = torch.randn(args.batch, channels, size, size, requires_grad=True)
    params = list(block.parameters())

    def one_pass() -> dict:
        out = block(a_in)
        v = torch.randn_like(out)
        t0 = time.perf_counter()
        torch.autograd.backward(out, v, inputs=[a_in, *params])
        return {"total": time.perf_counter() - t0}

    def split() -> dict:
        out = block(a_in)
        v = torch.randn_like(out)
        t0 = time.perf_counter()
        kept = KeptGradients(out, a_in, params)
        kept.input_grad(out, a_in, v)
        t1 = time.perf_counter()
        kept.weight_pass(retain_graph=False)
        t2 = time.perf_counter()
        return {"total": t2 - t0, "input_part": t1 - t0, "weight_part": t2 - t1}

    variants = {"one-pass": one_pass, "split": split}
    for run in variants.values():  # warm-up
        run()
    times: dict[str, list[dict]] = {name: [] for name in variants}
    for _ in range(args.reps):
        for name, run in variants.items():
            times[name].append(run())
    base = statistics.median(t["total"] for t in times["one-pass"])
    for name, ts in times.items():
        row = {"bench": "split_backward", "variant": name, "block": args.block, "batch": args.batch, "threads": args.threads,
               "torch": torch.__version__}
        for part in ts[0]:
            row[f"{part}_ms"] = round(1000 * statistics.median(t[part] for t in ts), 1)
        row["ratio_to_one_pass"] = round(row["total_ms"] / 1000 / base, 3)
        print(json.dumps(row))


if __name__ == "__main__":
    main()
