"""Peak memory per component: interlock's strategies against PyTorch's pipeline schedules, K processes.

Each variant runs ``--steps`` training steps with one process per component (gloo, one thread
each), the way K devices would hold the network, and every rank reports its component's peak:
the activations autograd saved for the backward pass at their highest (``interlock.measure.memstats``:
every saved storage counted once, parameters left out) plus the training state (parameters,
gradients, optimizer state). Variants: end-to-end, local (DGL) and 2-wise, each on whole batches
and with ``--microbatches`` m, and PyTorch's GPipe, 1F1B and zero-bubble (``zb1p``) schedules of
end-to-end training with m micro-batches (``torch.distributed.pipelining``). Models, on real data:

- ``resnet32``: He et al.'s ResNet-32 (16/32/64 channels) cut by FLOPs, CIFAR-10 batches of 128;
- ``gpt``: the GPT decoder (6 layers of width 384, 6 attention heads, as nanoGPT's shakespeare-char)
  on tiny-shakespeare, 64 sequences of 256 characters.

Interlock's strategies train their auxiliary heads (``--heads``, linear by default: the papers'
heads add their own activations); the pipeline schedules train none. Every backward runs in one
pass (``split_backward=false``); zb1p splits its backward, and the gradients a split keeps between
its two halves are not saved tensors: not counted. One JSON line per (model, variant), then a table.

    python benchmarks/memory.py                     # both models, K=4, batch and m as above
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn.functional as F

import interlock as il
from interlock.measure import memstats
from interlock.training.config import load_config
from interlock.runtime.launch import run_local
from interlock.training.tasks import build_task

MODELS = {
    "resnet32": ["model.name=resnet32", "model.partition=flops", "data.name=cifar10", "data.batch_size=128"],
    "gpt": ["model.name=gpt", "model.partition=uniform", "model.kwargs.n_layer=6", "model.kwargs.n_head=6",
            "model.kwargs.n_embd=384", "model.kwargs.dropout=0.0", "data.name=shakespeare", "data.batch_size=64",
            "data.block_size=256"],
}
STRATEGIES = {"end-to-end": il.EndToEnd, "local": il.Local, "2-wise": lambda: il.Interlocking(2)}
PIPELINES = ("gpipe", "1f1b", "zb1p")


def variants(m: int) -> list[str]:
    return [*STRATEGIES, *(f"{s}+mb" for s in STRATEGIES), *PIPELINES]


def _rank(spec: dict) -> dict:
    from interlock.training.loop import build_net, make_loss_fn, make_optimizer_factory

    config = load_config(None, spec["overrides"])
    task = build_task(config.data, seed=0)
    x, y = next(iter(task.train_batches(epoch=0, start_step=0)))
    torch.manual_seed(0)
    net = build_net(config, task)
    optimizer, loss_fn = make_optimizer_factory(config.optim), make_loss_fn(task, 0.0)
    variant, m = spec["variant"], spec["microbatches"]
    memstats.enable(True)
    if variant in PIPELINES:
        for k in range(net.num_components - 1):
            net.heads[k] = None  # a pipeline trains the final head only
        engine = il.Engine(net, il.EndToEnd(), runtime="ranks", optimizer=optimizer, loss_fn=loss_fn, microbatches=m, pipeline=variant)
    else:
        name, mb = variant.removesuffix("+mb"), variant.endswith("+mb")
        engine = il.Engine(net, STRATEGIES[name](), runtime="ranks", optimizer=optimizer, loss_fn=loss_fn, split_backward=False,
                                      microbatches=m if mb else 1, total_steps=spec["steps"], record=False)
    for _ in range(spec["steps"]):
        engine.step(x if engine.rank == 0 else None, y)
    k = engine.rank
    out = {"component": k + 1, "peak_saved_bytes": memstats.meter(k).peak,
           "state_bytes": memstats.state_bytes(engine.optimizers[k])}
    engine.close()
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet32,gpt", help=f"comma-separated, from {', '.join(MODELS)}")
    p.add_argument("--components", type=int, default=4, help="K")
    p.add_argument("--microbatches", type=int, default=4, help="m, for the +mb variants and the pipeline schedules")
    p.add_argument("--heads", default="linear", help="interlock's auxiliary heads (a registry name)")
    p.add_argument("--steps", type=int, default=2, help="training steps per variant (the peak is over all of them)")
    p.add_argument("--data", default=None, help="data folder (default: $INTERLOCK_DATA or ../shared/data)")
    p.add_argument("--variants", default=None, help="comma-separated subset of the variants")
    args = p.parse_args(argv)
    rows = []
    for model in args.models.split(","):
        if model not in MODELS:
            p.error(f"--models {model}: choose from {', '.join(MODELS)}")
        overrides = [*MODELS[model], f"model.components={args.components}", f"model.heads={args.heads}", "steps=1",
                     *([f"data.root={args.data}"] if args.data else [])]
        chosen = args.variants.split(",") if args.variants else variants(args.microbatches)
        for variant in chosen:
            spec = {"overrides": overrides, "variant": variant, "microbatches": args.microbatches, "steps": args.steps}
            ranks = sorted(run_local(_rank, args.components, spec, timeout_s=900), key=lambda r: r["component"])
            row = {"model": model, "variant": variant, "K": args.components, "microbatches": args.microbatches,
                   "heads": "none" if variant in PIPELINES else args.heads,
                   "peak_saved_mib": [round(r["peak_saved_bytes"] / 2**20, 2) for r in ranks],
                   "state_mib": [round(r["state_bytes"] / 2**20, 2) for r in ranks]}
            row["peak_mib"] = [round(a + b, 2) for a, b in zip(row["peak_saved_mib"], row["state_mib"])]
            row["max_peak_mib"] = max(row["peak_mib"])
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(table(rows), file=sys.stderr)


def table(rows: list[dict]) -> str:
    out = ["| model | variant | saved activations per component (MiB) | state per component (MiB) | "
           "peak per component (MiB) | largest peak vs end-to-end's |", "|---|---|---|---|---|---|"]
    for r in rows:
        base = next((q for q in rows if q["model"] == r["model"] and q["variant"] == "end-to-end"), None)
        ratio = f"{r['max_peak_mib'] / base['max_peak_mib']:.2f}" if base else "-"
        out.append(f"| {r['model']} | {r['variant']} | {r['peak_saved_mib']} | {r['state_mib']} | {r['peak_mib']} | {ratio} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
