"""The reports' figures (matplotlib, headless)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

__all__ = ["lines_png", "lines_figure", "bars_png", "curves_png"]


def lines_png(series: dict[str, list[tuple[float, float, float]]], path: str, *, xlabel: str, ylabel: str, title: str,
              xlog: bool = False) -> str:
    """One line per series of (x, mean, std) points, with error bars; ``xlog``: a log x axis."""
    fig = lines_figure(series, xlabel=xlabel, ylabel=ylabel, title=title, xlog=xlog)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def lines_figure(series: dict[str, list[tuple[float, float, float]]], *, xlabel: str, ylabel: str, title: str,
                 xlog: bool = False):
    """The figure of :func:`lines_png`, not yet saved."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, pts in series.items():
        if pts:
            xs, ms, ss = zip(*pts)
            ax.errorbar(xs, ms, yerr=ss, marker="o", capsize=3, label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    xs_all = sorted({x for pts in series.values() for x, *_ in pts})
    if xlog:  # ticks at the measured x values, written plainly (1, 2, 5, 20, 50 rather than 10^0, 10^1)
        ax.set_xscale("log")
        ax.set_xticks(xs_all, [f"{x:g}" for x in xs_all])
        ax.minorticks_off()
    elif xs_all and all(float(x).is_integer() for x in xs_all):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # counts (K = 2, 3, 4): no 2.5 between them
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def bars_png(bars: dict[str, tuple[float, float]], path: str, *, ylabel: str, title: str) -> str:
    """One bar per label: (mean, std)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    labels = list(bars)
    ax.bar(labels, [bars[k][0] for k in labels], yerr=[bars[k][1] for k in labels], capsize=4, color="tab:blue")
    lo = min((bars[k][0] - bars[k][1] for k in labels), default=0)
    ax.set_ylim(max(0, lo - 5), None)
    ax.set(ylabel=ylabel, title=title)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def curves_png(curves: dict[str, list[tuple[float, float]]], path: str, *, xlabel: str, ylabel: str, title: str) -> str:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, pts in curves.items():
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
