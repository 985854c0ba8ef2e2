"""precision, compile and compile_mode from the config: validated at construction, wired into the engine,
fp16's skipped updates in the metrics rows, and an fp16 run resumed from its checkpoint equal to the uninterrupted one."""

from __future__ import annotations

import math

import pytest
import torch

from interlock.training.checkpoint import latest_checkpoint
from interlock.training.config import describe_options, load_config
from interlock.training.loop import run
from interlock.training.metrics import read_metrics

pytest.importorskip("sklearn", reason="the bundled digits data set needs scikit-learn")

BASE = ["data.name=digits", "data.batch_size=32", "data.eval_batch_size=200", "data.val_size=100",
        "model.name=toy_cnn_strided", "model.components=3", "optim.lr=0.05", "log_every=2", "eval_every=0",
        "strategy=2-wise"]


def config(tmp_path, *extra):
    return load_config(None, BASE + [f"run_dir={tmp_path / 'run'}", *extra])


def train_rows(run_dir):
    return [r for r in read_metrics(run_dir) if r["kind"] == "train"]


@pytest.mark.parametrize("bad, match", [
    ("precision=fp8", "precision: precision='fp8': use 'fp32', 'bf16' or 'fp16'"),
    ("compile=maybe", "expected true or false"),
    ("compile_mode=fast", "compile_mode='fast': use null or one of default, reduce-overhead"),
    ("compile_mode=default", "compile_mode=default applies with compile=true"),
])
def test_bad_values_name_the_option(tmp_path, bad, match):
    extra = ["compile=true"] if bad == "compile_mode=fast" else []
    with pytest.raises(ValueError, match=match):
        config(tmp_path, "steps=2", *extra, bad)


@pytest.mark.parametrize("extra", [["strategy=hogwild", "precision=bf16"], ["strategy=hogwild-stashed", "compile=true"],
                                   ["engine=pipeline", "strategy=end-to-end", "precision=fp16", "pipeline.microbatches=4"]])
def test_own_pass_policies_refused_at_construction(tmp_path, extra):
    with pytest.raises(ValueError, match="leave precision=fp32 and compile=false"):
        config(tmp_path, "steps=2", *extra)


def test_the_options_are_listed_with_help():
    rows = {key: (default, note) for key, _, default, note in describe_options()}
    assert rows["precision"][0] == '"fp32"' and "fp16" in rows["precision"][1] and "bf16" in rows["precision"][1]
    assert rows["compile"][0] == "false" and "torch.compile" in rows["compile"][1]
    assert rows["compile_mode"][0] == "null" and "reduce-overhead" in rows["compile_mode"][1]


@pytest.mark.parametrize("extra", [["precision=bf16"], ["compile=true"], ["precision=fp16"]])
def test_a_run_trains_at_each_setting_and_reports_skipped_fp16_steps(tmp_path, extra):
    torch.compiler.reset()
    # (lr 0.01: at 0.05 the toy network's losses swing to ~9 within four steps, and any rounding grows with them)
    result = run(config(tmp_path, "steps=4", "optim.lr=0.01", *extra))
    reference = run(config(tmp_path / "fp32", "steps=4", "optim.lr=0.01"))
    rows, ref_rows = train_rows(tmp_path / "run"), train_rows(tmp_path / "fp32" / "run")
    assert result.steps == 4 and 0 <= result.final["test_final_acc"] <= 1
    tol = 1e-4 if extra == ["compile=true"] else 5e-2
    for row, ref in zip(rows, ref_rows):
        for k in (1, 2, 3):
            assert math.isfinite(row[f"loss_{k}"]) and abs(row[f"loss_{k}"] - ref[f"loss_{k}"]) <= tol * ref[f"loss_{k}"]
    fp16 = extra == ["precision=fp16"]
    assert all(("fp16_skipped_steps_1" in row) == fp16 for row in rows)
    if fp16:
        assert [row["fp16_skipped_steps_3"] for row in rows] == [0, 0]


def test_fp16_resume_equals_uninterrupted_and_counts_skips(tmp_path):
    # Loss weights of 1e4 overflow the initial scale: the scalers skip updates, so their state matters on resume.
    extra = ["steps=10", "precision=fp16", "checkpoint_every=3", "loss_weights=[1e4,1e4,1e4]"]
    full = run(config(tmp_path / "a", *extra))
    interrupted = config(tmp_path / "b", *extra)
    run(interrupted, stop_after=7)
    assert latest_checkpoint(tmp_path / "b" / "run").name == "step_00000006"
    resumed = run(interrupted, resume=True)
    assert resumed.final == full.final
    drop = ("step_time_s", "samples_per_s", "predicted_parallel_step_time_s", "busy_s_", "wait_s_", "comm_s_")
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith(drop)} for r in rows]
    assert strip(read_metrics(tmp_path / "b" / "run")) == strip(read_metrics(tmp_path / "a" / "run"))
    last = train_rows(tmp_path / "a" / "run")[-1]
    assert all(last[f"fp16_skipped_steps_{k}"] >= 1 for k in (1, 2, 3)), last
