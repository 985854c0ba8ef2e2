"""profile_steps=a:b: torch.profiler traces of those steps, the schedule's actions named in them, one per process."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from interlock.training.config import load_config
from interlock.measure.profiling import parse_profile_steps, recording
from interlock.training.loop import run

pytest.importorskip("sklearn", reason="the bundled digits data set needs scikit-learn")

BASE = ["data.name=digits", "data.batch_size=32", "data.eval_batch_size=200", "model.name=toy_cnn_strided",
        "model.components=2", "strategy=2-wise", "log_every=2", "threads=1", "data.eval_chunk=32"]


def action_events(path) -> Counter:
    events = json.loads(path.read_text())["traceEvents"]
    return Counter(e["name"] for e in events if e.get("ph") == "X" and "(component " in e.get("name", ""))


def test_parse_profile_steps():
    assert parse_profile_steps("") is None and parse_profile_steps("3:5") == (3, 5) and parse_profile_steps("4:4") == (4, 4)
    for bad in ("5:3", "0:2", "3", "a:b", "3-5"):
        with pytest.raises(ValueError, match="profile_steps=.*give a:b"):
            parse_profile_steps(bad)
    with pytest.raises(ValueError, match="profile_steps='x'"):
        load_config(None, [*BASE, "steps=2", "profile_steps=x"])


def test_one_process_traces_exactly_the_window_with_every_action_named(tmp_path):
    run(load_config(None, [*BASE, "steps=6", "profile_steps=2:3", f"run_dir={tmp_path / 'run'}"]))
    names = action_events(tmp_path / "run" / "profile" / "components_1-2.json")
    # Two profiled steps: each component forwards and updates once per step (2-wise at K = 2).
    for k in (1, 2):
        assert names[f"Forward (component {k})"] == 2 and names[f"Update (component {k})"] == 2
    assert names["HeadLoss (component 1)"] == 2
    assert not recording()  # the window closed: later steps (and other runs) are not wrapped
    # The kernels sit under the action that launched them: a convolution inside each Forward's span.
    events = [e for e in json.loads((tmp_path / "run" / "profile" / "components_1-2.json").read_text())["traceEvents"]
              if e.get("ph") == "X"]
    forwards = [e for e in events if e["name"] == "Forward (component 1)"]
    convs = [e for e in events if e["name"] == "aten::conv2d"]
    assert forwards and all(any(f["tid"] == c["tid"] and f["ts"] <= c["ts"] and c["ts"] + c["dur"] <= f["ts"] + f["dur"]
                                for c in convs) for f in forwards)


def test_a_window_past_the_end_is_cut_and_still_written(tmp_path):
    run(load_config(None, [*BASE, "steps=3", "profile_steps=3:9", f"run_dir={tmp_path / 'run'}"]))
    assert action_events(tmp_path / "run" / "profile" / "components_1-2.json")["Update (component 2)"] == 1
    assert not recording()


def test_each_rank_writes_its_own_trace(tmp_path):
    from interlock.app.distributed_run import run_distributed

    run_distributed(load_config(None, [*BASE, "steps=4", "profile_steps=2:3", "engine=distributed",
                                       f"run_dir={tmp_path / 'run'}"]), resume=False)
    for k in (1, 2):
        names = action_events(tmp_path / "run" / "profile" / f"component_{k}.json")
        assert names[f"Update (component {k})"] == 2 and not any(f"(component {3 - k})" in n for n in names)
