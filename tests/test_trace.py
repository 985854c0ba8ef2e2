"""Traces: Chrome trace JSON, Gantt PNG and per-component times, on hand-made records."""

from __future__ import annotations

import json
import stat

import pytest

import interlock as il
from interlock.core import schedule as S
from interlock.timemodel.clock import ComputeCosts, predict
from interlock.measure.trace import CATEGORIES, category, chrome_trace, component_times, gantt_png
from interlock.core.worker import ActionRecord

T0 = 100.0  # records carry perf_counter-like times; traces start at the earliest


def synthetic():
    """Two components, one step of 2-wise (= end-to-end for K=2), times in seconds after T0."""
    spans = [
        (0, S.Forward(), 0.0, 1.0),
        (0, S.SendActivation(), 1.0, 1.1),
        (0, S.HeadLoss(stream=False), 1.1, 1.2),
        (1, S.RecvActivation(), 0.5, 1.2),  # waited 0.7 for component 1
        (1, S.Forward(), 1.2, 2.2),
        (1, S.HeadLoss(stream=True), 2.2, 2.3),
        (1, S.FullGrad(1, last=True), 2.3, 3.3),
        (1, S.SendStream(1, 0), 3.3, 3.5),
        (0, S.RecvStream(1, 0), 1.2, 3.6),  # waited for the stream
        (1, S.Update(), 3.5, 3.6),
        (0, S.WeightGrad((1,), last=True), 3.6, 4.6),
        (0, S.Update(), 4.6, 4.8),
    ]
    return [ActionRecord(k, a, T0 + s, T0 + e) for k, a, s, e in spans]


def test_chrome_trace_has_one_event_per_record_on_its_row(tmp_path):
    records = synthetic()
    path = chrome_trace(records, tmp_path / "trace.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trace.json"]  # no temporary file left
    trace = json.loads(path.read_text())
    events = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(events) == len(records)
    for e, r in zip(events, records):
        assert e["tid"] == r.component + 1 and e["name"] == r.action.kind
        assert e["ts"] == pytest.approx((r.start_s - T0) * 1e6) and e["dur"] == pytest.approx(r.duration_s * 1e6)
        assert e["cat"] == category(r.action)
    full = next(e for e in events if e["name"] == "FullGrad")
    assert full["args"] == {"component": 2, "loss": "L_2", "last": True}
    send = next(e for e in events if e["name"] == "SendStream")
    assert send["args"] == {"component": 2, "loss": "L_2", "hops_left": 0}
    weight = next(e for e in events if e["name"] == "WeightGrad")
    assert weight["args"]["losses"] == ["L_2"]
    names = {e["tid"]: e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name"}
    assert names == {1: "component 1", 2: "component 2"}


def test_chrome_trace_replaces_atomically(tmp_path):
    path = tmp_path / "sub" / "trace.json"
    chrome_trace(synthetic(), path)
    chrome_trace(synthetic()[:3], path)  # overwrite
    assert len([e for e in json.loads(path.read_text())["traceEvents"] if e["ph"] == "X"]) == 3
    assert sorted(p.name for p in path.parent.iterdir()) == ["trace.json"]


def test_gantt_png_is_written(tmp_path):
    path = gantt_png(synthetic(), tmp_path / "gantt.png", title="2-wise, K=2 (synthetic)")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gantt.png"]


def test_simulated_run_draws(tmp_path):
    # The clock's simulated records go through the same functions.
    plan = il.Interlocking(2).plan(4)
    schedules = [S.build_schedule(plan, k, has_head=True) for k in range(4)]
    run = predict(schedules, ComputeCosts.units(split=0.5), steps=3)
    gantt_png(run.records, tmp_path / "sim.png", title="2-wise, K=4, 3 steps (units)")
    trace = json.loads(chrome_trace(run.records, tmp_path / "sim.json").read_text())
    assert len([e for e in trace["traceEvents"] if e["ph"] == "X"]) == len(run.records)
    times = component_times(run.records)
    assert [t["busy_s"] for t in times] == pytest.approx(list(run.busy_s))
    assert [t["steps"] for t in times] == [3, 3, 3, 3]


def test_component_times_by_hand():
    t1, t2 = component_times(synthetic())
    # Component 1: busy = F 1.0 + head 0.1 + WG 1.0 + update 0.2; wait = 2.4; comm = 0.1; span 0..4.8.
    assert t1["component"] == 1 and t1["steps"] == 1
    assert t1["busy_s"] == pytest.approx(2.3) and t1["wait_s"] == pytest.approx(2.4) and t1["comm_s"] == pytest.approx(0.1)
    assert t1["span_s"] == pytest.approx(4.8) and t1["idle_s"] == pytest.approx(0.0)
    # Component 2: busy = F 1.0 + head 0.1 + FullGrad 1.0 + update 0.1; wait 0.7; comm 0.2; span 0.5..3.6.
    assert t2["busy_s"] == pytest.approx(2.2) and t2["wait_s"] == pytest.approx(0.7) and t2["comm_s"] == pytest.approx(0.2)
    assert t2["span_s"] == pytest.approx(3.1) and t2["idle_s"] == pytest.approx(0.0)
    assert t2["busy_per_step_s"] == pytest.approx(2.2)
    json.dumps([t1, t2])  # JSON-able
    # Two steps: means per step halve; a component with no Update has no per-step means.
    shifted = [ActionRecord(r.component, r.action, r.start_s + 10, r.end_s + 10) for r in synthetic()]
    t1, _ = component_times(synthetic() + shifted)
    assert t1["steps"] == 2 and t1["busy_per_step_s"] == pytest.approx(2.3)
    assert t1["idle_s"] == pytest.approx(10.0 + 4.8 - 2 * 4.8)
    (alone,) = component_times([ActionRecord(0, S.Forward(), 0.0, 1.0)])
    assert alone["steps"] == 0 and alone["busy_per_step_s"] is None


def test_categories_and_errors(tmp_path):
    kinds = {
        S.Forward(): "forward", S.HeadLoss(stream=True): "head", S.InputGrad((1,), last=False): "input gradient",
        S.WeightGrad((1,), last=True): "weight gradient", S.FullGrad(1, last=True): "full backward",
        S.RecvActivation(): "communication", S.SendStream(1, 0): "communication", S.Update(): "update",
    }
    assert {a: category(a) for a in kinds} == kinds and set(kinds.values()) <= set(CATEGORIES)
    with pytest.raises(ValueError, match="no trace category for action"):
        category(S.Action())
    with pytest.raises(ValueError, match="no records to draw"):
        chrome_trace([], tmp_path / "t.json")


def test_trace_files_are_as_readable_as_the_runs_other_files(tmp_path):
    # mkstemp would leave them 0600; every other file of a run is written with open(): 0666 less the umask.
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    for path in (chrome_trace(synthetic(), tmp_path / "trace.json"), gantt_png(synthetic(), tmp_path / "trace.png", title="t")):
        assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
