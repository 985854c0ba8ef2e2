"""The search's picture: how much each block wants its own loss, and where the cuts go."""

from __future__ import annotations

from pathlib import Path

__all__ = ["search_png"]


def search_png(result: dict, path: Path) -> Path:
    """Bars of softmax(alpha_l)_1 for blocks 1..L-1 (a cut after block l isolates it from above);
    the cuts chosen for each K in ``result["decisions"]`` marked as dashed lines, labelled with their heads."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .layers import stem_blocks

    local = result["local_weight"]
    offset = stem_blocks(result.get("model", ""))  # the decisions' cuts index the model's blocks, the bars SEDONA's layers
    blocks = list(range(1, len(local) + 1))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(blocks) + 2), 3.6))
    ax.bar(blocks, local, color="C0", label="softmax(alpha_l)_1 (own loss)")
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    decisions = result.get("decisions", {})
    # As SEDONA's Fig. 4: the K = 4 cuts in red, the layers K = 8 adds in green; other K in other colours.
    colours = {"4": "red", "8": "green"}
    marked: set[int] = set()
    for i, (K, d) in enumerate(sorted(decisions.items(), key=lambda kv: int(kv[0]))):
        colour = colours.get(str(K), f"C{i + 1}")
        new = [(cut - offset, head) for cut, head in zip(d["cuts"], d["heads"]) if cut - offset not in marked]
        for j, (layer, head) in enumerate(new):
            # a cut at model block c starts the next component after SEDONA layer c - offset (1-based)
            ax.axvline(layer + 0.5, color=colour, ls="--", lw=1.2,
                       label=(f"K={K} cuts" if not marked else f"K={K}: added cuts") if j == 0 else None)
            ax.text(layer + 0.55, 1.0 - 0.07 * (i + 1), head, color=colour, fontsize=7, va="top")
        marked |= {layer for layer, _ in new}
    ax.set_xlabel("layer l (a cut after it)")
    ax.set_ylabel("weight of the block's own loss")
    ax.set_ylim(0, 1.05)
    ax.set_xticks(blocks)
    ax.set_title(f"SEDONA search: {result['model']}, {result['blocks']} layers, {result['meta_steps_done']} meta steps")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
