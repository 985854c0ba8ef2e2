"""The clock's K-device step time for ResNet-32 and the GPT decoder, per strategy and against PyTorch's pipeline schedules.

Each variant trains a few steps through the simulated engine on ``--device`` with the papers'
settings (presets ``interlocking-b2``: ResNet-32 with the B.2 conv heads on real CIFAR-10 batches
of 128, and ``interlocking-b3``: the GPT decoder with the B.3 transformer heads on tiny-shakespeare
batches of 64 x 256 tokens), in K components. Every action is timed where it runs (CUDA events on
a GPU), and the clock replays the measured durations on the schedule's dependencies: the time K
devices would need per step, with messages taken as free. Interlock's strategies run with the
distributed engines' default (split backward); "+mb" cuts each batch into ``--microbatches``.

The pipeline schedules (GPipe, 1F1B, zero-bubble ``zb1p``, as ``torch.distributed.pipelining``
orders them) are priced by :mod:`interlock.timemodel.pipeline_clock` from each component's measured times
per micro-batch in the "end-to-end-final-head-only+mb" run (``stage_costs_from_records``:
forward, the final head's loss in the last stage, input gradient and weight gradient). They train
no auxiliary head, as PyTorch's pipelines do not; interlock's strategies train theirs (end-to-end
on their own losses, to watch them; "end-to-end-final-head-only" drops them: the pipelines'
work), and the papers' heads are heavy: ``--heads linear`` shows the schedules with cheap ones.

One JSON line per (model, variant), then a table. On a CPU the numbers are for K such CPUs:

    python benchmarks/predicted_steps.py                        # both models, K=4, this machine's CPU
    python benchmarks/predicted_steps.py --device cuda          # on a GPU: K-GPU predictions
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

import interlock as il
from interlock.training.config import load_config
from interlock.timemodel.pipeline_clock import predict_pipeline, stage_costs_from_records
from interlock.training.tasks import build_task
from interlock.measure.timing import resolve
from interlock.training.loop import build_net, make_loss_fn, make_optimizer_factory

MODELS = {"resnet32": "interlocking-b2", "gpt": "interlocking-b3"}
STRATEGIES = {"end-to-end": il.EndToEnd, "local": il.Local, "2-wise": lambda: il.Interlocking(2),
              # end-to-end with no auxiliary head: the work of PyTorch's pipeline schedules
              "end-to-end-final-head-only": il.EndToEnd}
PIPELINES = ("gpipe", "1f1b", "zb1p")


def setup(model: str, K: int, data: str | None, batch: int | None, heads: str | None = None):
    overrides = [f"preset={MODELS[model]}", f"model.components={K}", "steps=1"]
    overrides += [f"data.root={data}"] if data else []
    overrides += [f"data.batch_size={batch}"] if batch else []
    overrides += [f"model.heads={heads}"] if heads else []
    config = load_config(None, overrides)
    task = build_task(config.data, seed=0)
    x, y = next(iter(task.train_batches(epoch=0, start_step=0)))
    return config, task, x, y


def make_engine(config, task, strategy, *, microbatches: int, device: str, final_head_only: bool):
    net = build_net(config, task).to(device)
    if final_head_only:
        for k in range(net.num_components - 1):
            net.heads[k] = None
    return il.Engine(net, strategy, optimizer=make_optimizer_factory(config.optim),
                              loss_fn=make_loss_fn(task, config.label_smoothing), split_backward=True,
                              microbatches=microbatches)


def measure(engines: dict, x, y, *, warmup: int, steps: int) -> dict:
    """Per variant: (predicted K-device seconds per step, measured one-process seconds per step, resolved records).

    The variants take turns, one step each per round, so that a machine growing busier or slower
    during the run hits them alike (run one after another, later variants measured slower).
    """
    for engine in engines.values():
        for _ in range(warmup):
            engine.step(x, y)
    records: dict[str, list] = {v: [] for v in engines}
    walls: dict[str, float] = {v: 0.0 for v in engines}
    for _ in range(steps):
        for variant, engine in engines.items():
            t0 = time.perf_counter()
            records[variant] += resolve(engine.step(x, y).records)  # (waits for the device: kernels included)
            walls[variant] += time.perf_counter() - t0
    return {v: (engines[v].predicted_time(records[v]).makespan_s / steps, walls[v] / steps, records[v]) for v in engines}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet32,gpt", help=f"comma-separated, from {', '.join(MODELS)}")
    p.add_argument("--components", type=int, default=4)
    p.add_argument("--microbatches", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--batch", type=int, default=None, help="override the preset's batch size (a smaller one for a quick look)")
    p.add_argument("--heads", default=None, help="override the preset's auxiliary heads (e.g. linear: the schedules without "
                                                  "the papers' heavy heads)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=4, help="measured steps per variant (the variants take turns)")
    p.add_argument("--data", default=None, help="data folder (default: $INTERLOCK_DATA or ../shared/data)")
    args = p.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        sys.exit(f"--models {','.join(unknown)}: use some of {', '.join(MODELS)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(f"--device {args.device}: this machine has no CUDA device; run with --device cpu")
    torch.set_num_threads(args.threads)
    K, m = args.components, args.microbatches
    device_name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else f"CPU, {args.threads} threads"
    rows = []
    for model in models:
        config, task, x, y = setup(model, K, args.data, args.batch, args.heads)
        if x.shape[0] % m:
            sys.exit(f"--microbatches {m} does not divide the batch of {x.shape[0]}; pick a divisor")
        t0 = time.perf_counter()
        engines = {name + ("+mb" if mb > 1 else ""): make_engine(config, task, make(), microbatches=mb, device=args.device,
                                                                 final_head_only=name.endswith("final-head-only"))
                   for name, make in STRATEGIES.items() for mb in (1, m)}
        measured = measure(engines, x.to(args.device), y.to(args.device), warmup=args.warmup, steps=args.steps)
        del engines
        predicted: dict[str, float] = {}
        for variant, (step, wall, records) in measured.items():
            predicted[variant] = step
            row = {"bench": "predicted_steps", "model": model, "heads": config.model.heads, "device": device_name,
                   "components": K, "batch": int(x.shape[0]), "variant": variant,
                   "microbatches": m if variant.endswith("+mb") else 1, "steps": args.steps,
                   "predicted_step_s": round(step, 5), "one_process_step_s": round(wall, 5)}
            print(json.dumps(row), flush=True)
            rows.append(row)
        costs = stage_costs_from_records(measured["end-to-end-final-head-only+mb"][2], num_components=K, microbatches=m,
                                         steps=args.steps)
        print(f"{model}: measured in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        for schedule in PIPELINES:
            step = predict_pipeline(schedule, costs, num_components=K, microbatches=m, steps=1)
            predicted[schedule] = step
            row = {"bench": "predicted_steps", "model": model, "heads": config.model.heads, "device": device_name,
                   "components": K, "batch": int(x.shape[0]), "variant": schedule, "microbatches": m,
                   "predicted_step_s": round(step, 5)}
            print(json.dumps(row), flush=True)
            rows.append(row)
        best = min(PIPELINES, key=predicted.__getitem__)
        for row in rows:
            if row["model"] == model:
                row["vs_end_to_end"] = round(predicted[row["variant"]] / predicted["end-to-end"], 3)
                row["vs_best_pipeline"] = round(predicted[row["variant"]] / predicted[best], 3)
                row["best_pipeline"] = best
        print(json.dumps({"bench": "predicted_steps", "model": model, "ratios": {r["variant"]: r["vs_end_to_end"] for r in rows
                                                                               if r["model"] == model}, "best_pipeline": best}))
    print(table(rows), file=sys.stderr)


def table(rows: list[dict]) -> str:
    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        rs = [r for r in rows if r["model"] == model]
        lines += ["", f"{model}, heads {rs[0]['heads']}, K={rs[0]['components']}, batch {rs[0]['batch']}, {rs[0]['device']}:",
                  "| variant | predicted s/step on K devices | vs end-to-end | vs best pipeline | one process s/step |",
                  "|---|---|---|---|---|"]
        for r in rs:
            lines.append(f"| {r['variant']} | {r['predicted_step_s']} | {r['vs_end_to_end']} | {r['vs_best_pipeline']} "
                         f"({r['best_pipeline']}) | {r.get('one_process_step_s', '-')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
