"""What every reproduced table shares: its runs, its outcome, and the statistics of its verdicts.

A :class:`Table` lists its runs for a scale ("cpu": minutes on 2 cores, fewer epochs and a subset
of K, said so in the report; "paper": the paper's full setting, for a GPU), and turns the finished
runs into rows, a plot and a verdict on the paper's claims. The tables themselves live in one
module per paper (``interlocking.py``, ``dgl.py``, ``sedona.py``); ``tables.py`` registers them.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .papers import PaperClaim

__all__ = ["SCALES", "Run", "Outcome", "Table", "mean_std", "fmt", "compare", "ordering_verdict",
           "tolerance_verdict", "combine_verdicts", "finals", "run_rows", "select_run", "pct"]

SCALES = ("cpu", "paper")

@dataclass(frozen=True)
class Run:
    """One configuration of a table, trained once per seed."""

    key: str  # folder name, unique within the table's family
    labels: dict  # what the table groups by, e.g. {"K": 6, "strategy": "2-wise"}
    overrides: tuple[str, ...]  # config key=value lines on top of the table's base


@dataclass
class Outcome:
    """What a table's judge returns."""

    markdown: str  # the results table(s)
    verdict: str  # the overall verdict: "confirmed: ...", "not confirmed: ..." or "inconclusive: ..."
    plot: Callable[[str], None] | None = None  # draws the figure to the given .png path
    # The paper's numbers beside ours (papers.side_by_side); "" where the table has none recorded.
    paper_side_by_side: str = ""
    # Our budget against the paper's (epochs or steps, data, seeds), one line each.
    budget: str = ""
    # Each claim the paper makes about this table or figure, with its own verdict.
    claim_verdicts: list[tuple[PaperClaim, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    paper: str  # the paper's table or figure
    claim: str  # the claim the verdict checks, in the paper's words where we have them
    family: str  # run folder shared by tables that train the same runs (Table 1 and 2)
    plan: Callable[[str], tuple[list[str], list[Run], str]]  # scale -> (base overrides, runs, scale note)
    judge: Callable[[dict[str, list[dict]], list[Run], str], Outcome]  # per-run results -> Outcome
    default_seeds: dict[str, tuple[int, ...]] = field(default_factory=lambda: {"cpu": (0,), "paper": (0, 1, 2)})


# -- statistics -------------------------------------------------------------------------------


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return None, None, 0
    return statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else None), len(vals)


def fmt(values: Sequence[float | None], scale: float = 100.0, digits: int = 2) -> str:
    m, s, n = mean_std(values)
    if m is None:
        return "-"
    return f"{scale * m:.{digits}f}" + ("" if s is None else f" ± {scale * s:.{digits}f}")


def compare(a: Sequence[float], b: Sequence[float], *, floor: float) -> tuple[float, float]:
    """(mean(a) - mean(b), the margin a difference must exceed to count).

    The margin is two standard errors of the difference, at least ``floor`` (with one seed
    there is no spread to measure, so only the floor applies).
    """
    ma, sa, na = mean_std(a)
    mb, sb, nb = mean_std(b)
    if ma is None or mb is None:
        return math.nan, floor  # a side has no finished run: no difference to judge
    se = math.sqrt(((sa or 0.0) ** 2) / max(na, 1) + ((sb or 0.0) ** 2) / max(nb, 1))
    return ma - mb, max(floor, 2 * se)


def ordering_verdict(diffs: list[tuple[str, float, float]], *, what: str, seeds: int, higher: str) -> str:
    """``diffs``: (where, difference, margin) with difference > 0 meaning the claim holds there."""
    missing = [w for w, d, _ in diffs if math.isnan(d)]
    if missing or not diffs:
        return f"inconclusive: no finished runs to compare at {', '.join(missing) or 'any point'}"
    worse = [d for d in diffs if d[1] < -d[2]]
    better = [d for d in diffs if d[1] > d[2]]
    shown = "; ".join(f"{w}: {higher} {d:+.2f} (margin {m:.2f})" for w, d, m in diffs)
    caveat = "" if seeds > 1 else " (one seed: no spread measured, margin is the floor)"
    if worse:
        return f"not confirmed: {what} fails where the difference exceeds its margin ({shown}){caveat}"
    if len(better) == len(diffs):
        return f"confirmed: {what} ({shown}){caveat}"
    return (f"inconclusive: {what} is shown beyond its margin at {len(better)} of {len(diffs)} points and "
            f"contradicted at none ({shown}){caveat}")


def tolerance_verdict(gaps: list[tuple[str, float, float]], *, tolerance: float, what: str, seeds: int, gap: str) -> str:
    """``gaps``: (where, a - b, margin); the claim is that a stays within ``tolerance`` below b.

    It holds at a point when a - b > -(tolerance - margin) (within tolerance even allowing for the
    noise), fails when a - b < -(tolerance + margin) (further below than tolerance beyond the noise).
    """
    missing = [w for w, d, _ in gaps if math.isnan(d)]
    if missing or not gaps:
        return f"inconclusive: no finished runs to compare at {', '.join(missing) or 'any point'}"
    shown = "; ".join(f"{w}: {gap} {d:+.2f} (margin {m:.2f})" for w, d, m in gaps)
    caveat = "" if seeds > 1 else " (one seed: no spread measured, margin is the floor)"
    fails = [w for w, d, m in gaps if d < -(tolerance + m)]
    holds = [w for w, d, m in gaps if d > -(tolerance - m)]
    if fails:
        return f"not confirmed: {what} fails at {', '.join(fails)} ({shown}){caveat}"
    if len(holds) == len(gaps):
        return f"confirmed: {what} ({shown}){caveat}"
    return f"inconclusive: {what} holds beyond the noise at {len(holds)} of {len(gaps)} points and fails at none ({shown}){caveat}"


def combine_verdicts(parts: list[str]) -> str:
    """One verdict from several: not confirmed if any part is, confirmed if all are, else inconclusive."""
    heads = [p.split(":", 1)[0] for p in parts]
    overall = ("not confirmed" if "not confirmed" in heads else "confirmed" if all(h == "confirmed" for h in heads)
               else "inconclusive")
    return f"{overall}: " + "; ".join(f"({i}) {p}" for i, p in enumerate(parts, 1))


# -- helpers for the judges -----------------------------------------------------------------


def finals(results: dict[str, list[dict]], run: Run | None, key: str) -> list[float | None]:
    if run is None:  # not in this (possibly partial) table
        return []
    return [r["final"].get(key) for r in results.get(run.key, [])]


def run_rows(results: dict[str, list[dict]], run: Run | None) -> list[dict]:
    return [] if run is None else results.get(run.key, [])


def select_run(runs: list[Run], **labels) -> Run | None:
    return next((r for r in runs if all(r.labels.get(k) == v for k, v in labels.items())), None)



def pct(results, run: Run | None, key: str = "test_final_acc") -> list[float]:
    return [100 * v for v in finals(results, run, key) if v is not None]

