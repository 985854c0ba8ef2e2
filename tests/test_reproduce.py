"""Presets, the reproduce command's plans, verdicts, reuse of identical runs, and parallel runs."""

from __future__ import annotations

import io
import json

import pytest

from interlock.training import presets
from interlock.training.config import load_config
from interlock.reproduce import reproduce
from interlock.reproduce import tables as T
from interlock.training.runs import RunConfigMismatch

pytest.importorskip("sklearn", reason="the bundled digits data set needs scikit-learn")


# -- presets ---------------------------------------------------------------------------------------


def test_interlocking_b1_preset_is_the_papers_setting():
    c = load_config(None, ["preset=interlocking-b1", "model.components=4"])
    assert (c.model.name, c.model.heads) == ("toy_cnn", "linear")
    assert (c.optim.name, c.optim.lr, c.optim.weight_decay) == ("adam", 1e-4, 0.0)
    assert c.lr.name == "none" and c.lr.warmup_steps == 0  # no learning-rate decay
    assert c.data.augment is False and c.data.batch_size == 128
    assert (c.epochs, c.steps) == (100.0, 0)


def test_other_presets_hold_their_sources_numbers():
    b2 = load_config(None, ["preset=interlocking-b2"])
    assert (b2.model.name, b2.model.components, b2.model.heads) == ("resnet34_cifar_stages", 4, "conv")
    assert (b2.optim.name, b2.optim.lr, b2.optim.momentum, b2.optim.weight_decay) == ("sgd", 0.1, 0.9, 2e-4)
    dgl = load_config(None, ["preset=dgl-4.1"])
    assert (dgl.optim.lr, dgl.optim.momentum, dgl.optim.weight_decay, dgl.epochs) == (0.1, 0.9, 5e-4, 50.0)
    assert (dgl.lr.name, dgl.lr.milestones, dgl.lr.gamma) == ("multistep", (0.3, 0.6, 0.9), 0.2)  # x0.2 every 15 of 50 epochs
    sedona = load_config(None, ["preset=sedona-e2"])
    assert (sedona.label_smoothing, sedona.optim.weight_decay, sedona.steps) == (0.1, 1e-4, 64000)
    assert (sedona.lr.name, sedona.lr.min_lr_ratio) == ("cosine", 0.01)  # 0.1 -> 1e-3
    b3 = load_config(None, ["preset=interlocking-b3"])
    assert (b3.model.name, b3.model.heads, b3.data.name) == ("gpt", "transformer", "shakespeare")
    assert set(presets.SOURCES) == set(presets.PRESETS)


def test_a_config_overrides_its_preset_and_bad_names_fail(tmp_path):
    c = load_config(None, ["preset=interlocking-b1", "optim.lr=0.003", "steps=7"])
    assert (c.optim.lr, c.optim.name, c.steps, c.epochs) == (0.003, "adam", 7, 0.0)
    # A saved config (the preset's name and the expanded values) loads back to the same config.
    (tmp_path / "c.json").write_text(json.dumps(c.to_dict()))
    assert load_config(tmp_path / "c.json").to_dict() == c.to_dict()
    with pytest.raises(ValueError, match=r"preset='b1'; known presets: dgl-4.1, .*interlocking-b1"):
        load_config(None, ["preset=b1"])


# -- tables --------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", T.SCALES)
@pytest.mark.parametrize("name", T.names())
def test_every_table_plans_valid_configs(name, scale):
    base, runs, note = T.TABLES[name].plan(scale)
    assert runs and note
    assert len({r.key for r in runs}) == len(runs)
    for run in runs:
        load_config(None, [*base, *run.overrides])  # raises on any bad option


def test_fig4_left_covers_the_papers_grid_at_paper_scale():
    base, runs, _ = T.TABLES["interlocking-fig4-left"].plan("paper")
    cfg = load_config(None, [*base, *runs[0].overrides])
    assert (cfg.preset, cfg.epochs, cfg.optim.lr) == ("interlocking-b1", 100.0, 1e-4)
    grid = {(r.labels["K"], r.labels["strategy"]) for r in runs}
    assert {K for K, _ in grid} == {3, 4, 6, 8, 10}
    assert {s for K, s in grid if K == 10} == {"end-to-end", "local", "2-wise", "3-wise", "4-wise"}
    assert {s for K, s in grid if K == 3} == {"end-to-end", "local", "2-wise"}  # 3-wise at K=3 is end-to-end


def test_verdicts_follow_the_margins():
    assert T.compare([60.0, 61.0, 62.0], [58.0, 59.0, 60.0], floor=0.5) == pytest.approx((2.0, 2 * (2 / 3) ** 0.5))
    ok = T.ordering_verdict([("K=3", 2.0, 0.5), ("K=6", 1.0, 0.5)], what="x", seeds=3, higher="d")
    bad = T.ordering_verdict([("K=3", 2.0, 0.5), ("K=6", -1.0, 0.5)], what="x", seeds=3, higher="d")
    unsure = T.ordering_verdict([("K=3", 2.0, 0.5), ("K=6", 0.2, 0.5)], what="x", seeds=1, higher="d")
    assert ok.startswith("confirmed") and bad.startswith("not confirmed") and unsure.startswith("inconclusive")
    assert "one seed" in unsure and "one seed" not in ok


# -- the command -----------------------------------------------------------------------------------


def _tiny_table(monkeypatch):
    def plan(scale):
        base = ["data.name=digits", "data.batch_size=32", "data.eval_batch_size=200", "model.name=toy_cnn_strided",
                "model.components=2", "optim.lr=0.05", "steps=4", "log_every=2", "threads=1"]
        runs = [T.Run(s, {"strategy": s}, (f"strategy={s}",)) for s in ("local", "2-wise")]
        return base, runs, "tiny"

    def judge(results, runs, scale):
        acc = {r.key: [x["final"].get("test_final_acc") for x in results.get(r.key, [])] for r in runs}
        d, m = T.compare(acc.get("2-wise", []), acc.get("local", []), floor=0.0)
        return T.Outcome(f"| 2-wise | {T.fmt(acc.get('2-wise', []))} |", T.ordering_verdict([("K=2", d, m)], what="w", seeds=1, higher="d"))

    table = T.Table("tiny", "Tiny", "nobody's Table 0", "none", "tiny", plan, judge)
    monkeypatch.setitem(T.TABLES, "tiny", table)


def test_reproduce_trains_reports_and_reuses_only_identical_runs(tmp_path, monkeypatch):
    _tiny_table(monkeypatch)
    log = io.StringIO()
    out = reproduce("tiny", root=tmp_path, stream=log, quiet=True)
    assert "2 runs, 2 to train, 0 reused" in log.getvalue()
    report = (out / "report.md").read_text()
    assert "**Verdict: " in report and "nobody's Table 0" in report and "| 2-wise |" in report
    saved = json.loads((out / "configs" / "local_seed0.json").read_text())
    assert saved["strategy"] == "local" and saved["steps"] == 4
    metrics = tmp_path / "cpu" / "tiny" / "local" / "seed0" / "metrics.jsonl"
    before = metrics.stat().st_mtime_ns
    log = io.StringIO()
    reproduce("tiny", root=tmp_path, stream=log, quiet=True)
    assert "2 runs, 0 to train, 2 reused" in log.getvalue()
    assert metrics.stat().st_mtime_ns == before
    # Another config under the same name is refused, naming what differs, before anything trains.
    with pytest.raises(RunConfigMismatch, match=r"steps: 4 -> 6.*pass --rerun"):
        reproduce("tiny", root=tmp_path, overrides=["steps=6"], stream=io.StringIO(), quiet=True)
    assert metrics.stat().st_mtime_ns == before
    reproduce("tiny", root=tmp_path, overrides=["steps=6"], rerun=True, stream=io.StringIO(), quiet=True)
    assert json.loads((metrics.parent / "config.json").read_text())["steps"] == 6
    assert len(list(metrics.parent.parent.glob("seed0.replaced-*"))) == 1  # the old run is kept aside


def test_a_subset_of_runs_reports_apart_and_unknown_runs_fail(tmp_path, monkeypatch):
    _tiny_table(monkeypatch)
    with pytest.raises(ValueError, match=r"--runs nope: not runs of tiny; its runs are local, 2-wise"):
        reproduce("tiny", root=tmp_path, only=["nope"], stream=io.StringIO(), quiet=True)
    log = io.StringIO()
    out = reproduce("tiny", root=tmp_path, only=["local"], stream=log, quiet=True, report_only=True)
    assert out.name == "tiny-subset" and "1 runs, 0 to train" in log.getvalue()
    assert not (tmp_path / "cpu" / "reports" / "tiny").exists()


def test_reproduce_trains_runs_in_parallel_processes(tmp_path, monkeypatch):
    _tiny_table(monkeypatch)
    out = reproduce("tiny", root=tmp_path, jobs=2, stream=io.StringIO(), quiet=True)
    data = json.loads((out / "report.json").read_text())
    assert {k: len(v) for k, v in data["runs"].items()} == {"local": 1, "2-wise": 1}
    assert all(0 <= v[0]["final"]["test_final_acc"] <= 1 for v in data["runs"].values())
    assert data["command"] == "interlock reproduce tiny --scale cpu --seeds 0 --jobs 2"
    assert "Command: `interlock reproduce tiny --scale cpu --seeds 0 --jobs 2`" in (out / "report.md").read_text()
    # Same numbers as in one process: the runs are seeded and deterministic.
    one = reproduce("tiny", root=tmp_path / "one", stream=io.StringIO(), quiet=True)
    serial = json.loads((one / "report.json").read_text())
    assert serial["command"] == "interlock reproduce tiny --scale cpu --seeds 0"
    for key in ("local", "2-wise"):
        assert serial["runs"][key][0]["final"]["test_final_acc"] == data["runs"][key][0]["final"]["test_final_acc"]


def test_one_lr_milestone_on_the_command_line_is_a_tuple():
    assert load_config(None, ["lr.name=multistep", "lr.milestones=0.91", "steps=1"]).lr.milestones == (0.91,)


def test_line_plots_of_counts_have_whole_number_ticks():
    import matplotlib.pyplot as plt

    from interlock.reproduce.plots import lines_figure

    # Components K = 2, 3, 5: no tick at 2.5. Slow-downs S = 1, 1.2, 2 keep fractional ticks.
    fig = lines_figure({"2-wise": [(2, 50.0, 1.0), (3, 48.0, 1.0), (5, 45.0, 2.0)]}, xlabel="K", ylabel="acc", title="t")
    ticks = [t for t in fig.axes[0].get_xticks() if 2 <= t <= 5]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    plt.close(fig)
    fig = lines_figure({"async": [(1.0, 40.0, 1.0), (1.2, 39.0, 1.0), (2.0, 38.0, 1.0)]}, xlabel="S", ylabel="acc", title="t")
    assert any(not float(t).is_integer() for t in fig.axes[0].get_xticks())
    plt.close(fig)
