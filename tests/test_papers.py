"""The papers' recorded numbers: well-formed, unique, and rendered beside ours with the paper's kind of error bar."""

import math

import pytest

from interlock.reproduce import papers
from interlock.reproduce.papers import PaperClaim, PaperValue, side_by_side


def test_every_recorded_cell_is_unique_and_named():
    keys = [v.key for v in papers.values()]
    assert len(keys) == len(set(keys)), "a (paper, table, row, column) is recorded twice"
    for v in papers.values():
        assert v.table and v.row and v.column


def test_a_value_is_validated_at_construction():
    with pytest.raises(ValueError, match="use one of"):
        PaperValue("nope", "Table 1", "r", "c", 1.0)
    with pytest.raises(ValueError, match="needs its kind"):
        PaperValue("dgl", "Table 1", "r", "c", 1.0, error=0.1)
    with pytest.raises(ValueError, match="finite"):
        PaperValue("dgl", "Table 1", "r", "c", math.nan)
    with pytest.raises(ValueError, match="use one of"):
        PaperClaim("nope", "Fig. 1", "sec. 1", "x")


def test_side_by_side_uses_the_papers_kind_of_error_bar():
    sem = PaperValue("interlocking", "Table X", "r", "c", 90.0, error=0.5, error_kind="sem", seeds=3)
    std = PaperValue("interlocking", "Table X", "r", "d", 90.0, error=0.5, error_kind="std", seeds=4)
    ours = [88.0, 89.0, 90.0]  # mean 89, std 1, standard error 1/sqrt(3)
    md = side_by_side([(sem, ours), (std, ours), (std, [])])
    rows = md.splitlines()[2:]
    assert f"89.00 ± {1 / math.sqrt(3):.2f} (sem), n=3" in rows[0] and "-1.00" in rows[0]
    assert "89.00 ± 1.00 (std), n=3" in rows[1]
    assert rows[2].endswith("| - | - |")
