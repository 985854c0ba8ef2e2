"""RunFailure: one typed error says where a run failed (run, phase and step, rank, component), with
the original error as its cause, in this process and from a rank to its launcher."""

from __future__ import annotations

import pickle

import pytest

from interlock.errors import REQUEST_ERRORS, RunFailure

pytest.importorskip("sklearn", reason="the bundled digits data set needs scikit-learn")

BASE = ["data.name=digits", "data.batch_size=32", "data.eval_batch_size=200", "data.val_size=100",
        "model.name=toy_cnn_strided", "model.components=2", "strategy=local", "log_every=2", "threads=1"]


def config(run_dir, *extra):
    from interlock.training.config import load_config

    return load_config(None, BASE + [f"run_dir={run_dir}", *extra])


def test_a_wrapped_error_keeps_its_cause_and_fields_across_pickling():
    cause = KeyError("weights")
    failure = RunFailure.wrap(cause, run="runs/x", phase="evaluation at step", step=4, rank=1, world_size=2, component=2)
    assert str(failure) == "KeyError: 'weights'" and failure.error is cause and failure.__cause__ is cause
    assert failure.where == "evaluation at step 4" and isinstance(failure, RuntimeError)
    back = pickle.loads(pickle.dumps(failure))
    assert type(back.error) is KeyError and back.error.args == ("weights",) and back.wrapped
    assert (back.run, back.where, back.rank, back.world_size, back.component) == ("runs/x", "evaluation at step 4", 1, 2, 2)
    plain = RunFailure("said by interlock itself", phase="setup", step=0)
    assert plain.error is plain and plain.where == "setup" and RunFailure().where is None
    assert pickle.loads(pickle.dumps(plain)).__cause__ is None


def test_a_training_divergence_is_a_run_failure_that_names_its_step_and_component():
    from interlock.training.loop import TrainingDiverged

    err = TrainingDiverged("loss of component 2 is nan at step 7", 7, component=2)
    assert isinstance(err, RunFailure) and err.where == "training step 7" and err.component == 2
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is TrainingDiverged and str(back) == str(err) and (back.step, back.component) == (7, 2)


def test_a_run_that_fails_mid_training_raises_a_run_failure_saying_where(tmp_path, monkeypatch):
    import interlock.training.loop as train_mod

    def broken(*args, **kwargs):
        raise KeyError("no such split")

    monkeypatch.setattr(train_mod, "evaluate", broken)
    with pytest.raises(RunFailure) as info:
        train_mod.run(config(tmp_path / "a", "steps=6", "eval_every=4"))
    failure = info.value
    assert type(failure) is RunFailure and isinstance(failure.error, KeyError) and failure.failed_at is not None
    assert failure.where == "evaluation at step 4" and failure.run == str(tmp_path / "a")
    assert failure.rank is None and failure.component is None  # one process holds both components


def test_request_errors_are_not_wrapped(tmp_path):
    from interlock.training.loop import run

    run(config(tmp_path / "b", "steps=2"))
    with pytest.raises(FileExistsError, match="already holds a run") as info:
        run(config(tmp_path / "b", "steps=2"))
    assert not isinstance(info.value, RunFailure) and FileExistsError in REQUEST_ERRORS


def test_the_one_line_report_reads_the_run_failure(tmp_path):
    from interlock.app.runner import failure_line

    cfg = config(tmp_path / "c", "steps=2")
    line = failure_line(RunFailure.wrap(KeyError("x"), phase="checkpoint at step", step=2), cfg, tmp_path / "log.txt")
    assert line.startswith(f"local run in {tmp_path / 'c'} failed at checkpoint at step 2: KeyError: 'x'; ")
    assert "on rank" not in line
    line = failure_line(KeyError("x"), cfg, tmp_path / "log.txt")  # raised outside the loop: no place known
    assert line.startswith(f"local run in {tmp_path / 'c'} failed: KeyError: 'x'")
