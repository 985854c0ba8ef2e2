"""The registry of the tables and figures ``interlock reproduce`` can run.

Each paper's tables live in their own module (:mod:`.interlocking`, :mod:`.dgl`; SEDONA's protocol
is :mod:`.sedona`); the shared parts (runs, outcomes, verdict statistics) in :mod:`.common`; the
papers' own numbers and claims in :mod:`.papers`.
"""

from __future__ import annotations

from . import dgl, interlocking, sedona_tables
from .common import (SCALES, Outcome, Run, Table, combine_verdicts, compare, fmt, mean_std, ordering_verdict,
                     tolerance_verdict)

__all__ = ["Run", "Table", "TABLES", "names", "Outcome", "SCALES", "combine_verdicts", "compare", "fmt",
           "mean_std", "ordering_verdict", "tolerance_verdict"]

TABLES: dict[str, Table] = {t.name: t for t in (*interlocking.TABLES, *dgl.TABLES, *sedona_tables.TABLES)}


def names() -> list[str]:
    return sorted(TABLES)
