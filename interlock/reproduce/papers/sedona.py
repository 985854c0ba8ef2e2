"""The numbers and claims of sedona's paper (see PAPERS in this package), each with its table, row and column."""

from __future__ import annotations

from . import PaperClaim, PaperValue

VALUES: list[PaperValue] = []
CLAIMS: list[PaperClaim] = []
