"""Time per step of each strategy on K processes, next to the paper's time model and our clock.

Two modes, measured in one run:

* ``emulated``: every block's forward sleeps one time unit and its backward one unit (half
  for the input gradient, half for the weight gradient), so K processes overlap even on 2
  cores. Compared with the interlocking paper's model (Fig. 2) for a components and b
  steps: end-to-end 2ab units, 1-wise 2b+a-1, n-wise 2bn+a-n; and with the simulated
  engine's critical-path prediction (interlock.timemodel.clock) from the same costs.
* ``real``: a real convnet on real CIFAR-10 images, one thread per process, compared with
  single-process end-to-end training (the simulated engine) on one and on two threads.

Every variant's time is compared with end-to-end (default split backward), with end-to-end
backprop (one full backward per component, "+onepass") and with the best pipeline schedule; for
the default schedules, ``bound_units_per_step`` is the time per step no schedule of that strategy
can beat (interlock.timemodel.clock.step_bound). Each measurement is one JSON line; a table follows. Traces of the emulated runs (Chrome
trace JSON and Gantt PNG, one row per component) go to ``--trace-dir`` if given.

    python benchmarks/schedule.py                                  # both modes, K=4 emulated, K=2 real
    python benchmarks/schedule.py --mode emulated --components 4 --steps 32 --unit-ms 20
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import interlock as il
from interlock.timemodel import clock, emulate
from interlock.data import find_data_root, read_cifar10_binary
from interlock.runtime.launch import run_local
from interlock._torch_compat import slow_isend_for_pipelining
from interlock.runtime.links import SlowLink
from interlock.timemodel.pipeline_clock import predict_pipeline
from interlock.core.schedule import build_schedule

# name -> (strategy, split_backward, micro-batched). The default schedule (split_backward=None)
# sends a lone stream's input gradient before its weight pass, which reuses the input pass's
# intermediate gradients (interlock.core.schedule.build_schedule); "+onepass" is one backward pass per
# stream (plain backprop, the paper's time model). "+mb": the batch cut into --microbatches.
SYNC = {
    "end-to-end": (il.EndToEnd, None, False),
    "1-wise": (il.Local, None, False),
    "2-wise": (lambda: il.Interlocking(2), None, False),
    "3-wise": (lambda: il.Interlocking(3), None, False),
    "end-to-end+onepass": (il.EndToEnd, False, False),
    "2-wise+onepass": (lambda: il.Interlocking(2), False, False),
    "end-to-end+mb": (il.EndToEnd, None, True),
    "1-wise+mb": (il.Local, None, True),
    "2-wise+mb": (lambda: il.Interlocking(2), None, True),
}
# torch.distributed.pipelining's schedules; "zb1p" is its interleaved zero-bubble schedule with one
# stage per rank (ZBV needs two stages per rank, i.e. a 2K-piece network: not comparable here).
PIPE = {"gpipe": "gpipe", "1f1b": "1f1b", "zb1p": "zb1p"}


def _n(variant: str) -> int | None:
    base = variant.split("+")[0]
    return int(base.split("-")[0]) if base.endswith("-wise") else None


def fits(variant: str, K: int) -> bool:
    n = _n(variant)
    return n is None or n <= K


def model_units(variant: str, a: int, b: int) -> float | None:
    if variant in PIPE or SYNC[variant][2]:
        return None  # the paper's model has no micro-batches
    variant = variant.split("+")[0]
    if variant == "end-to-end":
        return clock.end_to_end_time_units(components=a, steps=b)
    if variant == "1-wise":
        return clock.local_time_units(components=a, steps=b)
    if variant.endswith("-wise"):
        n = int(variant.split("-")[0])
        return clock.paper_time_units(components=a, steps=b, n=n) if n <= a else None
    return None


def sgd(params):
    return torch.optim.SGD(params, lr=0.01)


# -- what each rank runs (module level: the launcher pickles it) -----------------------------


def _microbatched(variant: str) -> bool:
    return variant in PIPE or SYNC[variant][2]


def _build(spec: dict):
    if spec["mode"] == "emulated":
        # An emulated block sleeps per call: under micro-batches each call is a micro-batch, costing its share.
        unit = spec["unit_s"] / (spec["microbatches"] if _microbatched(spec["variant"]) else 1)
        net = emulate.emulated_net(spec["K"], forward_s=unit, backward_s=unit, split=0.5)
        x, y = emulate.emulated_batch(spec["batch"], seed=0)
        return net, x, y
    return real_net(spec["model"], spec["K"], spec["partition"]), spec["x"], spec["y"]


def real_net(model: str, K: int, partition):
    # Pipelined throughput is set by the slowest component: balance the cut.
    torch.manual_seed(0)
    return il.models.create(model, components=K, heads="linear", partition=partition)


def _rank(spec: dict) -> dict:
    net, x, y = _build(spec)
    variant = spec["variant"]
    if variant in PIPE:
        engine = il.Engine(net, il.EndToEnd(), runtime="ranks", optimizer=sgd, loss_fn=F.cross_entropy, microbatches=spec["microbatches"],
                                   pipeline=PIPE[variant])
    else:
        strategy, split, mb = SYNC[variant]
        engine = il.Engine(net, strategy(), runtime="ranks", optimizer=sgd, loss_fn=F.cross_entropy, record=True,
                                      split_backward=split, microbatches=spec["microbatches"] if mb else 1,
                                      static_shapes=True, total_steps=spec["warmup"] + spec["steps"])
    latency_s = spec.get("link_latency_s", 0.0)
    link = SlowLink(latency_s=latency_s) if latency_s else None
    if link is not None and variant not in PIPE:  # interlock's transports take the link where they send
        for transport in (engine.runtime.channel, engine.runtime.transport):
            if transport is not None:
                transport.use_link(link)
    # PyTorch's pipelining schedules send through torch.distributed.isend themselves: only a patch reaches them.
    with slow_isend_for_pipelining(link) if link is not None and variant in PIPE else contextlib.nullcontext():
        for _ in range(spec["warmup"]):
            engine.step(x if engine.rank == 0 else None, y)
        for transport in (engine.runtime.channel, engine.runtime.transport):
            if transport is not None:
                transport.flush()
        engine.barrier()
        t0 = time.perf_counter()
        records = []
        for _ in range(spec["steps"]):
            records.extend(engine.step(x if engine.rank == 0 else None, y).records)
        for transport in (engine.runtime.channel, engine.runtime.transport):
            if transport is not None:
                transport.flush()  # the last sends have arrived: the step is really done
        engine.barrier()
        wall = time.perf_counter() - t0
    engine.close()
    return {"wall_s": wall, "records": records}


def measure(spec: dict, variant: str) -> tuple[float, list]:
    results = run_local(_rank, spec["K"], {**spec, "variant": variant}, timeout_s=600)
    wall = max(r["wall_s"] for r in results)
    return wall, [rec for r in results for rec in r["records"]]


# -- the two modes -------------------------------------------------------------------------


def emulated(args, emit, *, link_units: float = 0.0) -> dict[str, float]:
    """Every variant on emulated compute; ``link_units``: an emulated slow link (each message held
    that many units, interlock.runtime.links). Returns each variant's measured time."""
    K, b, unit = args.components, args.steps, args.unit_ms / 1000
    spec = {"mode": "emulated", "K": K, "steps": b, "warmup": 2, "unit_s": unit, "batch": 8, "microbatches": args.microbatches,
            "link_latency_s": link_units * unit}
    link = "slow" if link_units else "fast"
    costs = emulate.emulated_costs(forward_s=unit, backward_s=unit, split=0.5)
    times: dict[str, float] = {}
    bounds: dict[str, float] = {}
    for variant in [v for v in [*SYNC, *PIPE] if fits(v, K)]:
        wall, records = measure(spec, variant)
        times[variant] = wall
        row = {"bench": "schedule", "mode": "emulated", "link": link, "link_units": link_units, "variant": variant,
               "components": K, "steps": b, "microbatches": args.microbatches if _microbatched(variant) else 1,
               "unit_s": unit, "time_s": round(wall, 4), "time_units": round(wall / unit, 2)}
        units = model_units(variant, K, b)
        if units is not None:
            row["paper_model_units"] = units
            row["ratio_to_paper_model"] = round(wall / unit / units, 3)
        if variant in SYNC:
            strategy, split, mb = SYNC[variant]
            m = args.microbatches if mb else 1
            plan = strategy().plan(K)
            schedules = [build_schedule(plan, k, has_head=True, split_backward=split, microbatches=m) for k in range(K)]
            predicted = clock.predict(schedules, costs.per_microbatch(m), steps=b, latency_s=link_units * unit,
                                      store_and_forward=bool(link_units)).makespan_s
            row["clock_predicted_units"] = round(predicted / unit, 2)
            row["ratio_to_clock"] = round(wall / predicted, 3)
            if m == 1 and split is None:  # what no schedule of this plan beats per step (clock.step_bound)
                bounds[variant] = clock.step_bound(plan, costs, latency_s=link_units * unit) / unit
                row["bound_units_per_step"] = round(bounds[variant], 3)
        if variant in PIPE:  # PyTorch's schedules: their orders on the same costs (interlock.timemodel.pipeline_clock)
            predicted = predict_pipeline(PIPE[variant], costs, num_components=K, microbatches=args.microbatches, steps=b,
                                         latency_s=link_units * unit, store_and_forward=bool(link_units))
            row["clock_predicted_units"] = round(predicted / unit, 2)
            row["ratio_to_clock"] = round(wall / predicted, 3)
        if args.trace_dir and records and not link_units:  # (the pipelining engines record no actions)
            from interlock.measure.trace import chrome_trace, gantt_png

            out = Path(args.trace_dir)
            chrome_trace(records, out / f"emulated_{variant}.trace.json")
            gantt_png(records, out / f"emulated_{variant}.png", title=f"{variant}, K={K}, emulated compute")
        emit(row)
    best_pipe = min((t, v) for v, t in times.items() if v in PIPE)
    for variant, t in times.items():
        row = {"bench": "schedule", "mode": "emulated", "link": link, "variant": variant,
               "ratio_to_end_to_end": round(t / times["end-to-end"], 3),
               # end-to-end as plain backprop (one full backward per component), the papers' baseline
               "ratio_to_end_to_end_backprop": round(t / times["end-to-end+onepass"], 3),
               "ratio_to_best_pipeline": round(t / best_pipe[0], 3), "best_pipeline": best_pipe[1]}
        if variant in bounds:  # the best any schedule could do, per step, against end-to-end's best
            row["bound_ratio_to_end_to_end"] = round(bounds[variant] / bounds["end-to-end"], 3)
        emit(row)
    return times


def real(args, emit) -> None:
    root = find_data_root(args.data)
    if root is None or not (root / "cifar-10-batches-bin" / "data_batch_1.bin").is_file():
        sys.exit("CIFAR-10 not found: pass --data DIR (a folder holding cifar-10-batches-bin/) or set $INTERLOCK_DATA")
    images, labels = read_cifar10_binary(root / "cifar-10-batches-bin" / "data_batch_1.bin", limit=args.batch)
    x = (images.float() / 255 - 0.5) / 0.25  # (B, 3, 32, 32)
    K, b = 2, args.real_steps
    spec = {"mode": "real", "K": K, "steps": b, "warmup": 2, "x": x, "y": labels, "batch": args.batch,
            "model": args.model, "partition": args.partition, "microbatches": args.microbatches}
    base_net = real_net(args.model, K, args.partition)
    variants = [v for v in [*SYNC, *PIPE] if fits(v, K)]
    # Rounds interleave the single-process baselines and every distributed variant, so that
    # machine noise hits them alike; medians over rounds are reported.
    single: dict[int, list[float]] = {1: [], 2: []}
    dist_steps: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.rounds):
        for threads in (1, 2):
            single[threads].append(single_process_step(base_net, x, labels, threads=threads, steps=b))
        for variant in variants:
            wall, _ = measure(spec, variant)
            dist_steps[variant].append(wall / b)
    torch.set_num_threads(1)
    predictions = {v: predicted_step(base_net, x, labels, *SYNC[v], microbatches=args.microbatches) for v in variants if v in SYNC}
    baselines = {t: statistics.median(ts) for t, ts in single.items()}
    for threads, step in baselines.items():
        emit({"bench": "schedule", "mode": "real", "variant": f"single-process end-to-end, {threads} thread(s)",
              "model": args.model, "rounds": args.rounds, "step_time_s": round(step, 4),
              "samples_per_s": round(args.batch / step, 1)})
    for variant in variants:
        step = statistics.median(dist_steps[variant])
        row = {"bench": "schedule", "mode": "real", "variant": variant, "model": args.model, "partition": args.partition,
               "components": K, "steps": b,
               "rounds": args.rounds, "batch": args.batch, "step_time_s": round(step, 4),
               "samples_per_s": round(args.batch / step, 1),
               "speedup_vs_single_process_1_thread": round(baselines[1] / step, 3),
               "speedup_vs_single_process_2_threads": round(baselines[2] / step, 3),
               "speedups_per_round_vs_1_thread": [round(a / d, 3) for a, d in zip(single[1], dist_steps[variant])]}
        if variant in predictions:
            row["clock_predicted_step_time_s"] = round(predictions[variant], 4)
        emit(row)


def single_process_step(net, x, y, *, threads: int, steps: int) -> float:
    """Seconds per end-to-end step of the whole network in this process (the simulated engine)."""
    torch.set_num_threads(threads)
    engine = il.Engine(copy.deepcopy(net), il.EndToEnd(), optimizer=sgd, loss_fn=F.cross_entropy, record=False)
    for _ in range(2):
        engine.step(x, y)
    t0 = time.perf_counter()
    for _ in range(steps):
        engine.step(x, y)
    return (time.perf_counter() - t0) / steps


def predicted_step(net, x, y, strategy, split: bool | None, microbatched: bool, *, microbatches: int) -> float:
    """The clock's K-device step time from the simulated engine's measured actions (one thread)."""
    # split None: the distributed engines' default, which splits (the simulated engine's None is one pass).
    engine = il.Engine(copy.deepcopy(net), strategy(), optimizer=sgd, loss_fn=F.cross_entropy,
                                split_backward=True if split is None else split, microbatches=microbatches if microbatched else 1)
    engine.step(x, y)
    records = [r for _ in range(4) for r in engine.step(x, y).records]
    return engine.predicted_time(records).makespan_s / 4


def _partition(text: str):
    return [int(text)] if text.isdigit() else text


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=["emulated", "real", "both"], default="both")
    p.add_argument("--components", type=int, default=4, help="K for emulated mode (real mode uses K=2)")
    p.add_argument("--steps", type=int, default=32, help="steps b in emulated mode")
    p.add_argument("--unit-ms", type=float, default=50.0, help="emulated time unit (one forward of one component)")
    p.add_argument("--microbatches", type=int, default=4, help="micro-batches for the pipeline schedules and the +mb variants")
    p.add_argument("--real-steps", type=int, default=12, help="steps per measurement in real mode")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds in real mode (medians reported)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--model", default="resnet20", help="real-mode network, cut in two components")
    p.add_argument("--partition", type=_partition, default=[4],
                   help="real-mode cut: uniform, params, flops, or a block index (default 4: resnet20's cut with the "
                        "most even measured busy time per component, see docs/results.md)")
    p.add_argument("--data", default=None)
    p.add_argument("--trace-dir", default=None, help="write Chrome traces and Gantt PNGs of the emulated runs here")
    p.add_argument("--slow-link", type=float, default=0.0, metavar="UNITS",
                   help="also run emulated mode over an emulated slow link holding every message UNITS time units "
                        "(1: sending an activation costs about one forward), and report what each variant keeps")
    args = p.parse_args(argv)
    rows = []

    def emit(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)

    if args.mode in ("emulated", "both"):
        fast = emulated(args, emit)
        if args.slow_link:
            slow = emulated(args, emit, link_units=args.slow_link)
            for variant in fast:  # throughput kept on the slow link, side by side
                emit({"bench": "schedule", "mode": "emulated", "variant": variant, "link_units": args.slow_link,
                      "throughput_kept_on_slow_link": round(fast[variant] / slow[variant], 3)})
    if args.mode in ("real", "both"):
        real(args, emit)
    print(table(rows), file=sys.stderr)


def table(rows: list[dict]) -> str:
    lines = []
    for link in ("fast", "slow"):
        em = [r for r in rows if r["mode"] == "emulated" and "time_s" in r and r["link"] == link]
        if not em:
            continue
        rel = {r["variant"]: r for r in rows if r["mode"] == "emulated" and r.get("link") == link and "ratio_to_end_to_end" in r}
        kept = {r["variant"]: r["throughput_kept_on_slow_link"] for r in rows if "throughput_kept_on_slow_link" in r}
        title = "fast link" if link == "fast" else f"slow link (every message held {em[0]['link_units']:g} units)"
        lines += ["", f"emulated compute, K={em[0]['components']}, b={em[0]['steps']} steps, {title} (time units):",
                  "| variant | measured | paper model | measured / model | clock prediction | measured / clock | vs end-to-end "
                  "| vs end-to-end backprop | bound vs end-to-end's bound | vs best pipeline |"
                  + (" throughput kept on the slow link |" if link == "slow" else ""),
                  "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if link == "slow" else "")]
        for r in em:
            q = rel[r["variant"]]
            lines.append(f"| {r['variant']} | {r['time_units']} | {r.get('paper_model_units', '-')} | "
                         f"{r.get('ratio_to_paper_model', '-')} | {r.get('clock_predicted_units', '-')} | {r.get('ratio_to_clock', '-')} | "
                         f"{q['ratio_to_end_to_end']} | {q['ratio_to_end_to_end_backprop']} | {q.get('bound_ratio_to_end_to_end', '-')} | "
                         f"{q['ratio_to_best_pipeline']} ({q['best_pipeline']}) |"
                         + (f" {kept.get(r['variant'], '-')} |" if link == "slow" else ""))
    re_ = [r for r in rows if r["mode"] == "real"]
    if re_:
        lines += ["", f"real compute, {re_[-1].get('model', '')}, K=2 processes x 1 thread (samples/s):",
                  "| variant | samples/s | vs 1-process e2e (1 thread) | vs 1-process e2e (2 threads) | clock prediction s/step |",
                  "|---|---|---|---|---|"]
        for r in re_:
            lines.append(f"| {r['variant']} | {r['samples_per_s']} | {r.get('speedup_vs_single_process_1_thread', '-')} | "
                         f"{r.get('speedup_vs_single_process_2_threads', '-')} | {r.get('clock_predicted_step_time_s', '-')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
