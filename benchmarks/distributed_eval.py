"""Evaluation on the distributed engine next to the single-process engine: wall time and memory.

The quick config's final evaluation (validation and test splits of CIFAR-10, the toy CNN
cut into 6 components, eval_batch_size 1000) is run once per round on each engine, the
rounds interleaved so machine noise hits both alike. Every process, the single-process
run included, is started the same way (interlock.runtime.launch.run_local, forkserver), so both
pay the same start-up and hold the same libraries.

Memory is measured from outside: this script samples the proportional set size (PSS,
/proc/PID/smaps_rollup: shared pages split among the processes sharing them) of every
process it started, forkserver included, every 50 ms, and reports the peak of the sum.
The sum of each process's own peak RSS (which counts pages shared by the ranks once per
rank) is reported too. Time is the evaluation's wall time on the slowest rank.

    python benchmarks/distributed_eval.py --data ../shared/data            # 1 round
    python benchmarks/distributed_eval.py --data ../shared/data --rounds 2

The single process is measured with 1 and with 2 torch threads (the quick config's 2; on
a machine whose cores are busy with other work, 2 threads can be far slower than 1), the
ranks with 1 thread each (the README's distributed command). One JSON line per
measurement (with the 1-minute load average, as these machines are shared), then one
line of ratios per single-process baseline (distributed / single, medians).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

from interlock.runtime.procs import descendants

ROOT = Path(__file__).resolve().parents[1]


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def evaluate_once(config_dict: dict) -> dict:
    """In each started process: build the run's task, network and engine, then time one final evaluation."""
    from interlock.training.config import TrainConfig
    from interlock.training.loop import build_net, evaluate, make_engine
    from interlock.training.tasks import build_task

    config = TrainConfig(**config_dict)
    torch.set_num_threads(config.threads or 1)
    task = build_task(config.data, seed=config.seed)
    net = build_net(config, task)
    engine = make_engine(config, net, task, total_steps=config.steps)
    from interlock.training import loop

    if hasattr(train, "drop_unfed_inputs"):  # (an older checkout, measured for comparison, has none)
        train.drop_unfed_inputs(task, engine)  # as interlock.training.loop.run does
    chunk = {"chunk": config.data.eval_chunk or train.EVAL_CHUNK[config.engine]} if hasattr(train, "EVAL_CHUNK") else {}
    try:
        rss_before = _rss_mb()
        engine.barrier()
        start, wall_start = time.perf_counter(), time.time()
        for batches in task.eval_splits().values():  # val and test: what the final evaluation scores
            scores = evaluate(engine, batches, num_classes=task.num_classes, is_text=False, device="cpu", **chunk)
        seconds, wall_end = time.perf_counter() - start, time.time()
        engine.barrier()
    finally:
        engine.close()
    return {"eval_s": seconds, "wall_start": wall_start, "wall_end": wall_end, "rss_before_mb": rss_before,
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "test_final_acc": scores["final_acc"]}


def _pss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class PssSampler:
    """The summed PSS of this process's descendants over time: ``peak_mb(start, end)`` within a window."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s, self.samples, self._stop = interval_s, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            self.samples.append((time.time(), sum(_pss_mb(p) for p in descendants(me))))
            self._stop.wait(self.interval_s)

    def peak_mb(self, start: float = 0.0, end: float = float("inf")) -> float:
        return max((mb for t, mb in self.samples if start <= t <= end), default=float("nan"))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def measure(engine: str, config, *, threads: int) -> dict:
    from dataclasses import replace

    from interlock.runtime.launch import run_local

    cfg = replace(config, engine=engine, threads=threads)
    nprocs = cfg.model.components if engine == "distributed" else 1
    with PssSampler() as pss:
        ranks = run_local(evaluate_once, nprocs, cfg.to_dict(), threads=threads)
    return {
        "engine": engine, "processes": nprocs, "threads_per_process": threads,
        "eval_s": max(r["eval_s"] for r in ranks),
        # During the evaluation (the window the ranks report), and over the processes' whole lives
        # (loading the data set included, which every rank does).
        "eval_peak_pss_sum_mb": round(pss.peak_mb(min(r["wall_start"] for r in ranks), max(r["wall_end"] for r in ranks)), 1),
        "peak_pss_sum_mb": round(pss.peak_mb(), 1),
        "maxrss_sum_mb": round(sum(r["maxrss_mb"] for r in ranks), 1),
        "eval_rss_growth_sum_mb": round(sum(r["maxrss_mb"] - r["rss_before_mb"] for r in ranks), 1),
        "test_final_acc": ranks[0]["test_final_acc"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "experiments" / "quick_cifar10.json"))
    p.add_argument("--data", help="data folder (default: $INTERLOCK_DATA or ../shared/data)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--single-threads", default="1,2",
                   help="torch threads of the single process, comma-separated: each is a baseline (2: the quick config's)")
    p.add_argument("--rank-threads", type=int, default=1, help="torch threads of each rank (the README's distributed command)")
    args = p.parse_args()

    from interlock.training.config import load_config

    config = load_config(args.config, [f"data.root={args.data}"] if args.data else [])
    single = [int(t) for t in args.single_threads.split(",")]
    variants = [("simulated", t) for t in single] + [("distributed", args.rank_threads)]
    rows: dict[tuple[str, int], list[dict]] = {v: [] for v in variants}
    for r in range(args.rounds):
        for engine, threads in variants:
            row = {"round": r, **measure(engine, config, threads=threads), "load_avg_1min": round(os.getloadavg()[0], 2)}
            rows[(engine, threads)].append(row)
            print(json.dumps(row), flush=True)
    keys = ("eval_s", "eval_peak_pss_sum_mb", "peak_pss_sum_mb", "maxrss_sum_mb")
    med = {v: {k: statistics.median(row[k] for row in rs) for k in keys} for v, rs in rows.items()}
    dist = med[("distributed", args.rank_threads)]
    for t in single:
        base = med[("simulated", t)]
        print(json.dumps({
            "ratio": f"distributed ({args.rank_threads} thread(s) per rank) / single process ({t} thread(s)), medians",
            "eval_time": round(dist["eval_s"] / base["eval_s"], 3),
            "eval_peak_pss_sum": round(dist["eval_peak_pss_sum_mb"] / base["eval_peak_pss_sum_mb"], 3),
            "peak_pss_sum": round(dist["peak_pss_sum_mb"] / base["peak_pss_sum_mb"], 3),
            "maxrss_sum": round(dist["maxrss_sum_mb"] / base["maxrss_sum_mb"], 3),
            "cpu_cores": os.cpu_count(), "torch": torch.__version__,
        }), flush=True)


if __name__ == "__main__":
    sys.exit(main())
