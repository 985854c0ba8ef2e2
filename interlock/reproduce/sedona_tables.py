"""SEDONA's Tables 2 and 4 (Pyeon et al. 2021) on the decouplings the paper published, without a search.

``interlock reproduce sedona-table2``: on CIFAR-10 at K = 4, backprop, PredSim and DGL (both on
the uniform split) and SEDONA (the cuts and heads of Tables 10-13, discretised as sec. 3.4 says),
each trained over several seeds with appendix E.2's recipe. ``sedona-table4``: SEDONA against
random alpha (random cuts, each with the head the paper learned for that layer) and random beta
(the paper's cuts, random heads). The cpu scale trains VGG-19 only (Table 13 ranks all its
layers); the paper scale the four networks of Table 2 (Table 4: the two ResNets it reports).

Our search's own decouplings are trained the same way by ``python -m interlock.reproduce.sedona``
(one search, then every arm over the seeds).
"""

from __future__ import annotations

import json
import random

from . import papers
from .common import Outcome, Run, Table, combine_verdicts, compare, fmt, ordering_verdict, run_rows
from .papers import side_by_side
from .papers.sedona import DECOUPLINGS, LAYERS, published_decoupling

__all__ = ["TABLES", "ARCHS", "RNG_OFFSET", "random_alpha", "random_beta"]

K = 4  # Tables 2 and 4 are at K = 4
RNG_OFFSET = 9000  # random alpha's draws come from random.Random(RNG_OFFSET), random beta's from RNG_OFFSET + 1
DRAWS = 3  # random decouplings per arm (each trained over the table's seeds); the paper does not say how many
CANDIDATES = ("aux1", "aux2", "aux3", "aux4")
UNLISTED_HEAD = "aux4"  # the head for a layer Tables 10-11 do not list (our choice: the head most listed layers take)

# Our registry models for the paper's networks at CIFAR-10's 0.25x width (sec. 4.1; D.1).
ARCHS = {
    "VGG-19": ("vgg19_bn", ["model.kwargs.width=0.25", "model.kwargs.classifier=mlp"]),
    "ResNet-50": ("resnet50", ["model.kwargs.width=0.25"]),
    "ResNet-101": ("resnet101", ["model.kwargs.width=0.25"]),
    "ResNet-152": ("resnet152", ["model.kwargs.width=0.25", "optim.weight_decay=2e-4"]),  # E.2: 2e-4 for ResNet-152
}
_SLUG = {a: a.lower().replace("-", "") for a in ARCHS}
_METHODS = ("Backprop", "PredSim", "DGL", "SEDONA")
_PREDSIM_FEATURES = 512  # appendix D.2: PredSim's feature dimension on CIFAR-10


def _base(scale: str) -> tuple[list[str], str]:
    base = ["preset=sedona-e2", f"model.components={K}", "data.eval_batch_size=1000", "eval_every=0"]
    if scale == "paper":
        return base + ["log_every=200"], ("appendix E.2: 64,000 iterations of batch 128, 5,000 of the 50,000 training images "
                                          "held out (10%)")
    return base + ["steps=300", "data.val_size=2000", "threads=1", "log_every=25"], (
        "cpu scale: VGG-19 only, 300 iterations of batch 128 instead of 64,000, on the 20,000 CIFAR-10 training images "
        "available here with 2,000 (10%) held out, one thread per run")


def _arch_overrides(arch: str) -> list[str]:
    name, extra = ARCHS[arch]
    return [f"model.name={name}", *extra]


def _with_cuts(arch: str, layer_cuts, heads) -> tuple[str, ...]:
    from ..search.layers import to_model_cuts

    cuts = to_model_cuts(ARCHS[arch][0], layer_cuts)
    return (f"model.partition={json.dumps(list(cuts))}", f"model.heads={json.dumps(list(heads))}",
            'model.head_kw={"width": 0.25}', "strategy=local")  # Aux 1-4 at 0.25x width on CIFAR-10 (D.2)


def _method_run(arch: str, method: str) -> Run:
    over = _arch_overrides(arch)
    if method == "Backprop":
        over += ["strategy=end-to-end", "model.partition=uniform", "model.heads=pool_linear"]  # no head trains a block
    elif method == "PredSim":
        over += ["strategy=local", "model.partition=uniform", "model.heads=predsim", f'model.head_kw={{"max_features": {_PREDSIM_FEATURES}}}']
    elif method == "DGL":
        over += ["strategy=local", "model.partition=uniform", "model.heads=mlp_sr"]
    else:
        over += list(_with_cuts(arch, *published_decoupling(arch, K)))
    return Run(f"{_SLUG[arch]}_{method.lower()}", {"arch": arch, "method": method}, tuple(over))


def _published_head(arch: str, layer: int) -> str:
    return next((f"aux{h}" for l, h in DECOUPLINGS[arch] if l == layer), UNLISTED_HEAD)


def random_alpha(arch: str, draw: int) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """K-1 layer cuts drawn uniformly among layers 1..L-1, each with the paper's head for that layer."""
    rng, seen = random.Random(RNG_OFFSET), {published_decoupling(arch, K)[0]}
    while True:  # draws 0, 1, ... from one generator, each new and none the paper's own cuts
        layers = tuple(sorted(rng.sample(range(1, LAYERS[arch]), K - 1)))
        if layers not in seen:
            seen.add(layers)
            if len(seen) == draw + 2:
                return layers, tuple(_published_head(arch, l) for l in layers)


def random_beta(arch: str, draw: int) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """The paper's K = 4 cuts, each head drawn uniformly from Aux 1-4."""
    cuts, heads = published_decoupling(arch, K)
    rng, seen = random.Random(RNG_OFFSET + 1), {heads}
    while True:  # as random_alpha: distinct draws, none the paper's own heads
        drawn = tuple(rng.choice(CANDIDATES) for _ in cuts)
        if drawn not in seen:
            seen.add(drawn)
            if len(seen) == draw + 2:
                return cuts, drawn


def _random_run(arch: str, kind: str, draw: int) -> Run:
    cuts, heads = (random_alpha if kind == "random alpha" else random_beta)(arch, draw)
    return Run(f"{_SLUG[arch]}_{kind.replace(' ', '_')}_d{draw}", {"arch": arch, "method": kind, "draw": draw},
               (*_arch_overrides(arch), *_with_cuts(arch, cuts, heads)))


def _archs(scale: str, table: str) -> tuple[str, ...]:
    if scale == "cpu":
        return ("VGG-19",)
    return tuple(ARCHS) if table == "Table 2" else ("ResNet-101", "ResNet-152")


def _table2_plan(scale: str):
    base, note = _base(scale)
    return base, [_method_run(a, m) for a in _archs(scale, "Table 2") for m in _METHODS], note + f"; K = {K}"


def _table4_plan(scale: str):
    base, note = _base(scale)
    runs = []
    for a in _archs(scale, "Table 4"):
        runs.append(_method_run(a, "SEDONA"))
        runs += [_random_run(a, kind, d) for kind in ("random alpha", "random beta") for d in range(DRAWS)]
    return base, runs, note + f"; K = {K}; {DRAWS} random draws per arm, each over every seed"


def _errors(results, runs, **labels) -> list[float]:
    """Test error % (100 - accuracy of the final head) of every run matching ``labels``, over draws and seeds."""
    out = []
    for r in runs:
        if all(r.labels.get(k) == v for k, v in labels.items()):
            out += [100 - 100 * s["final"]["test_final_acc"] for s in run_rows(results, r) if s["final"].get("test_final_acc") is not None]
    return out


def _seeds(results, runs) -> int:
    return min((len(run_rows(results, r)) for r in runs if run_rows(results, r)), default=0)


def _budget(note: str, seeds: int, paper_seeds: str) -> str:
    return (f"- ours: {note}; {seeds} seed(s)\n- paper: 64,000 iterations of batch 128 on CIFAR-10's 50,000 training "
            f"images less 10% for validation (appendix E.2); {paper_seeds}")


def _arch_rows(results, runs, archs, methods) -> str:
    lines = ["| network | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for a in archs:
        lines.append(f"| {a} | " + " | ".join(fmt(_errors(results, runs, arch=a, method=m), scale=1) for m in methods) + " |")
    return "\n".join(lines)


def _table2_judge(results, runs, scale) -> Outcome:
    _, _, note = _table2_plan(scale)
    archs = sorted({r.labels["arch"] for r in runs}, key=list(ARCHS).index)
    md = (f"CIFAR-10, K = {K}: test error % of the final head (mean ± std over seeds; lower is better). SEDONA is the "
          f"decoupling the paper published (Tables 10-13), PredSim and DGL the uniform split:\n\n"
          + _arch_rows(results, runs, archs, _METHODS))
    cells = [(papers.value("sedona", "Table 2", f"(a) CIFAR-10 {a}", m), _errors(results, runs, arch=a, method=m))
             for a in ARCHS for m in _METHODS]
    seeds = _seeds(results, runs) or 1

    def worse(method: str) -> list[tuple[str, float, float]]:  # (arch, method's error - backprop's, margin): > 0 holds
        out = []
        for a in archs:
            d, m = compare(_errors(results, runs, arch=a, method=method), _errors(results, runs, arch=a, method="Backprop"), floor=0.5)
            out.append((f"{a} {method}", d, m))
        return out

    sedona = [(w, -d, m) for w, d, m in worse("SEDONA")]
    none = "not measured: there is no Tiny-ImageNet here (only CIFAR-10, MNIST and text)"
    verdicts = [ordering_verdict(worse("DGL") + worse("PredSim"), what="DGL and PredSim have a higher error than backprop",
                                 seeds=seeds, higher="error - backprop's"),
                none,
                ordering_verdict(sedona, what="SEDONA has a lower error than backprop", seeds=seeds, higher="backprop's error - SEDONA's"),
                none]
    measured = [v for v in verdicts if v != none]
    return Outcome(md, combine_verdicts(measured), None, paper_side_by_side=side_by_side(cells),
                   budget=_budget(note, _seeds(results, runs), "the paper does not say how many seeds"),
                   claim_verdicts=list(zip(papers.claims("sedona", "Table 2"), verdicts)))


def _table4_judge(results, runs, scale) -> Outcome:
    _, _, note = _table4_plan(scale)
    archs = sorted({r.labels["arch"] for r in runs}, key=list(ARCHS).index)
    methods = ("SEDONA", "random alpha", "random beta")
    md = (f"CIFAR-10, K = {K}: test error % of the final head (mean ± std over seeds and, for the random arms, over "
          f"{DRAWS} draws; lower is better):\n\n" + _arch_rows(results, runs, archs, methods))
    draws = ["| network | arm | draw | cuts (model.partition) | heads |", "|---|---|---|---|---|"]
    for r in runs:
        if "draw" in r.labels:
            over = dict(o.split("=", 1) for o in r.overrides)
            draws.append(f"| {r.labels['arch']} | {r.labels['method']} | {r.labels['draw']} | {over['model.partition']} | {over['model.heads']} |")
    md += (f"\n\nThe random decouplings (draws 0, 1, ... of random.Random({RNG_OFFSET}) for alpha and random.Random("
           f"{RNG_OFFSET + 1}) for beta, each distinct and none the paper's own):\n\n" + "\n".join(draws))
    cells = [(pv, _errors(results, runs, arch=pv.row, method=pv.column)) for pv in papers.values("sedona", "Table 4")]
    diffs = []
    for a in archs:
        d, m = compare(_errors(results, runs, arch=a, method="random alpha"), _errors(results, runs, arch=a, method="random beta"), floor=0.5)
        diffs.append((a, d, m))
    verdicts = [ordering_verdict(diffs, what="random alpha costs more than random beta", seeds=_seeds(results, runs) or 1,
                                 higher="error(random alpha) - error(random beta)")]
    return Outcome(md, combine_verdicts(verdicts), None, paper_side_by_side=side_by_side(cells),
                   budget=_budget(note, _seeds(results, runs), "the paper gives mean ± spread without the number of seeds"),
                   claim_verdicts=list(zip(papers.claims("sedona", "Table 4"), verdicts)))


_SEEDS = {"cpu": (0, 1, 2), "paper": (0, 1, 2)}

TABLES: tuple[Table, ...] = (
    Table("sedona-table2", "SEDONA's published decoupling against backprop, PredSim and DGL (K = 4, CIFAR-10)",
          "Pyeon et al. 2021, Table 2 (a)",
          "DGL and PredSim are worse than backprop, SEDONA's decoupling better", "sedona-published", _table2_plan,
          _table2_judge, _SEEDS),
    Table("sedona-table4", "SEDONA's published decoupling against random alpha and random beta (K = 4, CIFAR-10)",
          "Pyeon et al. 2021, Table 4", "random cuts (alpha) hurt more than random heads (beta)", "sedona-published",
          _table4_plan, _table4_judge, _SEEDS),
)
