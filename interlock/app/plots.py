"""Learning-curve plots (PNG) for comparisons of strategies."""

from __future__ import annotations

import statistics
from pathlib import Path

__all__ = ["learning_curves_png", "final_head_accuracies"]


def final_head_accuracies(seeds: list[list[dict]], split: str = "test") -> list[float | None]:
    """Mean over seeds of each head's ``split`` accuracy (%) in the last evaluation that scored it; heads 1..K."""
    per_seed = []
    for rows in seeds:
        evals = [r for r in rows if r.get("kind") == "eval" and r.get(f"{split}_final_acc") is not None]
        if evals:
            last = evals[-1]
            K = max(int(k.rsplit("_", 1)[1]) for k in last if k.startswith(f"{split}_acc_"))
            per_seed.append([last.get(f"{split}_acc_{k}") for k in range(1, K + 1)])
    if not per_seed:
        return []
    K = max(len(a) for a in per_seed)
    out = []
    for k in range(K):
        values = [a[k] for a in per_seed if k < len(a) and a[k] is not None]
        out.append(100 * statistics.mean(values) if values else None)
    return out


def _figure(runs: dict[str, list[list[dict]]], *, title: str, split: str = "test"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc, ax_heads) = plt.subplots(1, 3, figsize=(16, 4.2))
    width = 0.8 / max(1, len(runs))
    for i, (name, seeds) in enumerate(runs.items()):
        colour = f"C{i}"
        for s, rows in enumerate(seeds):
            train = [r for r in rows if r.get("kind") == "train"]
            evals = [r for r in rows if r.get("kind") == "eval" and r.get(f"{split}_final_acc") is not None]
            K = max((int(k.split("_")[1]) for r in train for k in r if k.startswith("loss_")), default=1)
            label = name if s == 0 else None
            ax_loss.plot([r["step"] for r in train], [r.get(f"loss_{K}") for r in train], color=colour, lw=1, label=label)
            ax_acc.plot([r["step"] for r in evals], [100 * r[f"{split}_final_acc"] for r in evals], color=colour,
                        lw=1.5, marker="o", ms=3, label=label)
        # Every head's test accuracy at the end: where local learning's heads stand against end-to-end's.
        heads = final_head_accuracies(seeds, "test")
        xs = [k + 1 + (i - (len(runs) - 1) / 2) * width for k in range(len(heads))]
        ax_heads.bar(xs, [0.0 if a is None else a for a in heads], width=width, color=colour, label=name)
    ax_loss.set(xlabel="step", ylabel="training loss of the final head", title="training loss")
    ax_acc.set(xlabel="step", ylabel=f"{split} accuracy of the final head (%)", title=f"{split} accuracy (at each evaluation)")
    ax_heads.set(xlabel="head (K: the final head)", ylabel="test accuracy at the end (%)", title="test accuracy of every head")
    if any(len(final_head_accuracies(seeds)) for seeds in runs.values()):
        ax_heads.set_xticks(range(1, 1 + max(len(final_head_accuracies(seeds)) for seeds in runs.values())))
    for ax in (ax_loss, ax_acc, ax_heads):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def learning_curves_png(runs: dict[str, list[list[dict]]], path: Path, *, title: str, split: str = "test") -> Path:
    """Three panels: training loss (final head) and ``split`` accuracy vs step, and every head's final test accuracy.

    ``runs`` maps a strategy name to the metric rows of each of its seeds; seeds are drawn
    as thin lines of the strategy's colour, and the bars are means over seeds.
    """
    import matplotlib.pyplot as plt

    fig = _figure(runs, title=title, split=split)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
