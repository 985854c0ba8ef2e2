"""SEDONA (Pyeon et al. 2021), Tables 2 and 4 in small: does the searched split beat the uniform one?

    python -m interlock.reproduce.sedona --seeds 0,1,2 --root runs/sedona

Per seed, one search (``preset=sedona-search-cpu`` unless ``--search-preset`` says otherwise),
discretised at K components (``config-K<K>.json``, the file ``interlock train`` accepts), then
five trainings with the same recipe and budget (the discretised config's optimiser, schedule,
data and length), four of them with ``Local()``:

    searched        the searched cuts and heads
    uniform_mlp_sr  DGL's split: ``model.partition=uniform``, ``model.heads=mlp_sr`` (SEDONA's baseline)
    random_alpha    random cuts, each with the head the search learned for it (argmax beta at that block)
    random_beta     the searched cuts, heads drawn uniformly from the search's candidates
    searched_2wise  the searched cuts and heads under 2-wise interlocking

The random draws come from ``random.Random(RNG_OFFSET + seed)`` (alpha first, then beta) and are
recorded in the report. Everything is resumable: a finished search or run whose saved config is
the one asked for is reused, an interrupted one continues from its checkpoint. The report
(``<root>/report.md``, ``report.json``, ``configs/``) holds mean ± std of the final test accuracy
per arm, each seed's cuts and heads, the wall times, the machine and a verdict.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..config import load_config
from ..metrics import atomic_write_text
from .tables import compare, fmt, mean_std

__all__ = ["Arm", "ARMS", "RNG_OFFSET", "arms_for", "arm_values", "main", "reproduce_sedona"]

log = logging.getLogger(__name__)

RNG_OFFSET = 9000  # the arms' draws for seed s come from random.Random(RNG_OFFSET + s)

ARMS = {  # name -> (what it is, strategy)
    "searched": ("(a) searched cuts and heads", "local"),
    "uniform_mlp_sr": ("(b) uniform split, MLP-SR heads (DGL)", "local"),
    "random_alpha": ("(c) random cuts, learned heads", "local"),
    "random_beta": ("(d) learned cuts, random heads", "local"),
    "searched_2wise": ("(e) searched, 2-wise interlocking", "2-wise"),
}


@dataclass(frozen=True)
class Arm:
    """One trained configuration: ``cuts`` (None: ``model.partition=uniform``) and ``heads``
    (a list, one per cut, or one head name for all)."""

    name: str
    cuts: tuple[int, ...] | None
    heads: tuple[str, ...] | str
    strategy: str


def _learned_head(result: dict, cut: int) -> str:
    """The head the search learned for a cut before model block ``cut`` (0-based): beta of the SEDONA
    layer that ends there (a ResNet's stem is part of layer 1, so its cuts are one block further)."""
    from ..search.layers import to_layer_cuts

    beta = result["beta"][to_layer_cuts(result["model"], [cut])[0] - 1]
    return result["heads"][max(range(len(beta)), key=lambda m: (beta[m], -m))]  # ties: the first, as torch.argmax


def arms_for(result: dict, components: int, seed: int) -> dict[str, Arm]:
    """The five arms from a search's ``search.json`` contents (with ``decisions[str(K)]``).

    Random cuts are K-1 distinct blocks of 1..L-1 (uniform over the subsets); random heads are
    drawn uniformly, independently, from the search's candidates.
    """
    K = components
    decision = result["decisions"][str(K)]
    cuts, heads = tuple(decision["cuts"]), tuple(decision["heads"])
    L = int(result["blocks"])
    if len(cuts) != K - 1 or len(result["beta"]) != L - 1:
        raise ValueError(f"search result: {len(cuts)} cuts for K={K} and {len(result['beta'])} beta rows for {L} blocks")
    from ..search.layers import to_model_cuts

    rng = random.Random(RNG_OFFSET + seed)
    random_cuts = to_model_cuts(result["model"], sorted(rng.sample(range(1, L), K - 1)))  # L: SEDONA's layers
    random_heads = tuple(rng.choice(result["heads"]) for _ in cuts)
    return {
        "searched": Arm("searched", cuts, heads, "local"),
        "uniform_mlp_sr": Arm("uniform_mlp_sr", None, "mlp_sr", "local"),
        "random_alpha": Arm("random_alpha", random_cuts, tuple(_learned_head(result, c) for c in random_cuts), "local"),
        "random_beta": Arm("random_beta", cuts, random_heads, "local"),
        "searched_2wise": Arm("searched_2wise", cuts, heads, "2-wise"),
    }


def arm_values(base: dict, arm: Arm) -> dict:
    """The discretised config's values (``base``: config-K<K>.json) changed to train ``arm``."""
    values = json.loads(json.dumps(base))
    model = values["model"]
    if arm.cuts is None:
        model["partition"] = "uniform"
        model["heads"] = arm.heads
        if arm.heads not in ("aux1", "aux2", "aux3", "aux4"):
            model["head_kw"] = {}  # the search's head options (width, final_width) are Aux 1-4's
    else:
        model["partition"] = list(arm.cuts)
        model["heads"] = list(arm.heads) if not isinstance(arm.heads, str) else arm.heads
    values["strategy"] = arm.strategy
    return values


# -- the search ------------------------------------------------------------------------------------


def _search(seed: int, folder: Path, components: int, overrides: Sequence[str], quiet: bool) -> tuple[dict, float]:
    """(search.json with decisions, the search's wall time in s), reusing or resuming ``folder``."""
    from ..search.run import run_search

    config = load_config(None, [*overrides, f"seed={seed}", f"run_dir={folder}"])
    saved, result_path = folder / "config.json", folder / "search.json"
    wall_file = folder / "wall_time.json"
    if saved.exists() and json.loads(saved.read_text()) != json.loads(json.dumps(config.to_dict())):
        raise ValueError(f"{folder} holds a search of another config; remove it or choose another --root")
    if result_path.exists():
        result = json.loads(result_path.read_text())
        done = result.get("meta_steps_done") == config.search.meta_steps and result.get("pretrain_steps_done") == config.search.pretrain_steps
        if done and str(components) in result.get("decisions", {}) and (folder / f"config-K{components}.json").exists():
            return result, json.loads(wall_file.read_text())["wall_time_s"] if wall_file.exists() else float("nan")
    resume = (folder / "checkpoints" / "search_state.pt").exists()
    if not quiet:
        print(f"search seed {seed}: {'resuming' if resume else 'starting'} in {folder}", file=sys.stderr)
    before = json.loads(wall_file.read_text())["wall_time_s"] if resume and wall_file.exists() else 0.0
    t0 = time.perf_counter()
    result = run_search(config, components=[components], resume=resume)
    wall = before + time.perf_counter() - t0
    atomic_write_text(wall_file, json.dumps({"wall_time_s": wall, "machine": _machine()}) + "\n")
    return result, wall


def _machine() -> str:
    from . import _machine as machine

    return machine()


# -- the whole table -------------------------------------------------------------------------------


def reproduce_sedona(*, seeds: Sequence[int], root: str | Path, components: int = 4, search_overrides: Sequence[str] = (),
                     train_overrides: Sequence[str] = (), threads: int = 0, report_only: bool = False, rerun: bool = False,
                     quiet: bool = False, stream=sys.stderr) -> Path:
    """Search, train the five arms per seed, write ``<root>/report.md``; returns the report's path.

    ``threads``: torch threads for the searches (this process) and every run (``threads=N``); 0 leaves PyTorch's default.
    ``rerun``: a run directory holding another config is moved aside and trained anew (otherwise an error).
    """
    from ..cli import run_one
    from ..runs import RunState, run_state
    from . import _add_wall_time, _summary

    root = Path(root)
    (root / "configs").mkdir(parents=True, exist_ok=True)
    if threads:
        import torch

        torch.set_num_threads(threads)  # the searches run here (their configs leave threads unset)
        train_overrides = [f"threads={threads}", *train_overrides]
    t0 = time.perf_counter()
    per_seed: dict[int, dict] = {}
    for seed in seeds:
        folder = root / "search" / f"seed{seed}"
        if report_only:
            path = folder / "search.json"
            if (not path.exists() or str(components) not in json.loads(path.read_text()).get("decisions", {})
                    or not (folder / f"config-K{components}.json").exists()):
                continue  # no finished search: its runs show as missing
            result = json.loads(path.read_text())
            wall_file = folder / "wall_time.json"
            search_s = json.loads(wall_file.read_text())["wall_time_s"] if wall_file.exists() else float("nan")
        else:
            result, search_s = _search(seed, folder, components, search_overrides, quiet)
        base = json.loads((folder / f"config-K{components}.json").read_text())
        arms = arms_for(result, components, seed)
        per_seed[seed] = {"search_s": search_s, "arms": arms, "runs": {}, "local_weight": result["local_weight"], "heads": result["heads"],
                          "head_probs": result["head_probs"], "blocks": result["blocks"]}
        for name, arm in arms.items():
            run_dir = root / "train" / name / f"seed{seed}"
            path = root / "configs" / f"{name}_seed{seed}.json"
            values = arm_values(base, arm)
            values.update(seed=seed, run_dir=str(run_dir))
            atomic_write_text(path, json.dumps(values, indent=2) + "\n")
            cfg = load_config(path, list(train_overrides))
            atomic_write_text(path, json.dumps(cfg.to_dict(), indent=2) + "\n")  # the exact config, overrides applied
            state = run_state(run_dir, cfg, rerun=rerun and not report_only)
            if state != RunState.FINISHED and not report_only:
                start = time.perf_counter()
                run_one(cfg, resume=state == RunState.PARTIAL, quiet=quiet, label=f"seed {seed} {name}")
                _add_wall_time(run_dir, time.perf_counter() - start, resumed=state == RunState.PARTIAL)
            if (run_dir / "metrics.jsonl").exists():
                summary = _summary(run_dir)
                per_seed[seed]["runs"][name] = {"acc": summary["final"].get("test_final_acc"), "wall_time_s": summary["wall_time_s"],
                                                "machine": summary["machine"], "cuts": list(cfg.model.partition) if not isinstance(cfg.model.partition, str) else None,
                                                "heads": cfg.model.heads, "steps": cfg.steps, "epochs": summary["final"].get("epoch"),
                                                "model": f"{cfg.model.name} {json.dumps(cfg.model.kwargs)}", "batch_size": cfg.data.batch_size}
        if not quiet:
            accs = {n: r["acc"] for n, r in per_seed[seed]["runs"].items()}
            print(f"seed {seed}: " + ", ".join(f"{n} {100 * a:.2f}" for n, a in accs.items() if a is not None), file=stream)
    session_s = time.perf_counter() - t0
    return _write_report(root, per_seed, seeds=list(seeds), components=components, search_overrides=search_overrides,
                         train_overrides=train_overrides, threads=threads, session_s=session_s, report_only=report_only)


def verdict(accs: dict[str, list[float]]) -> str:
    """Searched vs uniform (SEDONA's claim), with a margin of two standard errors of the difference and at least 0.5 points."""
    a, b = [100 * v for v in accs.get("searched", [])], [100 * v for v in accs.get("uniform_mlp_sr", [])]
    if not a or not b:
        return "inconclusive: the searched or the uniform arm has no finished run"
    d, m = compare(a, b, floor=0.5)
    n = min(len(a), len(b))
    caveat = "" if n > 1 else " (one seed: no spread measured, margin is the floor)"
    shown = f"searched - uniform {d:+.2f} points, margin {m:.2f}"
    if d > m:
        return f"confirmed: the searched split beats DGL's uniform split with MLP-SR heads ({shown}){caveat}"
    if d < -m:
        return f"not confirmed: the uniform split with MLP-SR heads beats the searched split ({shown}){caveat}"
    return f"not confirmed at this scale: the searched and uniform splits are within the margin ({shown}){caveat}"


def _write_report(root: Path, per_seed: dict, *, seeds, components, search_overrides, train_overrides, threads, session_s,
                  report_only) -> Path:
    accs = {name: [s["runs"][name]["acc"] for s in per_seed.values() if s["runs"].get(name, {}).get("acc") is not None] for name in ARMS}
    lines = ["| arm | strategy | test acc % (mean ± std) | seeds |", "|---|---|---|---|"]
    for name, (what, strategy) in ARMS.items():
        lines.append(f"| {what} | {strategy} | {fmt(accs[name])} | {len(accs[name])} |")
    diffs = []
    for other in ("uniform_mlp_sr", "random_alpha", "random_beta", "searched_2wise"):
        a, b = [100 * v for v in accs["searched"]], [100 * v for v in accs[other]]
        if a and b:
            d, m = compare(a, b, floor=0.5)
            diffs.append(f"| searched - {other} | {d:+.2f} | {m:.2f} | {'yes' if abs(d) > m else 'no'} |")
    seed_lines = ["| seed | arm | cuts (first block of components 2..K) | heads | test acc % | train wall s |", "|---|---|---|---|---|---|"]
    for seed, s in per_seed.items():
        for name, arm in s["arms"].items():
            r = s["runs"].get(name)
            cuts = "uniform" if arm.cuts is None else str(list(arm.cuts))
            heads = arm.heads if isinstance(arm.heads, str) else ", ".join(arm.heads)
            acc = "-" if r is None or r["acc"] is None else f"{100 * r['acc']:.2f}"
            wall = "-" if r is None or r["wall_time_s"] is None else f"{r['wall_time_s']:.0f}"
            seed_lines.append(f"| {seed} | {name} | {cuts} | {heads} | {acc} | {wall} |")
    search_lines = ["| seed | search wall s | softmax(alpha_l)_1 per block l = 1..L-1 | argmax beta per block |", "|---|---|---|---|"]
    for seed, s in per_seed.items():
        lw = ", ".join(f"{v:.3f}" for v in s["local_weight"])
        am = ", ".join(s["heads"][max(range(len(p)), key=lambda m: (p[m], -m))] for p in s["head_probs"])
        search_lines.append(f"| {seed} | {s['search_s']:.0f} | {lw} | {am} |")
    search_walls = [s["search_s"] for s in per_seed.values() if s["search_s"] == s["search_s"]]
    train_walls = [r["wall_time_s"] for s in per_seed.values() for r in s["runs"].values() if r["wall_time_s"] is not None]
    machines = sorted({r["machine"] for s in per_seed.values() for r in s["runs"].values() if r.get("machine")}) or [_machine()]
    any_run = next((r for s in per_seed.values() for r in s["runs"].values()), None)
    command = f"python -m interlock.reproduce.sedona --seeds {','.join(map(str, seeds))} --root {root}"
    preset = next((o.split("=", 1)[1] for o in search_overrides if o.startswith("preset=")), "sedona-search-cpu")
    command += f" --search-preset {preset}" if preset != "sedona-search-cpu" else ""
    command += "".join(f" --search-set {o}" for o in search_overrides if not o.startswith("preset="))
    command += f" --threads {threads}" if threads else ""
    command += "".join(f" --set {o}" for o in train_overrides if not (threads and o == f"threads={threads}"))
    text = verdict(accs)
    md = [
        "# SEDONA, small: searched split vs uniform split, random alpha, random beta, 2-wise",
        "",
        "Reproduces Pyeon et al. 2021 (SEDONA), Tables 2 and 4, in small. Command: `" + command + "`",
        "",
        f"**Verdict: {text}.**",
        "",
        "The claim checked: the searched (alpha, beta) beats DGL's uniform split with MLP-SR-aux heads when every "
        "component trains with its local loss (Local()), and both learned parts matter (random alpha and random beta "
        "ablations; SEDONA Table 4).",
        "",
        f"Scale: search `{' '.join(search_overrides)}` per seed, discretised at K = {components}; every arm then trains "
        + (f"{any_run['steps']} steps of batch {any_run['batch_size']} ({any_run['epochs']:.2f} epochs; model {any_run['model']}, "
           f"L = {next(iter(per_seed.values()))['blocks']} blocks)" if any_run and any_run.get("epochs") else "? steps")
        + " with the discretised config's recipe"
        + (f" and `{' '.join(train_overrides)}`" if train_overrides else "") + f". Seeds: {', '.join(map(str, seeds))}. "
        f"Random draws: random.Random({RNG_OFFSET} + seed), K-1 cuts first, then one head per cut.",
        "",
        "Final test accuracy (the last component's classifier), %:",
        "",
        *lines,
        "",
        "Differences (points; margin = two standard errors of the difference, at least 0.5):",
        "",
        "| comparison | difference | margin | beyond margin |",
        "|---|---|---|---|",
        *diffs,
        "",
        "Per seed:",
        "",
        *seed_lines,
        "",
        "The searches:",
        "",
        *search_lines,
        "",
        f"Machine: {'; '.join(machines)}. Wall time: searches {sum(search_walls) / 60:.1f} min, trainings "
        f"{sum(train_walls) / 60:.1f} min (summed over runs)"
        + (" (report only)." if report_only else f"; this invocation {session_s / 60:.1f} min."),
        "",
        "Exact configs: `configs/` beside this report (one JSON per arm and seed; each loads with `interlock train CONFIG`).",
    ]
    path = root / "report.md"
    atomic_write_text(path, "\n".join(md) + "\n")
    atomic_write_text(root / "report.json", json.dumps({
        "command": command, "verdict": text, "seeds": list(seeds), "components": components, "rng": f"random.Random({RNG_OFFSET} + seed)",
        "search_overrides": list(search_overrides), "train_overrides": list(train_overrides), "machine": machines,
        "search_wall_time_s": sum(search_walls), "train_wall_time_s": sum(train_walls),
        "accuracy": {k: {"values": v, "mean": mean_std(v)[0], "std": mean_std(v)[1]} for k, v in accs.items()},
        "seeds_detail": {str(seed): {"search_wall_time_s": s["search_s"], "local_weight": s["local_weight"], "head_probs": s["head_probs"],
                                     "arms": {n: {"cuts": None if a.cuts is None else list(a.cuts), "heads": a.heads, "strategy": a.strategy,
                                                  **{k: v for k, v in s["runs"].get(n, {}).items() if k in ("acc", "wall_time_s")}}
                                              for n, a in s["arms"].items()}}
                         for seed, s in per_seed.items()},
    }, indent=2, default=str) + "\n")
    print("\n".join(lines) + f"\n\nVerdict: {text}\n\nwrote {path}", file=sys.stdout)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m interlock.reproduce.sedona", description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--root", default="runs/sedona", help="folder of the searches, runs and report")
    p.add_argument("--components", type=int, default=4, help="K (default 4)")
    p.add_argument("--search-preset", default="sedona-search-cpu", help="the search's preset (sedona-search: the paper's values)")
    p.add_argument("--search-set", action="append", default=[], metavar="KEY=VALUE", help="override of the search's config (repeat)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="train_set",
                   help="override of every training run, e.g. steps=1000 or data.train_limit=10000 (repeat)")
    p.add_argument("--report-only", action="store_true", help="search and train nothing; report on what has finished")
    p.add_argument("--rerun", action="store_true", help="move aside runs of another config (e.g. other --set) and train anew")
    p.add_argument("--search-only", action="store_true", help="run (or reuse) the searches, train nothing, write no report")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads for the searches and every run (0: PyTorch's default); 1 on a shared CPU")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if args.search_only:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        for seed in seeds:
            _search(seed, Path(args.root) / "search" / f"seed{seed}", args.components,
                    [f"preset={args.search_preset}", *args.search_set], args.quiet)
        return 0
    reproduce_sedona(seeds=seeds, root=args.root, components=args.components,
                     search_overrides=[f"preset={args.search_preset}", *args.search_set], train_overrides=args.train_set, threads=args.threads,
                     report_only=args.report_only, rerun=args.rerun, quiet=args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
