"""Decoupled Greedy Learning's tables (Belilovsky et al. 2020): Table 1, Figs. 3, 5 and 6."""

from __future__ import annotations

import math
import statistics

from .common import Outcome, Run, Table, compare, finals, fmt, mean_std, ordering_verdict, pct, run_rows, select_run, tolerance_verdict

# -- DGL Table 1: auxiliary heads, accuracy and FLOPs ---------------------------------------------------


def _dgl_plan(scale: str):
    if scale == "paper":
        extra, note = ["preset=dgl-4.1", "model.components=6"], "the paper's setting (section 4.1): 50 epochs, one layer per component"
    else:
        extra = ["preset=dgl-4.1", "model.components=6", "epochs=1", "model.kwargs.width=0.25"]
        note = "cpu scale: the CNN at 0.25x width (32 filters first, not 128), 1 epoch instead of 50"
    base = extra + ["strategy=local", "data.eval_batch_size=1000", "log_every=26", "eval_every=0"]
    runs = [Run(f"head_{h}", {"head": h}, (f"model.heads={h}",)) for h in ("cnn", "mlp", "mlp_sr")]
    return base, runs, note


def _dgl_flops(run: Run, base: list[str]) -> tuple[float, float]:
    """(aux heads' FLOPs as a fraction of the network's, mean per-component head/component ratio)."""
    from .. import heads, models
    from ..config import load_config

    cfg = load_config(None, [*base, *run.overrides, "steps=1", "epochs=0"])
    kw = {"num_classes": 10, "in_channels": 3, "image_size": 32, **cfg.model.kwargs}
    net = models.create(cfg.model.name, components=cfg.model.components, heads=cfg.model.heads, **kw)
    rows = heads.cost(net, models.build(cfg.model.name, components=cfg.model.components, **kw).sample_input)
    aux = rows[:-1]
    total = sum(r["component_flops"] for r in rows)
    return sum(r["head_flops"] for r in aux) / total, statistics.mean(r["head_flops_ratio"] for r in aux)


def _dgl_judge(results, runs, scale) -> Outcome:
    base, _, _ = _dgl_plan(scale)
    names = {"cnn": "CNN-aux", "mlp": "MLP-aux", "mlp_sr": "MLP-SR-aux"}
    lines = ["| head | final layer acc % | best layer acc % | aux FLOPs / network FLOPs | mean head/layer FLOPs |", "|---|---|---|---|---|"]
    acc, flops = {}, {}
    for run in runs:
        h = run.labels["head"]
        total, per = _dgl_flops(run, base)
        flops[h] = total
        rs = results.get(run.key, [])
        best = [max(v for k, v in r["final"].items() if k.startswith("test_acc_") and v is not None) for r in rs]
        acc[h] = finals(results, run, "test_final_acc")
        lines.append(f"| {names[h]} | {fmt(acc[h])} | {fmt(best)} | {100 * total:.1f}% | {100 * per:.1f}% |")
    md = "Layer-wise DGL (synchronous, `local`), 6 components; test accuracy % (mean ± std over seeds):\n\n" + "\n".join(lines)
    d, m = compare([100 * v for v in acc.get("mlp_sr", []) if v is not None], [100 * v for v in acc.get("mlp", []) if v is not None], floor=0.5)
    verdict = ordering_verdict([("final layer", d, m)], what="MLP-SR-aux beats MLP-aux", seeds=len(acc.get("mlp", [])), higher="MLP-SR - MLP")
    if "mlp_sr" in flops and "cnn" in flops:
        cheap = flops["mlp_sr"] < 0.1 * flops["cnn"]
        verdict += f"; MLP-SR-aux costs {100 * flops['mlp_sr'] / flops['cnn']:.1f}% of CNN-aux's FLOPs ({'under' if cheap else 'not under'} 10%)"
    return Outcome(md, verdict, None)



# -- DGL Figs. 5 and 6: asynchronous DGL against a slow component and the buffer size -----------------

_ASYNC_SLOWDOWNS = (1.0, 1.2, 1.5, 2.0)
_ASYNC_BUFFERS = (1, 2, 5, 20, 50)
_ASYNC_TOLERANCE = 2.0  # accuracy points async DGL may lose to sync DGL and still count as "close" (our choice)


def _dgl_async_base(scale: str) -> tuple[list[str], str]:
    # DGL sec. 4.3 as we read it: a 5-layer CNN (one layer per component) with MLP-aux heads,
    # trained with the section 4.1 optimiser. Component 3 (the middle one) is the slow one: our choice.
    base = ["preset=dgl-4.1", "model.components=5", "model.kwargs.depth=5", "model.heads=mlp",
            "replay.slow_component=3", "data.eval_batch_size=1000", "log_every=26", "eval_every=0"]
    if scale == "paper":
        return base, ("the 5-layer DGL CNN (one layer per component, MLP-aux heads), 50 epochs of the section 4.1 "
                      "schedule; component 3 of 5 is the slow one (our choice)")
    return base + ["epochs=1", "model.kwargs.width=0.25", "threads=1"], (
        "cpu scale: the 5-layer DGL CNN at 0.25x width (32 filters first, not 128), 1 epoch (each component makes "
        "156 updates) instead of 50, on the 20,000 CIFAR-10 training images available here, one thread per run; "
        "component 3 of 5 is the slow one (our choice)")


def _async_run(S: float, M: int) -> Run:
    return Run(f"async_S{S}_M{M}", {"strategy": "async-local", "S": S, "M": M},
               ("strategy=async-local", f"replay.slowdown={S}", f"replay.buffer_size={M}"))


_SYNC_DGL = Run("sync_local", {"strategy": "local"}, ("strategy=local",))


def _dgl_fig5_plan(scale: str):
    base, note = _dgl_async_base(scale)
    return base, [_SYNC_DGL] + [_async_run(S, 50) for S in _ASYNC_SLOWDOWNS], note + "; M = 50"


def _dgl_fig6_plan(scale: str):
    base, note = _dgl_async_base(scale)
    return base, [_SYNC_DGL] + [_async_run(1.2, M) for M in _ASYNC_BUFFERS], note + "; S = 1.2"



def _dgl_fig5_judge(results, runs, scale) -> Outcome:
    sync = pct(results, select_run(runs, strategy="local"))
    Ss = sorted(r.labels["S"] for r in runs if r.labels["strategy"] == "async-local")
    lines = ["| S | async DGL (M=50) | sync DGL (reference) | async - sync |", "|---|---|---|---|"]
    gaps, seeds = [], len(sync)
    for S in Ss:
        a = pct(results, select_run(runs, strategy="async-local", S=S))
        seeds = min(seeds, len(a)) if a else seeds
        d, m = compare(a, sync, floor=0.5)
        gaps.append((f"S={S}", d, m))
        lines.append(f"| {S} | {fmt(a, scale=1)} | {fmt(sync, scale=1)} | {'-' if math.isnan(d) else f'{d:+.2f}'} |")
    md = ("Test accuracy % of the final layer (mean ± std over seeds); async DGL draws the slow component S times less "
          "often, and every component makes the same number of updates (the paper's quota):\n\n" + "\n".join(lines))
    verdict = tolerance_verdict(gaps, tolerance=_ASYNC_TOLERANCE, what=f"async DGL stays within {_ASYNC_TOLERANCE:g} "
                                f"points of sync DGL at every S", seeds=seeds, gap="async - sync")
    a1, a2 = pct(results, select_run(runs, strategy="async-local", S=min(Ss))), pct(results, select_run(runs, strategy="async-local", S=max(Ss)))
    if a1 and a2:
        d, m = compare(a2, a1, floor=0.5)
        verdict += f"; async at S={max(Ss)} - async at S={min(Ss)}: {d:+.2f} (margin {m:.2f})"

    def plot(path: str) -> None:
        from .plots import lines_png

        series = {"async DGL (M=50)": [], "sync DGL": []}
        ms, ss, _ = mean_std(sync)
        for S in Ss:
            m_, s_, _ = mean_std(pct(results, select_run(runs, strategy="async-local", S=S)))
            if m_ is not None:
                series["async DGL (M=50)"].append((S, m_, s_ or 0.0))
            if ms is not None:
                series["sync DGL"].append((S, ms, ss or 0.0))
        lines_png(series, path, xlabel="slow-down S of component 3", ylabel="test accuracy % (final layer)",
                  title="async DGL against a slow component (DGL Fig. 5)")

    return Outcome(md, verdict, plot)


def _dgl_fig6_judge(results, runs, scale) -> Outcome:
    sync = pct(results, select_run(runs, strategy="local"))
    Ms = sorted(r.labels["M"] for r in runs if r.labels["strategy"] == "async-local")
    acc = {M: pct(results, select_run(runs, strategy="async-local", M=M)) for M in Ms}
    lines = ["| M | async DGL (S=1.2) |", "|---|---|"] + [f"| {M} | {fmt(acc[M], scale=1)} |" for M in Ms]
    lines.append(f"| sync DGL (reference) | {fmt(sync, scale=1)} |")
    md = "Test accuracy % of the final layer (mean ± std over seeds) against the replay buffer size M:\n\n" + "\n".join(lines)
    big = max(Ms)
    diffs, seeds = [], min((len(v) for v in acc.values() if v), default=1)
    for M in [M for M in Ms if M <= 2 and M != big]:
        d, m = compare(acc[big], acc[M], floor=0.5)
        diffs.append((f"M={big} vs M={M}", d, m))
    verdict = ordering_verdict(diffs, what=f"the largest buffer (M={big}) beats the small ones (M <= 2)", seeds=seeds,
                               higher="difference")

    def plot(path: str) -> None:
        from .plots import lines_png

        series = {"async DGL (S=1.2)": [], "sync DGL": []}
        ms, ss, _ = mean_std(sync)
        for M in Ms:
            m_, s_, _ = mean_std(acc[M])
            if m_ is not None:
                series["async DGL (S=1.2)"].append((M, m_, s_ or 0.0))
            if ms is not None:
                series["sync DGL"].append((M, ms, ss or 0.0))
        lines_png(series, path, xlabel="replay buffer size M (batches)", ylabel="test accuracy % (final layer)",
                  title="async DGL against the buffer size (DGL Fig. 6)", xlog=True)

    return Outcome(md, verdict, plot)



# -- DGL Fig. 3: sequential greedy training against DGL -----------------------------------------------

_COMPARABLE = 1.0  # accuracy points DGL may trail sequential greedy by and still count as "comparable" (our choice)


def _dgl_fig3_plan(scale: str):
    # A 4-layer DGL CNN, one layer per component, MLP-aux heads. Both strategies give every component
    # the same number of updates: DGL trains all four at once for E epochs, sequential greedy trains
    # them one after another for E epochs each (so its run is K times longer).
    base = ["preset=dgl-4.1", "model.components=4", "model.kwargs.depth=4", "model.heads=mlp", "data.eval_batch_size=1000"]
    if scale == "paper":
        epochs, note = 50, ("the 4-layer DGL CNN (one layer per component, MLP-aux heads), the section 4.1 schedule; "
                            "DGL 50 epochs, sequential 50 epochs per component (200 in all)")
        base += ["log_every=100", "eval_every=390"]  # once per epoch of 50,000 images at batch 128
    else:
        epochs = 1
        note = ("cpu scale: the 4-layer DGL CNN at 0.25x width, DGL 1 epoch, sequential 1 epoch per component (4 in all), "
                "each component 156 updates, on the 20,000 CIFAR-10 training images available here; test accuracy "
                "every 39 steps; one thread per run")
        base += ["model.kwargs.width=0.25", "threads=1", "log_every=13", "eval_every=39"]
    runs = [Run("dgl_local", {"strategy": "local"}, ("strategy=local", f"epochs={epochs}")),
            Run("sequential", {"strategy": "sequential"}, ("strategy=sequential", f"epochs={4 * epochs}"))]
    return base, runs, note


def _curve(rows: list[dict], key: str, start: int) -> dict[int, float]:
    """Evaluation step (counted from ``start``) -> ``key``, from a run's metric rows."""
    return {r["step"] - start: r[key] for r in rows if r.get("kind") == "eval" and r.get(key) is not None and r["step"] > start}


def _updates_curves(results, run: Run | None, K: int) -> dict[int, list[float]]:
    """Updates of component K -> its head's test accuracy % per seed (sequential: counted from its stage's start)."""
    out: dict[int, list[float]] = {}
    for r in run_rows(results, run):
        hist = r["history"]
        total = next((h["total_steps"] for h in hist if h.get("total_steps")), None)
        start = 0
        if run.labels["strategy"] == "sequential" and total:
            from ..strategies import stage_lengths

            start = sum(stage_lengths(total, K)[:-1])
        for u, v in _curve(hist, f"test_acc_{K}", start).items():
            out.setdefault(u, []).append(100 * v)
    return dict(sorted(out.items()))


def _dgl_fig3_judge(results, runs, scale) -> Outcome:
    K = 4
    dgl, seq = select_run(runs, strategy="local"), select_run(runs, strategy="sequential")
    cd, cs = _updates_curves(results, dgl, K), _updates_curves(results, seq, K)
    steps = sorted(set(cd) | set(cs))
    lines = [f"| updates of component {K} | DGL | sequential | DGL - sequential |", "|---|---|---|---|"]
    for u in steps:
        d, _ = compare(cd.get(u, []), cs.get(u, []), floor=0.5)
        lines.append(f"| {u} | {fmt(cd.get(u, []), scale=1)} | {fmt(cs.get(u, []), scale=1)} | {'-' if math.isnan(d) else f'{d:+.2f}'} |")
    md = (f"Test accuracy % of component {K}'s head (the final layer; mean ± std over seeds) against the updates "
          f"component {K} has made; DGL trains every component from the start, sequential greedy trains component "
          f"{K} last, on frozen components 1..{K - 1}:\n\n" + "\n".join(lines))
    # The other side of the comparison: at the steps DGL's whole run takes, sequential greedy has not begun component K.
    dgl_steps = next((h["total_steps"] for r in run_rows(results, dgl) for h in r["history"] if h.get("total_steps")), None)
    early = [100 * c[dgl_steps] for c in (_curve(r["history"], f"test_acc_{K}", 0) for r in run_rows(results, seq)) if dgl_steps in c]
    if early:
        md += (f"\n\nAfter {dgl_steps} training steps (DGL's whole run), sequential greedy's component {K} head is at "
               f"{fmt(early, scale=1)} % (its stage has not begun): for the same updates per component it needs "
               f"{K} times DGL's steps, and DGL's components could run in parallel.")
    a, b = pct(results, dgl, f"test_acc_{K}"), pct(results, seq, f"test_acc_{K}")
    d, m = compare(a, b, floor=0.5)
    verdict = tolerance_verdict([("end of training", d, m)], tolerance=_COMPARABLE,
                                what=f"DGL's component {K} is comparable to (within {_COMPARABLE:g} point of) or better "
                                     f"than sequential greedy's after the same number of updates",
                                seeds=min(len(a), len(b)) or 1, gap="DGL - sequential")
    if not math.isnan(d):
        verdict += f"; DGL is {'better' if d > m else 'worse' if d < -m else 'level within the margin'}"

    def plot(path: str) -> None:
        from .plots import lines_png

        series = {name: [(u, *[x or 0.0 for x in mean_std(v)[:2]]) for u, v in c.items()]
                  for name, c in (("DGL (local)", cd), ("sequential greedy", cs))}
        lines_png(series, path, xlabel=f"updates of component {K}", ylabel=f"test accuracy % (component {K}'s head)",
                  title="sequential greedy vs DGL (DGL Fig. 3)")

    return Outcome(md, verdict, plot)

_THREE_SEEDS = {"cpu": (0, 1, 2), "paper": (0, 1, 2)}

TABLES: tuple[Table, ...] = (
    Table("dgl-table1", "Auxiliary heads: CNN-aux vs MLP-aux vs MLP-SR-aux", "Belilovsky et al. 2020, Table 1",
              "MLP-SR-aux is more accurate than MLP-aux at a small fraction of CNN-aux's FLOPs",
              "dgl-heads", _dgl_plan, _dgl_judge),
    Table("dgl-fig5", "Asynchronous DGL with one slow component: accuracy against the slow-down S",
              "Belilovsky et al. 2020, Fig. 5",
              f"async DGL (replay buffers, M = 50) is robust to a slow worker: its accuracy stays close to synchronous "
              f"DGL's as S grows (\"close\": within {_ASYNC_TOLERANCE:g} accuracy points, our threshold)",
              "dgl-async", _dgl_fig5_plan, _dgl_fig5_judge, _THREE_SEEDS),
    Table("dgl-fig6", "Asynchronous DGL: accuracy against the replay buffer size M", "Belilovsky et al. 2020, Fig. 6",
              "a larger replay buffer helps: small buffers (M <= 2) degrade async DGL's accuracy at S = 1.2",
              "dgl-async", _dgl_fig6_plan, _dgl_fig6_judge, _THREE_SEEDS),
    Table("dgl-fig3", "Sequential greedy training against DGL: component 4's accuracy over training",
              "Belilovsky et al. 2020, Fig. 3",
              f"DGL reaches an accuracy comparable to or better than sequential greedy training for the same number of "
              f"updates (\"comparable\": within {_COMPARABLE:g} accuracy point, our threshold)",
              "dgl-sequential", _dgl_fig3_plan, _dgl_fig3_judge, _THREE_SEEDS),
)
