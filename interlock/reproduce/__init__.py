"""``interlock reproduce NAME``: train everything a paper's table needs and write its report.

    interlock reproduce interlocking-fig4-left --scale cpu --seeds 0,1,2

Runs live under ``<root>/<scale>/<family>/<run>/seed<N>`` (tables that need the same runs,
Table 1 and Table 2, share a family). A finished run is reused only when its saved config
equals the one asked for (``interlock.training.runs``); an interrupted one resumes from its newest
checkpoint. The report goes to ``<root>/<scale>/reports/<name>/``: ``report.md`` (the
paper's claim, our numbers as mean ± std over seeds, the verdict, the scale's departures
from the paper, wall time, the machine), ``report.json``, ``figure.png`` where the table
has a figure, and ``configs/`` with the exact config of every run.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

from ..checks import count
from ..training.config import load_config
from ..training.metrics import atomic_write_text, read_metrics, summarise
from ..training.runs import RunState, run_state
from .tables import SCALES, TABLES, Table, names

__all__ = ["reproduce", "names", "TABLES", "SCALES"]

log = logging.getLogger(__name__)


def _summary(run_dir: Path) -> dict:
    rows = read_metrics(run_dir)
    wall = run_dir / "wall_time.json"
    timing = json.loads(wall.read_text()) if wall.exists() else {}
    return {
        **summarise(rows),
        "history": rows,
        "wall_time_s": timing.get("wall_time_s"),
        "machine": timing.get("machine"),  # where the run trained (a report may be written elsewhere)
    }


def _add_wall_time(run_dir: Path, seconds: float, *, resumed: bool) -> None:
    wall_file = run_dir / "wall_time.json"
    before = json.loads(wall_file.read_text())["wall_time_s"] if resumed and wall_file.exists() else 0.0
    atomic_write_text(wall_file, json.dumps({"wall_time_s": before + seconds, "machine": _machine()}) + "\n")


def _train_in_processes(pending: list, report_dir: Path, jobs: int, stream) -> None:
    """Train ``pending`` runs, ``jobs`` at a time, each as ``python -m interlock train`` in its own process.

    Each process's output goes to ``<run_dir>/train.log``. A failed run stops the launch of
    new ones; the others finish, and the error names the failed run and its log.
    """
    import subprocess

    queue = list(pending)
    running: list[tuple] = []
    failed: list[str] = []
    while queue or running:
        while queue and len(running) < jobs and not failed:
            run, seed, run_dir, cfg, state = queue.pop(0)
            run_dir.mkdir(parents=True, exist_ok=True)
            config_path = report_dir / "configs" / f"{run.key}_seed{seed}.json"
            cmd = [sys.executable, "-m", "interlock", "train", str(config_path), "--quiet"]
            if state == RunState.PARTIAL:
                cmd = [sys.executable, "-m", "interlock", "train", "--resume", "--run-dir", str(run_dir), "--quiet"]
            log_file = open(run_dir / "train.log", "a")
            proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
            running.append((proc, log_file, run, seed, run_dir, state, time.perf_counter()))
            print(f"started {run.key} seed {seed} (pid {proc.pid}); {len(queue)} waiting", file=stream)
        time.sleep(1.0)
        for item in list(running):
            proc, log_file, run, seed, run_dir, state, start = item
            if proc.poll() is None:
                continue
            running.remove(item)
            log_file.close()
            if proc.returncode == 0:
                _add_wall_time(run_dir, time.perf_counter() - start, resumed=state == RunState.PARTIAL)
                print(f"finished {run.key} seed {seed} in {time.perf_counter() - start:.0f} s", file=stream)
            else:
                failed.append(f"{run.key} seed {seed} (exit {proc.returncode}; see {run_dir / 'train.log'})")
    if failed:
        raise RuntimeError(f"runs failed: {'; '.join(failed)}; fix the cause and run the same command again (finished runs are reused)")


def _machine() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)} (CUDA), {os.cpu_count()} CPU cores"
    except Exception:  # a report must not fail on a probe
        pass
    return f"{os.cpu_count()} CPU cores ({platform.machine()}), no GPU"


def report_folder(scale_root: Path, name: str, *, subset: bool) -> Path:
    """Where table ``name``'s report goes under ``<root>/<scale>`` (a --runs subset: ``<name>-subset``)."""
    return Path(scale_root) / "reports" / (f"{name}-subset" if subset else name)


def reproduce(
    name: str,
    *,
    scale: str = "cpu",
    seeds: list[int] | None = None,
    root: str | Path = "runs/reproduce",
    data: str | None = None,
    device: str | None = None,
    rerun: bool = False,
    quiet: bool = False,
    overrides: list[str] | None = None,
    jobs: int = 1,
    report_only: bool = False,
    only: list[str] | None = None,
    stream=sys.stderr,
) -> Path:
    """Train (or reuse) the runs of table ``name`` and write its report; returns the report folder.

    ``overrides``: ``key=value`` lines applied to every run after the scale's settings (e.g.
    ``epochs=30`` to fit a time budget); the report lists them as departures. ``jobs``: runs
    trained at once, each in its own process (on a GPU, several small runs share it well).
    ``report_only``: train nothing; report on the runs that have finished (missing ones show "-").
    ``only``: run keys (e.g. ``K6_2-wise``) to restrict the table to; such a partial report goes to
    ``reports/<name>-subset/`` so that it never replaces the whole table's.
    """
    if name not in TABLES:
        raise ValueError(f"unknown table {name!r}; known: {', '.join(names())}")
    if scale not in SCALES:
        raise ValueError(f"--scale {scale!r}; use one of {', '.join(SCALES)}")
    table: Table = TABLES[name]
    base, runs, note = table.plan(scale)
    if data:
        base = [*base, f"data.root={data}"]
    if device:
        base = [*base, f"device={device}"]
    if overrides:
        # A run's length is steps or epochs: a --set of one replaces the scale's other.
        keys = {o.split("=", 1)[0].strip() for o in overrides}
        pair = ["epochs=0"] if "steps" in keys and "epochs" not in keys else ["steps=0"] if "epochs" in keys and "steps" not in keys else []
        base = [*base, *pair, *overrides]
        note += f"; with {' '.join(overrides)} on every run"
    count(jobs, f"--jobs {jobs!r}: use a positive number of runs trained at once")
    seeds = list(seeds) if seeds else list(table.default_seeds[scale])
    if only:
        unknown = sorted(set(only) - {r.key for r in runs})
        if unknown:
            raise ValueError(f"--runs {','.join(unknown)}: not runs of {name}; its runs are {', '.join(r.key for r in runs)}")
        runs = [r for r in runs if r.key in only]
        note += f"; only the runs {', '.join(r.key for r in runs)}"
    root = Path(root) / scale
    family = root / table.family
    report_dir = report_folder(root, name, subset=bool(only))
    (report_dir / "configs").mkdir(parents=True, exist_ok=True)

    from ..app.runner import run_one

    # Check every config (and every existing run) before training anything.
    planned = []
    for run in runs:
        for seed in seeds:
            run_dir = family / run.key / f"seed{seed}"
            cfg = load_config(None, [*base, *run.overrides, f"seed={seed}", f"run_dir={run_dir}"])
            planned.append((run, seed, run_dir, cfg, run_state(run_dir, cfg, rerun=rerun, where_option="--root")))
    todo = 0 if report_only else sum(state != RunState.FINISHED for *_, state in planned)
    print(f"{name} ({scale} scale): {len(planned)} runs, {todo} to train, {len(planned) - todo} reused; {note}", file=stream)
    t0 = time.perf_counter()
    for run, seed, run_dir, cfg, _ in planned:
        atomic_write_text(report_dir / "configs" / f"{run.key}_seed{seed}.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
    pending = [] if report_only else [p for p in planned if p[4] != RunState.FINISHED]
    if jobs == 1:
        for i, (run, seed, run_dir, cfg, state) in enumerate(pending, 1):
            start = time.perf_counter()
            run_one(cfg, resume=state == RunState.PARTIAL, quiet=quiet, label=f"[{i}/{len(pending)}] {run.key} seed {seed}")
            _add_wall_time(run_dir, time.perf_counter() - start, resumed=state == RunState.PARTIAL)
    else:
        _train_in_processes(pending, report_dir, jobs, stream)
    results: dict[str, list[dict]] = {}
    for run, seed, run_dir, cfg, _ in planned:
        if (run_dir / "metrics.jsonl").exists():
            results.setdefault(run.key, []).append(_summary(run_dir))
    session_s = time.perf_counter() - t0

    outcome = table.judge(results, runs, scale)
    figure = None
    if outcome.plot is not None:
        figure = report_dir / "figure.png"
        outcome.plot(str(figure))
    walls = [s["wall_time_s"] for rs in results.values() for s in rs if s["wall_time_s"] is not None]
    machines = sorted({s["machine"] for rs in results.values() for s in rs if s.get("machine")}) or [_machine()]
    command = f"interlock reproduce {name} --scale {scale} --seeds {','.join(map(str, seeds))}"
    if overrides:
        command += "".join(f" --set {o}" for o in overrides)
    if only:
        command += f" --runs {','.join(r.key for r in runs)}"
    if device:
        command += f" --device {device}"
    if jobs > 1:  # runs sharing a machine: their step times are not those of one run alone
        command += f" --jobs {jobs}"
    missing = [f"{run.key} seed {seed}" for run, seed, run_dir, *_ in planned if not (run_dir / "metrics.jsonl").exists()]
    md = [
        f"# {table.title}",
        "",
        f"Reproduces {table.paper}. Command: `{command}`",
        "",
        f"**Verdict: {outcome.verdict}.**",
        "",
        f"The claim checked: {table.claim}.",
        "",
        f"Scale: {note}. Seeds: {', '.join(map(str, seeds))}.",
        "",
        *([f"Not trained (shown as -): {', '.join(missing)}.", ""] if missing else []),
        outcome.markdown,
        "",
    ]
    if outcome.paper_side_by_side:
        md += ["## The paper's numbers beside ours", "", outcome.paper_side_by_side, ""]
    else:
        md += ["No number of the paper is recorded for this table or figure (a figure's numbers are not in its "
               "text); the verdicts rest on the claims the text makes.", ""]
    if outcome.budget:
        md += ["## Budget: ours against the paper's", "", outcome.budget, ""]
    if outcome.claim_verdicts:
        md += ["## Each claim of the paper about it", ""]
        md += [f"- **{claim.where}**: {claim.claim} **Verdict: {verdict}.**" for claim, verdict in outcome.claim_verdicts]
        md += [""]
    if figure is not None:
        md += ["![figure](figure.png)", ""]
    md += [
        f"Trained on: {'; '.join(machines)}. Training wall time, summed over the runs: {sum(walls) / 60:.1f} min"
        + (" (report only: nothing trained by this invocation)." if report_only else
           f" (this invocation: {session_s / 60:.1f} min, {len(planned) - todo} run(s) reused)."),
        "",
        "Exact configs: `configs/` beside this report (one JSON per run and seed).",
    ]
    atomic_write_text(report_dir / "report.md", "\n".join(md) + "\n")
    atomic_write_text(report_dir / "report.json", json.dumps({
        "table": name, "paper": table.paper, "claim": table.claim, "scale": scale, "scale_note": note, "seeds": seeds,
        "command": command, "verdict": outcome.verdict,
        "claims": [{"where": c.where, "about": c.about, "claim": c.claim, "verdict": v} for c, v in outcome.claim_verdicts], "machine": machines, "wall_time_s": sum(walls),
        "runs": {k: [{kk: vv for kk, vv in s.items() if kk != "history"} for s in v] for k, v in results.items()},
    }, indent=2, default=str) + "\n")
    print(f"\n{outcome.markdown}\n\nVerdict: {outcome.verdict}\n\nwrote {report_dir / 'report.md'}", file=sys.stdout)
    return report_dir
