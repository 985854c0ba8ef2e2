"""The three papers' own numbers and claims, each with its source, for the reports to set beside ours.

Every number of every table is one :class:`PaperValue` (paper, table, row, column, value, the
paper's error bar and its kind); every claim the text makes about a table or figure is one
:class:`PaperClaim`, paraphrased and cited by section. Figures carry no numbers in the text: they
have claims only. The values live in one module per paper (:mod:`.interlocking`, :mod:`.dgl`,
:mod:`.sedona`); where the extracted text leaves a cell ambiguous, ``reading`` says how we read it
and why.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from .records import ERROR_KINDS, PAPERS, PaperClaim, PaperValue

__all__ = ["PAPERS", "ERROR_KINDS", "PaperValue", "PaperClaim", "values", "value", "claims", "side_by_side",
           "ours_with_error"]


def _all_values() -> list[PaperValue]:
    from . import dgl, interlocking, sedona

    return [*interlocking.VALUES, *dgl.VALUES, *sedona.VALUES]


def _all_claims() -> list[PaperClaim]:
    from . import dgl, interlocking, sedona

    return [*interlocking.CLAIMS, *dgl.CLAIMS, *sedona.CLAIMS]


def values(paper: str | None = None, table: str | None = None) -> list[PaperValue]:
    """The recorded cells, optionally of one paper and one of its tables, in the order recorded."""
    return [v for v in _all_values() if (paper is None or v.paper == paper) and (table is None or v.table == table)]


def value(paper: str, table: str, row: str, column: str) -> PaperValue:
    for v in _all_values():
        if v.key == (paper, table, row, column):
            return v
    known = sorted({(v.row, v.column) for v in values(paper, table)})
    raise KeyError(f"no recorded value for {paper} {table} row {row!r} column {column!r}; recorded cells: {known}")


def claims(paper: str, about: str) -> list[PaperClaim]:
    return [c for c in _all_claims() if c.paper == paper and c.about == about]


def ours_with_error(values_: Sequence[float], kind: str) -> tuple[float | None, float | None, int]:
    """Our mean over seeds and the error bar of the paper's kind (std or standard error; None with one seed)."""
    vals = [v for v in values_ if v is not None and math.isfinite(v)]
    if not vals:
        return None, None, 0
    m = statistics.mean(vals)
    if len(vals) < 2 or not kind:
        return m, None, len(vals)
    s = statistics.stdev(vals)
    return m, (s / math.sqrt(len(vals)) if kind == "sem" else s), len(vals)


def side_by_side(cells: Sequence[tuple[PaperValue, Sequence[float]]], *, digits: int = 2,
                 ours_label: str = "ours") -> str:
    """A markdown table: each paper cell, ours beside it (mean and the paper's kind of error bar), the difference.

    ``cells``: (the paper's value, our per-seed values in the paper's unit). A cell we did not
    train shows "-"; the error bar of ours is of the paper's kind (a std of 1-run means is "-").
    """
    lines = [f"| paper table | row | column | paper | {ours_label} | {ours_label} - paper |", "|---|---|---|---|---|---|"]
    for pv, ours in cells:
        m, e, n = ours_with_error(ours, pv.error_kind or "std")
        if m is None:
            shown, diff = "-", "-"
        else:
            kind = pv.error_kind or "std"
            shown = f"{m:.{digits}f}" + ("" if e is None else f" ± {e:.{digits}f} ({kind})") + f", n={n}"
            diff = f"{m - pv.value:+.{digits}f}"
        lines.append(f"| {pv.table} | {pv.row} | {pv.column} | {pv.shown(digits)}{' ' + pv.unit if pv.unit not in ('%', '') else ''} | {shown} | {diff} |")
    return "\n".join(lines)
