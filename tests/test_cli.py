"""The command line as a user meets it: reuse of runs, resume overrides, one-line failures, help."""

from __future__ import annotations

import json

import pytest

import interlock
from interlock.app import cli, plots
from interlock.training.metrics import read_metrics

pytest.importorskip("sklearn", reason="the bundled digits data set needs scikit-learn")

# Small, real, bundled data (scikit-learn's handwritten digits) keeps these runs to a second or two.
BASE = [
    "data.name=digits", "data.batch_size=32", "data.eval_batch_size=200", "data.val_size=100",
    "model.name=toy_cnn_strided", "model.components=3", "optim.lr=0.05", "log_every=2", "eval_every=0",
]
ARGS = ["--quiet", *BASE]


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("interlock: error:")]


# -- compare reuses a run only when its config is the one asked for (issue 11, item 1) ---------------


def test_compare_refuses_a_finished_run_of_another_config_and_reruns_it_when_asked(tmp_path, capsys):
    cmp = ["compare", *ARGS, "--run-dir", str(tmp_path), "--strategies", "local"]
    run_dir = tmp_path / "local" / "seed0"
    assert cli.main(cmp + ["--steps", "4"]) == 0
    summary = (tmp_path / "summary.json").read_text()
    rows = read_metrics(run_dir)
    capsys.readouterr()

    # Other steps and lr: refused before anything is trained, naming what differs.
    assert cli.main(cmp + ["--steps", "6", "optim.lr=0.02"]) == 2
    err = capsys.readouterr().err
    assert "holds a run of another config" in err and "--rerun" in err
    assert "optim.lr: 0.05 -> 0.02" in err and "steps: 4 -> 6" in err
    assert (tmp_path / "summary.json").read_text() == summary and read_metrics(run_dir) == rows

    # --rerun moves the old run aside and trains the asked-for config.
    assert cli.main(cmp + ["--steps", "6", "optim.lr=0.02", "--rerun"]) == 0
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["steps"] == 6 and saved["optim"]["lr"] == 0.02
    new = json.loads((tmp_path / "summary.json").read_text())
    assert new["config"]["steps"] == 6 and new["results"]["local"][0]["final"]["step"] == 6
    assert new["runs"] == [{"strategy": "local", "seed": 0, "run_dir": str(run_dir), "reused": False}]
    aside = list((tmp_path / "local").glob("seed0.replaced-*"))
    assert len(aside) == 1 and read_metrics(aside[0]) == rows  # kept, not deleted

    # The same config again: reused as it is.
    before = (run_dir / "metrics.jsonl").stat().st_mtime_ns
    assert cli.main(cmp + ["--steps", "6", "optim.lr=0.02"]) == 0
    assert (run_dir / "metrics.jsonl").stat().st_mtime_ns == before
    assert json.loads((tmp_path / "summary.json").read_text())["runs"][0]["reused"] is True


# -- overrides after --resume apply, or are refused (item 4) ------------------------------------------


def test_resume_applies_overrides_and_refuses_those_that_would_rewrite_the_steps_taken(tmp_path, capsys):
    run_dir = tmp_path / "r"
    assert cli.main(["train", *ARGS, "--steps", "4", "--run-dir", str(run_dir), "--strategy", "local"]) == 0
    capsys.readouterr()
    # key=value right after the flags lands in the config positional: it must still apply.
    assert cli.main(["train", "--quiet", "--resume", "--run-dir", str(run_dir), "steps=6"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["step"] == 6
    assert json.loads((run_dir / "config.json").read_text())["steps"] == 6
    assert [r["step"] for r in read_metrics(run_dir) if r["kind"] == "eval"] == [4, 6]
    assert [r["step"] for r in read_metrics(run_dir) if r["kind"] == "train"] == [2, 4, 6]

    rows = read_metrics(run_dir)
    assert cli.main(["train", "--quiet", "--resume", "--run-dir", str(run_dir), "optim.lr=0.5", "steps=8"]) == 2
    err = capsys.readouterr().err
    assert "would change the steps already taken: optim.lr: 0.05 -> 0.5" in err
    assert cli.main(["train", "--quiet", "--resume", "--run-dir", str(run_dir), "--seed", "3"]) == 2
    assert "seed: 0 -> 3" in capsys.readouterr().err
    assert read_metrics(run_dir) == rows


def test_resuming_a_finished_run_adds_no_evaluation_row(tmp_path, capsys):
    run_dir = tmp_path / "r"
    assert cli.main(["train", *ARGS, "--steps", "4", "--run-dir", str(run_dir), "--strategy", "local"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = read_metrics(run_dir)
    assert cli.main(["train", "--quiet", "--resume", "--run-dir", str(run_dir)]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert read_metrics(run_dir) == rows and sum(r["kind"] == "eval" for r in rows) == 1
    assert again == first


# -- run-time failures: one line, the traceback in the run's log (item 9) ------------------------------


def test_a_diverging_run_fails_in_one_line_with_the_traceback_in_its_log(tmp_path, capsys):
    run_dir = tmp_path / "r"
    code = cli.main(["train", *ARGS, "--steps", "10", "--run-dir", str(run_dir), "--strategy", "local",
                     "optim.name=adam", "optim.lr=1e6"])
    assert code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = error_lines(err)
    assert "local run in" in line and "at training step 2" in line
    assert "loss of component 1 is" in line and "over 100 times its first-step loss" in line and "Lower optim.lr" in line
    assert f"traceback in {run_dir / 'log.txt'}" in line
    log = (run_dir / "log.txt").read_text()
    assert "Traceback" in log and "TrainingDiverged" in log


def test_a_failing_rank_is_reported_in_one_line_naming_rank_component_and_step(tmp_path, capsys):
    # One process per component: the rank that diverges is named, with its step and what to change.
    run_dir = tmp_path / "r"
    code = cli.main(["train", *ARGS, "--steps", "10", "--run-dir", str(run_dir), "--strategy", "local", "--engine",
                     "distributed", "model.components=2", "optim.name=adam", "optim.lr=1e6", "threads=1"])
    assert code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = error_lines(err)
    assert "at training step 2 on rank" in line and "of 2 (component" in line and "Lower optim.lr" in line
    assert "no checkpoint was written" in line
    log = (run_dir / "log.txt").read_text()
    assert "Traceback on rank" in log and "TrainingDiverged" in log


# -- help, version, options, seeds, plots (item 10) ---------------------------------------------------


def test_version_help_and_every_option_listed(capsys):
    from interlock.training.config import describe_options

    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"interlock {interlock.__version__}"
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--seed SEED seed of the weights, data order" in text
    assert "--engine {simulated,distributed,pipeline} simulated: every component in this process" in text
    assert "--list-options" in text
    assert cli.main(["train", "--list-options"]) == 0
    listing = capsys.readouterr().out
    for key, _, default, note in describe_options():
        line = next(l for l in listing.splitlines() if l.strip().startswith(key + " "))
        assert default in line and note in line, key
    assert "dist_timeout_s" in listing and "optim.lr" in listing and "data.fallback" in listing


def test_compare_takes_its_seeds_once(tmp_path, capsys):
    assert cli.main(["compare", *ARGS, "--steps", "2", "--run-dir", str(tmp_path), "--seed", "1", "--seeds", "2,3"]) == 2
    assert "give the seeds once" in capsys.readouterr().err
    assert cli.main(["compare", *ARGS, "--steps", "2", "--run-dir", str(tmp_path), "--strategies", "local", "--seed", "3"]) == 0
    assert json.loads((tmp_path / "summary.json").read_text())["seeds"] == [3]
    assert (tmp_path / "local" / "seed3" / "metrics.jsonl").exists()


def test_curves_show_every_heads_final_test_accuracy():
    def rows(accs):
        evals = [{"kind": "eval", "step": 5, "val_final_acc": 0.2},
                 {"kind": "eval", "step": 10, "val_final_acc": 0.3, "test_final_acc": accs[-1],
                  **{f"test_acc_{k + 1}": a for k, a in enumerate(accs)}}]
        return [{"kind": "train", "step": 10, "loss_1": 1.0, "loss_2": 1.0, "loss_3": 1.0}] + evals

    runs = {"end-to-end": [rows([0.1, 0.2, 0.5]), rows([0.3, 0.4, 0.7])], "local": [rows([0.4, 0.45, 0.42])]}
    fig = plots._figure(runs, title="t", split="val")
    bars = fig.axes[2]
    assert "every head" in bars.get_title()
    heights = [round(p.get_height(), 6) for p in bars.patches]
    assert heights == [20.0, 30.0, 60.0, 40.0, 45.0, 42.0]  # means over seeds, head 1..3, per strategy


def test_a_run_saved_before_newer_options_existed_still_counts_as_the_same_config():
    # Runs finished before divergence_ratio and data.substitute_for existed (and when data.fallback
    # defaulted to digits) trained exactly what the same config trains now: compare reuses them.
    from interlock.training.config import load_config
    from interlock.training.runs import config_differences

    wanted = load_config(None, BASE + ["steps=4"])
    saved = json.loads(json.dumps(wanted.to_dict()))
    del saved["divergence_ratio"], saved["data"]["substitute_for"]
    saved["data"]["fallback"], saved["dist_timeout_s"] = "digits", 60.0
    assert config_differences(saved, wanted) == []
    saved["divergence_ratio"], saved["data"]["substitute_for"] = 10.0, "cifar10"
    assert config_differences(saved, wanted) == ["data.substitute_for: 'cifar10' -> ''", "divergence_ratio: 10.0 -> 100.0"]


def test_failure_lines_name_rank_component_step_and_what_to_change(tmp_path):
    from interlock.training.config import load_config
    from interlock.runtime.launch import RankFailedError
    from interlock.errors import RunFailure
    from interlock.runtime.transport import TransportError

    config = load_config(None, BASE + ["steps=4", "engine=distributed", "dist_timeout_s=30", f"run_dir={tmp_path}"])
    err = RunFailure.wrap(TransportError("component 2 waiting for ('activation',) from component 1 (rank 0): Timed out waiting 30000ms"),
                          phase="training step", step=7, rank=1, world_size=3, component=2)
    line = cli._failure_line(err, config, tmp_path / "log.txt")
    assert line.startswith(f"2-wise run in {tmp_path} failed at training step 7 on rank 1 of 3 (component 2): TransportError:")
    assert "dist_timeout_s=30 s" in line and "raise dist_timeout_s" in line and line.endswith(f"(traceback in {tmp_path / 'log.txt'})")
    killed = RankFailedError("rank 2 of 3 was killed by signal 9 without raising an exception", rank=2, world_size=3)
    line = cli._failure_line(killed, config, tmp_path / "log.txt")
    assert "on rank 2 of 3" in line and "out of memory" in line and "\n" not in line


def test_progress_past_the_steps_counts_the_extra_batches_and_shows_a_real_loss():
    import io

    out = io.StringIO()
    progress = cli.Progress("async-local", stream=out)
    progress({"kind": "train", "step": 89, "total_steps": 39, "samples_per_s": 100.0, "loss_1": 1.5, "loss_2": float("nan")})
    line = out.getvalue()
    assert "39/39 +50 batches until every quota is made" in line and "loss 1.500" in line and "89/39" not in line
