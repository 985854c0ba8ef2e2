"""Command line: ``interlock train``, ``compare``, ``search``, ``reproduce``, ``heads`` (also ``python -m interlock``)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import statistics
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from ..errors import REQUEST_ERRORS as _REQUEST_ERRORS
from ..training.config import TrainConfig, load_config, parse_strategy
from ..training.metrics import atomic_write_text, read_metrics, summarise
from ..training.rundir import RunDirError, lock_run_dir
from .progress import Progress  # noqa: F401  (interlock.app.cli.Progress, as before)
from .runner import RunFailed, run_one
from .runner import failure_line as _failure_line  # noqa: F401  (the private names, as before)
from .runner import logged_command as _logged_command

log = logging.getLogger("interlock")


# -- commands -----------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="config file (JSON, or TOML on Python >= 3.11)")
    p.add_argument("overrides", nargs="*", help="section.option=value overrides, e.g. optim.lr=0.1 model.components=4 "
                                                 "(every option: --list-options)")
    p.add_argument("--steps", type=int, help="run length in steps (replaces epochs)")
    p.add_argument("--epochs", type=float, help="run length in epochs (replaces steps)")
    p.add_argument("--seed", type=int, help="seed of the weights, data order, augmentation and dropout (default: the config's, 0)")
    p.add_argument("--data", help="data folder holding cifar-10-batches-bin/ etc. (default: $INTERLOCK_DATA or ../shared/data)")
    p.add_argument("--run-dir", help="where the run's config, metrics, checkpoints and log.txt go")
    p.add_argument("--engine", choices=["simulated", "distributed", "pipeline"],
                   help="simulated: every component in this process (default); distributed: one process per "
                        "component over torch.distributed, started here (or by torchrun); pipeline: end-to-end "
                        "through torch.distributed.pipelining (pipeline.schedule, pipeline.microbatches)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--list-options", action="store_true", help="print every config option with its default and meaning, then exit")


def _flag_overrides(args) -> list[str]:
    """The ``key=value`` overrides that the flags stand for."""
    out = []
    if args.steps is not None:
        out += [f"steps={args.steps}", "epochs=0"]
    if args.epochs is not None:
        out += [f"epochs={args.epochs}", "steps=0"]
    for flag, key in (("seed", "seed"), ("data", "data.root"), ("run_dir", "run_dir"), ("engine", "engine"), ("strategy", "strategy")):
        if getattr(args, flag, None) is not None:
            out.append(f"{key}={getattr(args, flag)}")
    return out


def _config(args, extra: list[str] | None = None) -> TrainConfig:
    overrides = list(args.overrides or [])
    config_path = args.config
    if config_path and "=" in config_path and not Path(config_path).exists():
        overrides.insert(0, config_path)  # a first override, not a file
        config_path = None
    return load_config(config_path, overrides + _flag_overrides(args) + (extra or []))


def _resolved(config: TrainConfig) -> TrainConfig:
    """``config`` with its data as it will really run (a missing CIFAR-10: an error, or the asked-for fallback)."""
    from ..training.tasks import resolve_data

    return replace(config, data=resolve_data(config.data, seed=config.seed))


class _LogFileOnly(logging.Filter):
    """Keeps records that carry a traceback off the terminal: they go to the run's log.txt, and the
    terminal gets the failure's one line (``interlock: error: ...``) instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.exc_info


def _list_options() -> int:
    from ..training.config import describe_options

    rows = describe_options()
    width = max(len(key) for key, *_ in rows)
    print("Config options: set them in the config file (JSON sections model, data, optim, lr) or as key=value overrides.\n")
    for key, kind, default, note in rows:
        print(f"  {key:<{width}}  {default:<14} {note} [{kind}]")
    return 0


def cmd_train(args) -> int:
    if args.list_options:
        return _list_options()
    if args.resume:
        from ..training.loop import resume_config

        run_dir, overrides = args.run_dir, list(args.overrides or [])
        if args.config:
            given = Path(args.config)
            if "=" in args.config and not given.exists():
                overrides.insert(0, args.config)  # the first override, taken for the config positional
            elif given.is_dir() and (run_dir is None or given.resolve() == Path(run_dir).resolve()):
                run_dir = args.config
            else:
                raise ValueError(
                    f"--resume continues a run from the config.json in its folder; drop {args.config!r} "
                    f"(change what may change with key=value overrides), or start a new run without --resume"
                )
        if run_dir is None:
            raise ValueError("--resume needs the run to continue: --run-dir DIR")
        flags = [o for o in _flag_overrides(args) if not o.startswith("run_dir=")]
        config = resume_config(run_dir, overrides + flags)
    else:
        config = _resolved(_config(args))
    final = run_one(config, resume=args.resume, quiet=args.quiet, label=config.strategy)
    if os.environ.get("RANK", "0") != "0":  # under torchrun every rank runs this; one prints
        return 0
    print(json.dumps({"run_dir": config.run_dir, "strategy": config.strategy, **{k: v for k, v in final.items() if k != "kind"}}))
    return 0


def cmd_compare(args) -> int:
    from ..training.runs import RunState, run_state

    if args.list_options:
        return _list_options()
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    for s in strategies:
        parse_strategy(s)  # fail before any training
    if args.seed is not None and args.seeds is not None:
        raise ValueError(f"give the seeds once: --seeds {args.seeds} or --seed {args.seed} (compare runs every seed in --seeds)")
    base = _resolved(_config(args))
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds is not None else [base.seed]
    root = Path(args.run_dir or base.run_dir)
    # Every run directory is checked before any training: a run of another config is refused
    # (or, with --rerun, moved aside) now, not after an hour of the other runs.
    plan = []
    for seed in seeds:
        for strategy in strategies:
            run_dir = root / parse_strategy(strategy).name / f"seed{seed}"
            config = _resolved(_config(args, [f"strategy={strategy}", f"seed={seed}", f"run_dir={run_dir}"]))
            plan.append((strategy, seed, config, run_state(run_dir, config, rerun=args.rerun)))
    results: dict[str, list[dict]] = {s: [] for s in strategies}
    histories: dict[str, list[list[dict]]] = {s: [] for s in strategies}
    runs = []
    for strategy, seed, config, state in plan:
        if state == RunState.FINISHED:
            log.info("%s seed %d already finished in %s with this config; reusing its metrics", strategy, seed, config.run_dir)
        else:
            # An interrupted earlier attempt of the same config continues from its newest checkpoint.
            run_one(config, resume=state == RunState.PARTIAL, quiet=args.quiet, label=f"{strategy} seed {seed}")
        rows = read_metrics(config.run_dir)
        histories[strategy].append(rows)
        results[strategy].append(summarise(rows))
        runs.append({"strategy": strategy, "seed": seed, "run_dir": config.run_dir, "reused": state == RunState.FINISHED})
    table = _table(results, base)
    print(table)
    summary = {"config": base.to_dict(), "seeds": seeds, "runs": runs, "results": results}
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(root / "summary.md", table + "\n")
    from .plots import learning_curves_png

    # Curves follow the validation split when runs have one (the test set is scored at the end only).
    split = "val" if any(r.get("val_final_acc") is not None for rows in histories.values() for h in rows for r in h) else "test"
    png = learning_curves_png(histories, root / "curves.png", title=f"{base.model.factory or base.model.name}, K={base.model.components}, {base.data.label}", split=split)
    print(f"\nwrote {root / 'summary.md'}, {root / 'summary.json'} and {png}")
    return 0


def _mean_std(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def _table(results: dict[str, list[dict]], base: TrainConfig) -> str:
    K = base.model.components
    split = "test"
    head = ["strategy", f"{split} acc % (final head)"] + [f"head {k}" for k in range(1, K)]
    head += ["step time s", "samples/s", f"predicted s/step on {K} devices"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for strategy, runs in results.items():
        finals = [r["final"] for r in runs]
        cells = [strategy, _mean_std([f.get(f"{split}_final_acc") for f in finals])]
        cells += [_mean_std([f.get(f"{split}_acc_{k}") for f in finals]) for k in range(1, K)]
        times = [r["step_time_s"] for r in runs if r["step_time_s"] is not None]
        rates = [r["samples_per_s"] for r in runs if r["samples_per_s"] is not None]
        predicted = [r["predicted_parallel_step_time_s"] for r in runs if r.get("predicted_parallel_step_time_s") is not None]
        cells += [f"{statistics.mean(times):.3f}" if times else "-", f"{statistics.mean(rates):.0f}" if rates else "-",
                  f"{statistics.mean(predicted):.3f}" if predicted else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    seeds = len(next(iter(results.values())))
    lines.append("")
    lines.append(f"mean ± std over {seeds} seed(s); accuracies of each head on the {split} set of {base.data.label} "
                 f"at the end of training")
    return "\n".join(lines)


def cmd_heads(args) -> int:
    """Each head's parameters and FLOPs next to its component's (DGL aims for heads under 5%)."""
    from .. import heads, models

    kw = {}
    for item in args.options:
        key, _, value = item.partition("=")
        kw[key] = json.loads(value) if value[:1] in "0123456789-[{tf" else value
    net = models.create(args.model, components=args.components, heads=args.heads, partition=args.partition, **kw)
    sample = models.build(args.model, components=args.components, **kw).sample_input
    rows = heads.cost(net, sample)
    print("| component | output shape | component params | head params | params ratio | component GFLOPs | head GFLOPs | FLOPs ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = lambda v: "-" if v is None else f"{100 * v:.1f}%"
        print(f"| {r['component']} | {tuple(r['out_shape'])} | {r['component_params']:,} | {r['head_params']:,} | "
              f"{ratio(r['head_params_ratio'])} | {r['component_flops'] / 1e9:.4f} | {r['head_flops'] / 1e9:.4f} | "
              f"{ratio(r['head_flops_ratio'])} |")
    print(f"\nFLOPs of one forward pass on the model's sample input ({tuple(sample.shape)}); heads: {args.heads}")
    return 0


class SearchProgress:
    """One status line per logged search row (pretraining, then meta steps)."""

    def __init__(self, stream=sys.stderr) -> None:
        self.stream, self.tty, self.t0 = stream, stream.isatty(), time.perf_counter()

    def __call__(self, row: dict) -> None:
        what = (f"meta loss {row['meta_loss']:.3f} | val err {100 * row['val_error']:.1f}% | own-loss weight "
                f"{row['local_weight_mean']:.3f}" if row["kind"] == "meta" else
                f"loss {row['loss_final']:.3f}" + (f" | val err {100 * row['val_error']:.1f}%" if "val_error" in row else ""))
        text = (f"search {row['kind']} {row['step']}/{row['total']} | {what} | {row['step_time_s']:.2f} s/step "
                f"| {time.perf_counter() - self.t0:.0f}s")
        self.stream.write(("\r" + text.ljust(110)[:160]) if self.tty else text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")


def cmd_search(args) -> int:
    """SEDONA: pretrain into the weight memory, search alpha and beta, write the discretised configs."""
    from ..search.run import run_search

    if args.list_options:
        return _list_options()
    components = sorted({int(k) for item in args.components for k in str(item).split(",") if k.strip()})
    if args.resume:
        run_dir = args.run_dir or (args.config if args.config and Path(args.config).is_dir() else None)
        if run_dir is None:
            raise ValueError("--resume needs the search to continue: --run-dir DIR")
        saved = Path(run_dir) / "config.json"
        if not saved.exists():
            raise FileNotFoundError(f"--resume: {saved} does not exist; start the search without --resume")
        # The directory is where it is, whatever its config.json says (a copy names the original).
        config = load_config(saved, [o for o in args.overrides if "=" in o] + [f"run_dir={run_dir}"])
    else:
        config = _config(args)
    progress = None if args.quiet else SearchProgress()
    try:
        with lock_run_dir(config.run_dir):
            result = _logged_command(Path(config.run_dir), f"the search in {config.run_dir}", lambda: run_search(
                config, components=components, resume=args.resume, on_row=progress))
    finally:
        if progress is not None:
            progress.close()
    run_dir = Path(config.run_dir)
    print(json.dumps({"run_dir": str(run_dir), "search": str(run_dir / "search.json"),
                      "configs": {K: str(run_dir / f"config-K{K}.json") for K in components},
                      "decisions": result.get("decisions", {})}))
    return 0


def cmd_reproduce(args) -> int:
    """Train every run one paper table needs (reusing identical finished runs) and write its report."""
    from ..reproduce import names, reproduce

    if args.list or not args.table:
        from ..reproduce import TABLES

        for n in names():
            print(f"{n:24s} {TABLES[n].paper}: {TABLES[n].title}")
        return 0 if args.list else 2
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    from ..reproduce import TABLES, report_folder

    if args.table not in TABLES:
        raise ValueError(f"unknown table {args.table!r}; known: {', '.join(names())}")

    # One reproduce per report at a time; each run holds its own folder (two tables may share a --root).
    report = report_folder(Path(args.root) / args.scale, args.table, subset=bool(args.runs))
    with lock_run_dir(report):
        _logged_command(report, f"reproduce {args.table}", lambda: reproduce(
            args.table, scale=args.scale, seeds=seeds, root=args.root, data=args.data, device=args.device,
            rerun=args.rerun, quiet=args.quiet, overrides=args.set, jobs=args.jobs, report_only=args.report_only,
            only=[r for r in args.runs.split(",") if r] if args.runs else None))
    return 0


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C: every rank is stopped and the newest checkpoint kept."""


def _on_sigterm(signum, frame) -> None:
    raise _Terminated()


def main(argv: list[str] | None = None) -> int:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="interlock", description="Depthwise model-parallel training with local losses.",
        epilog="Every config option, its default and meaning: interlock train --list-options",
    )
    parser.add_argument("--version", action="version", version=f"interlock {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p_train = sub.add_parser("train", help="train one run of one strategy",
                             epilog="Every config option, its default and meaning: interlock train --list-options")
    _common(p_train)
    p_train.add_argument("--strategy", help="end-to-end, local, <n>-wise, <n>-wise-sum, async-local, sequential, local-double, hogwild or hogwild-stashed")
    p_train.add_argument("--resume", action="store_true",
                         help="continue the run in --run-dir from its newest checkpoint (overrides may lengthen it: steps=N)")
    p_train.set_defaults(fn=cmd_train)
    p_cmp = sub.add_parser("compare", help="train several strategies on the same model, data and seeds; print a table and plot",
                           epilog="Finished runs of the same config are reused, interrupted ones resumed; a run directory "
                                  "holding another config is refused unless --rerun is given.")
    _common(p_cmp)
    p_cmp.add_argument("--strategies", default="end-to-end,local,2-wise")
    p_cmp.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2 (default: the config's seed; --seed N is --seeds N)")
    p_cmp.add_argument("--rerun", action="store_true",
                       help="move run directories of another config aside (renamed *.replaced-<time>) and train them anew")
    p_cmp.set_defaults(fn=cmd_compare)
    p_search = sub.add_parser("search", help="SEDONA: search where to cut the model and which head each component gets",
                              epilog="Options: the search.* section (interlock search --list-options); presets "
                                     "sedona-search (the paper's values) and sedona-search-cpu (minutes on a CPU).")
    _common(p_search)
    p_search.add_argument("--components", action="append", default=[], metavar="K",
                          help="write the discretised config for K components (repeat, or K1,K2,...): config-K<K>.json")
    p_search.add_argument("--resume", action="store_true", help="continue the search in --run-dir from its checkpoint")
    p_search.set_defaults(fn=cmd_search)
    p_rep = sub.add_parser("reproduce", help="train everything one paper table or figure needs; write a report with a verdict")
    p_rep.add_argument("table", nargs="?", help="which table (interlock reproduce --list)")
    p_rep.add_argument("--list", action="store_true", help="list the tables that can be reproduced")
    p_rep.add_argument("--scale", default="cpu", choices=["cpu", "paper"],
                       help="cpu: minutes on 2 cores (fewer epochs, fewer K; the report says so); paper: the paper's setting, for a GPU")
    p_rep.add_argument("--seeds", help="comma-separated seeds (default: 0 at cpu scale, 0,1,2 at paper scale)")
    p_rep.add_argument("--root", default="runs/reproduce", help="folder for the runs and reports")
    p_rep.add_argument("--data", help="data folder (default: $INTERLOCK_DATA or ../shared/data)")
    p_rep.add_argument("--device", help="torch device for the runs, e.g. cuda")
    p_rep.add_argument("--rerun", action="store_true", help="move aside finished runs whose config differs and train them anew")
    p_rep.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="config override for every run, after the scale's (e.g. --set epochs=30); the report lists it")
    p_rep.add_argument("--jobs", type=int, default=1, help="runs trained at once, each in its own process (default 1)")
    p_rep.add_argument("--report-only", action="store_true", help="train nothing: report on the runs already finished")
    p_rep.add_argument("--runs", help="only these runs of the table (comma-separated keys, e.g. K6_local,K6_2-wise); "
                                      "the report goes to reports/NAME-subset/")
    p_rep.add_argument("--quiet", action="store_true", help="no progress lines")
    p_rep.set_defaults(fn=cmd_reproduce, overrides=[])
    p_heads = sub.add_parser("heads", help="parameters and FLOPs of each head relative to its component")
    p_heads.add_argument("model", help="a registered model, e.g. dgl_cnn, resnet18, toy_cnn")
    p_heads.add_argument("options", nargs="*", help="model options, e.g. width=0.25 stem=imagenet")
    p_heads.add_argument("--components", type=int, default=4)
    p_heads.add_argument("--heads", default="mlp_sr", help="auxiliary head for every component")
    p_heads.add_argument("--partition", default="uniform", help="uniform, params or flops")
    p_heads.set_defaults(fn=cmd_heads, overrides=[])
    # Overrides may follow flags (``--steps 5 optim.lr=0.1``): collect the key=value leftovers.
    args, extra = parser.parse_known_args(argv)
    stray = [e for e in extra if e.startswith("-") or "=" not in e]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    args.overrides = list(args.overrides or []) + extra
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for h in logging.getLogger().handlers:  # the terminal's: one line per failure (the traceback is in log.txt)
        if not isinstance(h, logging.FileHandler) and not any(isinstance(f, _LogFileOnly) for f in h.filters):
            h.addFilter(_LogFileOnly())
    # SIGTERM stops a run as Ctrl-C does (ranks stopped, newest checkpoint kept), not mid-air
    # with the ranks left running. Only the main thread may set handlers (tests call main from others).
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if threading.current_thread() is threading.main_thread() else None
    try:
        return args.fn(args)
    except _REQUEST_ERRORS as err:
        print(f"interlock: error: {err}", file=sys.stderr)
        return 2
    except RunFailed as err:
        print(f"interlock: error: {err.line}", file=sys.stderr)
        return 1
    except RunDirError as err:  # a full disk or a folder that cannot be written: what to change, in one line
        print(f"interlock: error: {err.strerror}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        how = "terminated" if isinstance(err, _Terminated) else "interrupted"
        print(f"\ninterlock: {how}; the run stopped (every rank with it); the newest checkpoint it wrote, if any, "
              f"is kept (continue from it with --resume)",
              file=sys.stderr)
        return 143 if isinstance(err, _Terminated) else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
