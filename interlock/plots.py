"""Learning-curve plots (PNG) for comparisons of strategies."""

from __future__ import annotations

from pathlib import Path

__all__ = ["learning_curves_png"]


def learning_curves_png(runs: dict[str, list[list[dict]]], path: Path, *, title: str, split: str = "test") -> Path:
    """One panel of training loss (final head) and one of ``split`` accuracy vs step.

    ``runs`` maps a strategy name to the metric rows of each of its seeds; seeds are drawn
    as thin lines of the strategy's colour.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
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
    ax_loss.set(xlabel="step", ylabel="training loss of the final head", title="training loss")
    ax_acc.set(xlabel="step", ylabel=f"{split} accuracy of the final head (%)", title=f"{split} accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
