"""SEDONA (Pyeon et al. 2021), Tables 2 and 4 and Fig. 4 in small, on our own search: one search, then every arm over the seeds.

    python -m interlock.reproduce.sedona --seeds 0,1,2 --root runs/sedona

One search (``preset=sedona-search-cpu`` unless ``--search-preset`` says otherwise; its seed is
``--search-seed``, by default the first training seed), discretised at K components
(``config-K<K>.json``, the file ``interlock train`` accepts) and, where the network has more than 8
layers, at K = 8 for Fig. 4; then, as the paper trains one found decoupling over several seeds,
every arm below for every training seed, with the same recipe and budget (the discretised
config's optimiser, schedule, data and length):

    searched        the searched cuts and heads (SEDONA)
    uniform_mlp_sr  DGL's split: ``model.partition=uniform``, ``model.heads=mlp_sr``
    random_alpha    random cuts, each with the head the search learned for it (argmax beta at that layer)
    random_beta     the searched cuts, heads drawn uniformly from the search's candidates
    searched_2wise  the searched cuts and heads under 2-wise interlocking (ours, not the paper's)
    backprop        end-to-end backprop (the auxiliary heads train on their own loss and touch no block)
    predsim         PredSim on the uniform split (its feature limit 512, appendix D.2 for CIFAR-10)

    continuous      the searched (alpha, beta) undiscretised: every layer trained with Eq. 4's mix of its
                    mixed heads' loss and the gradient from above (Table 6; ``search.continuous``)

The random draws for training seed s come from ``random.Random(RNG_OFFSET + s)`` (alpha first, then
beta) and are recorded in the report. Everything is
resumable: a finished search or run whose saved config is the one asked for is reused, an
interrupted one continues from its checkpoint. The report (``<root>/report.md``, ``report.json``,
``configs/``, ``fig4.png``) holds mean ± std of the final test accuracy per arm, the paper's
numbers beside ours where the searched network is the paper's, each seed's cuts and heads, the
search's softmax(alpha)_1 per layer with the verdicts on Fig. 4's claims, the wall times, the
machine and a verdict. ``interlock reproduce sedona-table2`` / ``sedona-table4`` train the
decouplings the paper published instead (no search).
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

from ..training.config import load_config
from ..training.metrics import atomic_write_text
from .common import compare, fmt, mean_std

__all__ = ["Arm", "ARMS", "RNG_OFFSET", "arms_for", "arm_values", "main", "reproduce_sedona"]

log = logging.getLogger(__name__)

RNG_OFFSET = 9000  # the arms' draws for seed s come from random.Random(RNG_OFFSET + s)

ARMS = {  # name -> (what it is, strategy)
    "searched": ("(a) searched cuts and heads (SEDONA)", "local"),
    "uniform_mlp_sr": ("(b) uniform split, MLP-SR heads (DGL)", "local"),
    "random_alpha": ("(c) random cuts, learned heads", "local"),
    "random_beta": ("(d) learned cuts, random heads", "local"),
    "searched_2wise": ("(e) searched, 2-wise interlocking", "2-wise"),
    "backprop": ("(f) end-to-end backprop", "end-to-end"),
    "predsim": ("(g) uniform split, PredSim heads", "local"),
}
PREDSIM_FEATURES = 512  # SEDONA appendix D.2: PredSim's feature dimension on CIFAR-10
_PAPER_ARM = {"backprop": "Backprop", "predsim": "PredSim", "uniform_mlp_sr": "DGL", "searched": "SEDONA"}  # Table 2's columns
_PAPER_T4 = {"searched": "SEDONA", "random_alpha": "random alpha", "random_beta": "random beta"}


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
    """The arms from a search's ``search.json`` contents (with ``decisions[str(K)]``).

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
        "backprop": Arm("backprop", None, "pool_linear", "end-to-end"),
        "predsim": Arm("predsim", None, "predsim", "local"),
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
        if arm.heads == "predsim":
            model["head_kw"] = {"max_features": PREDSIM_FEATURES}
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
    result = run_search(config, components=_decided(config, components), resume=resume)
    wall = before + time.perf_counter() - t0
    atomic_write_text(wall_file, json.dumps({"wall_time_s": wall, "machine": _machine()}) + "\n")
    return result, wall


def _decided(config, components: int) -> list[int]:
    """The K to discretise at: the table's, and K = 8 for Fig. 4 where the network has more than 8 layers."""
    from ..models import build
    from ..search.layers import sedona_layers

    L = len(sedona_layers(config.model.name, build(config.model.name, components=1, **config.model.kwargs).blocks))
    return sorted({components, *([FIG4_SECOND_K] if L > FIG4_SECOND_K else [])})


FIG4_SECOND_K = 8  # Fig. 4 marks the cuts at K = 4 and those K = 8 adds


def _machine() -> str:
    from . import _machine as machine

    return machine()


# -- the whole table -------------------------------------------------------------------------------


def reproduce_sedona(*, seeds: Sequence[int], root: str | Path, components: int = 4, search_overrides: Sequence[str] = (),
                     train_overrides: Sequence[str] = (), threads: int = 0, report_only: bool = False, rerun: bool = False,
                     quiet: bool = False, search_seed: int | None = None, continuous: bool = True, stream=sys.stderr) -> Path:
    """One search (seed ``search_seed``, default ``seeds[0]``), every arm per training seed, ``<root>/report.md``; returns its path.

    ``threads``: torch threads for the searches (this process) and every run (``threads=N``); 0 leaves PyTorch's default.
    ``rerun``: a run directory holding another config is moved aside and trained anew (otherwise an error).
    ``continuous``: also train the continuous model (Table 6) per seed.
    """
    from ..app.runner import run_one
    from ..training.runs import RunState, run_state
    from . import _add_wall_time, _summary

    root = Path(root)
    (root / "configs").mkdir(parents=True, exist_ok=True)
    if threads:
        import torch

        torch.set_num_threads(threads)  # the searches run here (their configs leave threads unset)
        train_overrides = [f"threads={threads}", *train_overrides]
    t0 = time.perf_counter()
    per_seed: dict[int, dict] = {}
    search_seed = seeds[0] if search_seed is None else search_seed
    folder = root / "search" / f"seed{search_seed}"  # one search; every training seed trains what it found
    path = folder / "search.json"
    if report_only:
        found = (path.exists() and str(components) in json.loads(path.read_text()).get("decisions", {})
                 and (folder / f"config-K{components}.json").exists())
        result = json.loads(path.read_text()) if found else None  # no finished search: no arms to report
        wall_file = folder / "wall_time.json"
        search_s = json.loads(wall_file.read_text())["wall_time_s"] if found and wall_file.exists() else float("nan")
    else:
        result, search_s = _search(search_seed, folder, components, search_overrides, quiet)
    for seed in seeds:
        if result is None:
            continue
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
            state = run_state(run_dir, cfg, rerun=rerun and not report_only, where_option="--root")
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
        if continuous:
            _continuous_arm(root, base, result, seed, train_overrides, per_seed[seed], report_only=report_only, rerun=rerun)
        if not quiet:
            accs = {n: r["acc"] for n, r in per_seed[seed]["runs"].items()}
            print(f"seed {seed}: " + ", ".join(f"{n} {100 * a:.2f}" for n, a in accs.items() if a is not None), file=stream)
    session_s = time.perf_counter() - t0
    return _write_report(root, per_seed, seeds=list(seeds), components=components, search_overrides=search_overrides,
                         train_overrides=train_overrides, threads=threads, session_s=session_s, report_only=report_only,
                         search_seed=search_seed, result=result, search_s=search_s)


CONTINUOUS = ("(h) the searched (alpha, beta) undiscretised (Table 6)", "Eq. 4")


def _continuous_arm(root: Path, base: dict, result: dict, seed: int, train_overrides, record: dict, *, report_only: bool,
                    rerun: bool) -> None:
    """Train (or reuse) the continuous model for ``seed`` into ``root/train/continuous/seed<seed>/result.json``."""
    from ..search.continuous import train_continuous

    folder = root / "train" / "continuous" / f"seed{seed}"
    path = root / "configs" / f"continuous_seed{seed}.json"
    values = json.loads(json.dumps(base))
    values.update(seed=seed, run_dir=str(folder))
    atomic_write_text(path, json.dumps(values, indent=2) + "\n")
    cfg = load_config(path, list(train_overrides))
    atomic_write_text(path, json.dumps(cfg.to_dict(), indent=2) + "\n")
    done = folder / "result.json"
    out = json.loads(done.read_text()) if done.exists() else None
    if out is not None and out["config"] != json.loads(json.dumps(cfg.to_dict())):
        if not rerun:
            raise ValueError(f"{done} holds a continuous run of another config; pass --rerun to train it anew")
        out = None
    if out is None and not report_only:
        folder.mkdir(parents=True, exist_ok=True)
        out = train_continuous(cfg, result["alpha"], result["beta"], result["heads"], result_path=done)
        out["machine"] = _machine()
        atomic_write_text(done, json.dumps(out, indent=2) + "\n")
    if out is not None:
        record["runs"]["continuous"] = {"acc": out["test_final_acc"], "wall_time_s": out["wall_time_s"],
                                        "machine": out.get("machine", ""), "steps": out["steps"]}


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


_CONFIDENT = 0.1  # Fig. 4: how much more confident (mean |w - 0.5|) lower layers must be than upper ones (our threshold)
_NEAR_HALF = 0.1  # ... and how close to 0.5 the upper layers' mean must be (our threshold)


def fig4_verdicts(local_weight: Sequence[float]) -> list[str]:
    """A verdict on each of Fig. 4's claims (papers.claims("sedona", "Fig. 4"), in order) from one search's
    softmax(alpha_l)_1, l = 1..L-1: lower and upper are the first and last thirds of the layers."""
    w = list(local_weight)
    n = max(1, len(w) // 3)
    if len(w) < 3:
        return ["inconclusive: fewer than 3 layers to compare"] * 3
    conf = [abs(v - 0.5) for v in w]
    low, up = sum(conf[:n]) / n, sum(conf[-n:]) / n
    d = low - up
    first = sum(w[:min(3, n)]) / min(3, n)
    rest = sum(w[min(3, n):]) / (len(w) - min(3, n))
    near = sum(abs(v - 0.5) for v in w[-n:]) / n
    shown = f"lower {n} layers' mean |w - 0.5| {low:.3f}, upper {n} layers' {up:.3f}"
    return [
        (f"confirmed: the lower layers are more confident ({shown})" if d > _CONFIDENT else
         f"not confirmed: the lower layers are not more confident ({shown})" if d <= 0 else
         f"inconclusive: the lower layers are more confident by less than {_CONFIDENT:g}, our threshold ({shown})"),
        (f"{'confirmed' if first < rest else 'not confirmed'}: the first {min(3, n)} layers' mean softmax(alpha)_1 "
         f"{first:.3f} against {rest:.3f} over the others"),
        (f"{'confirmed' if near < _NEAR_HALF else 'not confirmed'}: the upper {n} layers' mean |w - 0.5| is {near:.3f} "
         f"(close: under {_NEAR_HALF:g}, our threshold)"),
    ]


def _paper_cells(model: str, accs: dict[str, list[float]]) -> str:
    """The paper's Table 2 (a) and Table 4 cells beside ours (error % = 100 - accuracy), where our network is the paper's."""
    from . import papers

    arch = {"vgg19_bn": "VGG-19", "resnet50": "ResNet-50", "resnet101": "ResNet-101", "resnet152": "ResNet-152"}.get(model)
    if arch is None:
        return (f"The searched network ({model}) is none of the paper's (VGG-19, ResNet-50/101/152): no paper cell to set "
                "beside ours. `--search-preset sedona-search` searches the paper's 0.25x VGG-19.")
    err = {k: [100 - 100 * v for v in vs] for k, vs in accs.items()}
    cells = [(papers.value("sedona", "Table 2", f"(a) CIFAR-10 {arch}", col), err.get(arm, [])) for arm, col in _PAPER_ARM.items()]
    cells += [(pv, err.get(arm, [])) for arm, col in _PAPER_T4.items() for pv in papers.values("sedona", "Table 4")
              if pv.row == arch and pv.column == col]
    cells += [(papers.value("sedona", "Table 6", arch, col), err.get(arm, []))
              for arm, col in (("backprop", "Backprop"), ("continuous", "SEDONA (Cont.)"), ("searched", "SEDONA (K = 4)"))]
    return papers.side_by_side(cells, ours_label="ours (test error %)")


def _write_report(root: Path, per_seed: dict, *, seeds, components, search_overrides, train_overrides, threads, session_s,
                  report_only, search_seed, result, search_s) -> Path:
    from . import papers

    names = [*ARMS, "continuous"]
    accs = {name: [s["runs"][name]["acc"] for s in per_seed.values() if s["runs"].get(name, {}).get("acc") is not None] for name in names}
    lines = ["| arm | strategy | test acc % (mean ± std) | seeds |", "|---|---|---|---|"]
    for name, (what, strategy) in [*ARMS.items(), ("continuous", CONTINUOUS)]:
        lines.append(f"| {what} | {strategy} | {fmt(accs[name])} | {len(accs[name])} |")
    diffs = []
    for other in ("uniform_mlp_sr", "random_alpha", "random_beta", "searched_2wise", "backprop", "predsim", "continuous"):
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
        c = s["runs"].get("continuous")
        if c is not None:
            seed_lines.append(f"| {seed} | continuous | none: every layer mixes (Eq. 4) | softmax(beta) mixtures | "
                              f"{100 * c['acc']:.2f} | {c['wall_time_s']:.0f} |")
    search_lines, fig4 = ["No finished search."], []
    if result is not None:
        lw = ", ".join(f"{v:.3f}" for v in result["local_weight"])
        am = ", ".join(result["heads"][max(range(len(p)), key=lambda m: (p[m], -m))] for p in result["head_probs"])
        decided = "; ".join(f"K = {K}: cuts {d['cuts']}, heads {', '.join(d['heads'])}" for K, d in sorted(
            result.get("decisions", {}).items(), key=lambda kv: int(kv[0])))
        search_lines = ["| search seed | search wall s | L (SEDONA layers) | softmax(alpha_l)_1, l = 1..L-1 | argmax beta per layer | decisions |",
                        "|---|---|---|---|---|---|",
                        f"| {search_seed} | {search_s:.0f} | {result['blocks']} | {lw} | {am} | {decided} |"]
        plot = root / "search" / f"seed{search_seed}" / "search.png"
        if plot.exists():
            import shutil

            shutil.copyfile(plot, root / "fig4.png")
        fig4 = list(zip(papers.claims("sedona", "Fig. 4"), fig4_verdicts(result["local_weight"])))
    train_walls = [r["wall_time_s"] for s in per_seed.values() for r in s["runs"].values() if r["wall_time_s"] is not None]
    machines = sorted({r["machine"] for s in per_seed.values() for r in s["runs"].values() if r.get("machine")}) or [_machine()]
    any_run = next((r for s in per_seed.values() for r in s["runs"].values()), None)
    command = f"python -m interlock.reproduce.sedona --seeds {','.join(map(str, seeds))} --root {root}"
    command += f" --search-seed {search_seed}" if search_seed != seeds[0] else ""
    preset = next((o.split("=", 1)[1] for o in search_overrides if o.startswith("preset=")), "sedona-search-cpu")
    command += f" --search-preset {preset}" if preset != "sedona-search-cpu" else ""
    command += "".join(f" --search-set {o}" for o in search_overrides if not o.startswith("preset="))
    command += f" --threads {threads}" if threads else ""
    command += "".join(f" --set {o}" for o in train_overrides if not (threads and o == f"threads={threads}"))
    text = verdict(accs)
    model = result["model"] if result is not None else "?"
    md = [
        "# SEDONA, small: one search, then SEDONA, DGL, PredSim, backprop, random alpha, random beta, 2-wise",
        "",
        "Reproduces Pyeon et al. 2021 (SEDONA), Tables 2 and 4 and Fig. 4, in small. Command: `" + command + "`",
        "",
        f"**Verdict: {text}.**",
        "",
        "The claim checked: the searched (alpha, beta) beats DGL's uniform split with MLP-SR-aux heads when every "
        "component trains with its local loss (Local()), and both learned parts matter (random alpha and random beta "
        "ablations; SEDONA Table 4).",
        "",
        f"Scale: one search `{' '.join(search_overrides)}` (seed {search_seed}), discretised at K = {components}; every arm then "
        "trains, for each training seed, "
        + (f"{any_run['steps']} steps of batch {any_run['batch_size']} ({any_run['epochs']:.2f} epochs; model {any_run['model']}, "
           f"L = {result['blocks']} layers)" if any_run and any_run.get("epochs") else "? steps")
        + " with the discretised config's recipe"
        + (f" and `{' '.join(train_overrides)}`" if train_overrides else "") + f". Training seeds: {', '.join(map(str, seeds))}. "
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
        "## The paper's numbers beside ours",
        "",
        _paper_cells(model, accs),
        "",
        "## Budget: ours against the paper's",
        "",
        f"- ours: one search of `{' '.join(search_overrides)}`; "
        + (f"{any_run['steps']} training steps of batch {any_run['batch_size']} per arm" if any_run else "no finished training")
        + f"; {len(seeds)} training seed(s)",
        "- paper: one search per network (40,000 pretraining and 2,000 meta iterations, appendix E.1), then 64,000 "
        "training iterations of batch 128 on CIFAR-10 (E.2); seeds not given for Table 2",
        "",
        "## Fig. 4: softmax(alpha_l)_1 per layer",
        "",
        "![the search's softmax(alpha)_1 per layer, the K = 4 cuts in red and those K = 8 adds in green](fig4.png)"
        if (root / "fig4.png").exists() else "No search plot.",
        "",
        *[f"- **{c.where}**: {c.claim} **Verdict: {v}.**" for c, v in fig4],
        "",
        "Per seed:",
        "",
        *seed_lines,
        "",
        "The search:",
        "",
        *search_lines,
        "",
        f"Machine: {'; '.join(machines)}. Wall time: search {(search_s if search_s == search_s else 0) / 60:.1f} min, trainings "
        f"{sum(train_walls) / 60:.1f} min (summed over runs)"
        + (" (report only)." if report_only else f"; this invocation {session_s / 60:.1f} min."),
        "",
        "Exact configs: `configs/` beside this report (one JSON per arm and seed; each loads with `interlock train CONFIG`).",
    ]
    path = root / "report.md"
    atomic_write_text(path, "\n".join(md) + "\n")
    atomic_write_text(root / "report.json", json.dumps({
        "command": command, "verdict": text, "seeds": list(seeds), "search_seed": search_seed, "components": components,
        "rng": f"random.Random({RNG_OFFSET} + seed)", "search_overrides": list(search_overrides),
        "train_overrides": list(train_overrides), "machine": machines,
        "search_wall_time_s": search_s, "train_wall_time_s": sum(train_walls),
        "search": None if result is None else {"local_weight": result["local_weight"], "head_probs": result["head_probs"],
                                               "decisions": result.get("decisions", {})},
        "fig4": [{"where": c.where, "claim": c.claim, "verdict": v} for c, v in fig4],
        "accuracy": {k: {"values": v, "mean": mean_std(v)[0], "std": mean_std(v)[1]} for k, v in accs.items()},
        "seeds_detail": {str(seed): {"arms": {n: {"cuts": None if a.cuts is None else list(a.cuts), "heads": a.heads, "strategy": a.strategy,
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
    p.add_argument("--search-seed", type=int, default=None, help="the one search's seed (default: the first of --seeds)")
    p.add_argument("--search-set", action="append", default=[], metavar="KEY=VALUE", help="override of the search's config (repeat)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="train_set",
                   help="override of every training run, e.g. steps=1000 or data.train_limit=10000 (repeat)")
    p.add_argument("--report-only", action="store_true", help="search and train nothing; report on what has finished")
    p.add_argument("--rerun", action="store_true", help="move aside runs of another config (e.g. other --set) and train anew")
    p.add_argument("--search-only", action="store_true", help="run (or reuse) the search, train nothing, write no report")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads for the searches and every run (0: PyTorch's default); 1 on a shared CPU")
    p.add_argument("--no-continuous", action="store_true", help="skip the continuous model (Table 6; it costs about a search's pretraining)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if args.search_only:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        seed = seeds[0] if args.search_seed is None else args.search_seed
        _search(seed, Path(args.root) / "search" / f"seed{seed}", args.components,
                [f"preset={args.search_preset}", *args.search_set], args.quiet)
        return 0
    reproduce_sedona(seeds=seeds, root=args.root, components=args.components,
                     search_overrides=[f"preset={args.search_preset}", *args.search_set], train_overrides=args.train_set, threads=args.threads,
                     report_only=args.report_only, rerun=args.rerun, quiet=args.quiet, search_seed=args.search_seed,
                     continuous=not args.no_continuous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
