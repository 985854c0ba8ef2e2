"""The new strategies through the command line: names round-trip, compare trains each of them."""

from __future__ import annotations

import json

import pytest

import interlock as il
from interlock.app import cli
from interlock.training.config import parse_strategy

NEW = [il.AsyncLocal(), il.Sequential(), il.LocalDouble(), il.Hogwild(), il.HogwildStashed()]


def test_names_round_trip():
    for s in NEW:
        assert parse_strategy(s.name) == s
    assert parse_strategy("async-dgl") == il.AsyncLocal() and parse_strategy("stale") == il.Hogwild()


def test_compare_trains_every_new_strategy(tmp_path, capsys):
    pytest.importorskip("sklearn", reason="the bundled digits data set needs scikit-learn")
    args = ["compare", "--quiet", "--steps", "6", "--run-dir", str(tmp_path), "--strategies",
            ",".join(s.name for s in NEW), "data.name=digits", "data.batch_size=32", "data.eval_batch_size=500",
            "model.name=toy_cnn_strided", "model.components=3", "log_every=3", "threads=1"]
    assert cli.main(args) == 0
    table = capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    for s in NEW:
        assert f"| {s.name} |" in table
        assert 0 <= summary["results"][s.name][0]["final"]["test_final_acc"] <= 1
