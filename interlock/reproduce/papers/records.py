"""The records every paper module fills: :class:`PaperValue` (one table cell) and :class:`PaperClaim`.

They live apart from the package's look-ups so that the per-paper modules import this one, not
the package that imports them (no import cycle).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["PAPERS", "ERROR_KINDS", "PaperValue", "PaperClaim"]

PAPERS = {
    "interlocking": "Gomez et al., Interlocking Backpropagation, JMLR 2022",
    "dgl": "Belilovsky et al., Decoupled Greedy Learning of CNNs, ICML 2020",
    "sedona": "Pyeon et al., SEDONA, ICLR 2021",
}
# The kinds of error bar a paper gives: one standard deviation over seeds, one standard error of
# the mean over seeds, or none.
ERROR_KINDS = ("std", "sem", "")


@dataclass(frozen=True)
class PaperValue:
    """One cell of one of the papers' tables."""

    paper: str  # a key of PAPERS
    table: str  # "Table 1", as the paper numbers it
    row: str  # the row's label in the paper (e.g. "ResNet-32, K=4")
    column: str  # the column's label in the paper (e.g. "2-wise")
    value: float  # in the paper's unit
    error: float | None = None  # the paper's error bar, if it gives one
    error_kind: str = ""  # one of ERROR_KINDS
    seeds: int | None = None  # how many runs the paper's mean is over, where it says
    unit: str = "%"  # "%", "ppl", "GFLOPs", "x", ...
    reading: str = ""  # how an ambiguous cell was read, and why ("" where the text is unambiguous)

    def __post_init__(self):
        if self.paper not in PAPERS:
            raise ValueError(f"PaperValue.paper={self.paper!r}: use one of {', '.join(PAPERS)}")
        if self.error_kind not in ERROR_KINDS:
            raise ValueError(f"PaperValue.error_kind={self.error_kind!r}: use one of {ERROR_KINDS}")
        if self.error is not None and not self.error_kind:
            raise ValueError(f"{self.key}: an error bar needs its kind (error_kind='std' or 'sem')")
        if not math.isfinite(self.value):
            raise ValueError(f"{self.key}: value {self.value!r} is not a finite number")

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.paper, self.table, self.row, self.column)

    def shown(self, digits: int = 2) -> str:
        err = "" if self.error is None else f" ± {self.error:.{digits}f} ({self.error_kind})"
        return f"{self.value:.{digits}f}{err}"


@dataclass(frozen=True)
class PaperClaim:
    """A claim the paper's text makes about one table or figure, paraphrased, with where it is made."""

    paper: str  # a key of PAPERS
    about: str  # the table or figure it concerns: "Table 1", "Fig. 4"
    where: str  # where the text makes it: "sec. 4.2", "abstract", "Table 1 caption"
    claim: str  # our paraphrase, never the paper's sentence

    def __post_init__(self):
        if self.paper not in PAPERS:
            raise ValueError(f"PaperClaim.paper={self.paper!r}: use one of {', '.join(PAPERS)}")

    def cite(self) -> str:
        return f"{self.about}, {self.where}: {self.claim}"
