"""Issue 21: what failed when the new features were probed as a new user would, one test per finding.

Faults are real where a test can make them so (truncated files, a second process, a diverging run
on the command line); a full disk and a read-only folder are injected at the write call with the
errors the system really raises (the probe script, benchmarks/fault_probe.py, makes them for real).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from interlock.app import cli
from interlock.training.checkpoint import DamagedCheckpoint, latest_checkpoint, load_checkpoint
from interlock.training.config import apply_overrides, load_config
from interlock.training.metrics import read_metrics
from interlock.training.rundir import LOCK_NAME, RunDirError, RunDirLocked, explain_write_error, lock_run_dir
from interlock.training.loop import run

pytest.importorskip("sklearn", reason="the bundled digits data set needs scikit-learn")

ROOT = Path(__file__).resolve().parents[1]
BASE = [
    "data.name=digits", "data.batch_size=32", "data.eval_batch_size=200", "data.val_size=100",
    "model.name=toy_cnn_strided", "model.components=3", "optim.lr=0.05", "log_every=2", "eval_every=0", "threads=1",
]
SEARCH = [
    "data.name=digits", "data.batch_size=32", "model.name=toy_cnn_strided", "model.kwargs.depth=4",
    'model.head_kw={"final_width": 16}', "search.heads=aux1,aux2", "search.pretrain_steps=4", "search.snapshot_every=2",
    "search.memory_size=2", "search.meta_steps=3", "search.inner_steps=2", "search.val_batch_size=64",
    "search.checkpoint_every=2", "search.log_every=1", "optim.lr=0.05", "steps=4", "strategy=local", "threads=1",
]


def config(run_dir, *extra):
    return load_config(None, BASE + [f"run_dir={run_dir}", *extra])


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("interlock: error:")]


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def cli_process(*args, env_extra=None, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "interlock", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


# -- 1. search --resume works on the directory given, never on the one its config.json names -------------


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "random": os.urandom(len(data)), "empty": b""}[how])


def test_search_resume_of_a_copy_works_on_the_copy_and_names_a_damaged_state(tmp_path, capsys):
    from interlock.search.run import run_search

    original, copy = tmp_path / "orig", tmp_path / "copy"
    run_search(load_config(None, SEARCH + [f"run_dir={original}"]), stop_after=4)
    shutil.copytree(original, copy)
    before = files_of(original)
    for how in ("truncated", "random", "empty"):
        shutil.copy(original / "checkpoints" / "search_state.pt", copy / "checkpoints" / "search_state.pt")
        damage(copy / "checkpoints" / "search_state.pt", how)
        assert cli.main(["search", "--quiet", "--resume", "--run-dir", str(copy)]) == 2, how
        (line,) = error_lines(capsys.readouterr().err)
        assert f"{copy / 'checkpoints' / 'search_state.pt'} is damaged" in line, line
    shutil.copy(original / "checkpoints" / "search_state.pt", copy / "checkpoints" / "search_state.pt")
    assert cli.main(["search", "--quiet", "--resume", "--run-dir", str(copy), "--components", "2"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["run_dir"] == str(copy) and (copy / "config-K2.json").exists()
    assert json.loads((copy / "config.json").read_text())["run_dir"] == str(copy)
    assert files_of(original) == before  # not one byte of the original changed


def test_search_refuses_components_it_cannot_cut_before_searching(tmp_path, capsys):
    run_dir = tmp_path / "s"
    assert cli.main(["search", "--quiet", *SEARCH, "--run-dir", str(run_dir), "--components", "2,99"]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "--components 99" in line and "use K in 1..4" in line
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.jsonl").exists()


# -- 2. one run per directory at a time: a lock with pid and host, stale ones replaced ----------------------


def plant_lock(run_dir: Path, pid: int, host: str | None = None) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    path.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "command": "interlock train",
                                "since": "2026-01-01 00:00:00"}))
    return path


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_second_run_into_a_directory_in_use_is_refused_while_the_first_finishes(tmp_path, capsys):
    run_dir = tmp_path / "r"
    first = cli_process("train", "--quiet", *BASE, "--steps", "30", "--run-dir", str(run_dir), "--strategy", "local")
    deadline = time.time() + 60
    while not (run_dir / LOCK_NAME).exists() and time.time() < deadline:
        time.sleep(0.05)
    holder = json.loads((run_dir / LOCK_NAME).read_text())
    assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()
    assert cli.main(["train", "--quiet", *BASE, "--steps", "4", "--run-dir", str(run_dir), "--strategy", "2-wise"]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert f"{run_dir} is in use by another run (pid {first.pid} on {socket.gethostname()}" in line
    assert first.wait(timeout=300) == 0, first.stderr.read()
    rows = [r for r in read_metrics(run_dir) if r["kind"] == "train"]
    assert [r["step"] for r in rows] == list(range(2, 31, 2))  # one run's rows only, in order
    assert json.loads((run_dir / "config.json").read_text())["strategy"] == "local"
    assert not (run_dir / LOCK_NAME).exists()  # released at the end


def test_locks_on_every_command_stale_ones_replaced_foreign_hosts_named(tmp_path, capsys):
    # A live holder on this host (our parent process): refused, on train, search and reproduce alike.
    for args, folder in [
        (["train", "--quiet", *BASE, "--steps", "2"], tmp_path / "t"),
        (["search", "--quiet", *SEARCH], tmp_path / "s"),
    ]:
        plant_lock(folder, os.getppid())
        assert cli.main([*args, "--run-dir", str(folder)]) == 2
        assert f"is in use by another run (pid {os.getppid()}" in error_lines(capsys.readouterr().err)[0]
    report = tmp_path / "rep" / "cpu" / "reports" / "dgl-table1"
    plant_lock(report, os.getppid())
    assert cli.main(["reproduce", "dgl-table1", "--root", str(tmp_path / "rep"), "--report-only", "--quiet"]) == 2
    assert f"{report} is in use by another run" in error_lines(capsys.readouterr().err)[0]
    # Another host cannot be checked from here: the message says which file to remove once that run is over.
    lock = plant_lock(tmp_path / "h", 1, host="elsewhere")
    with pytest.raises(RunDirLocked, match=f"pid 1 on elsewhere.*remove {lock}"):
        run(config(tmp_path / "h", "steps=2"))
    # A holder that is gone: the lock is stale, replaced, and released at the end.
    plant_lock(tmp_path / "stale", dead_pid())
    assert run(config(tmp_path / "stale", "steps=2")).steps == 2
    assert not (tmp_path / "stale" / LOCK_NAME).exists()


def test_the_distributed_engine_respects_another_runs_lock(tmp_path):
    from interlock.app.distributed_run import run_distributed

    cfg = config(tmp_path / "d", "steps=2", "engine=distributed", "model.components=2")
    plant_lock(tmp_path / "d", os.getppid())
    with pytest.raises(RunDirLocked):
        run_distributed(cfg, resume=False)
    # (Under `interlock train --engine distributed` the launcher holds the lock and its ranks run under
    # it: the distributed case of test_a_failure_prints_one_line... trains there.)


# -- 3. distributed async DGL: every component's loss reaches the metrics; reuse bounded ---------------------


def test_distributed_async_dgl_logs_every_component_without_sync_points_and_bounds_reuse(tmp_path):
    from interlock.app.distributed_run import run_distributed

    run_dir = tmp_path / "a"
    cfg = config(run_dir, "steps=12", "log_every=3", "checkpoint_every=0", "eval_every=0", "engine=distributed",
                 "strategy=async-local", "replay.max_reuse=1", "replay.slowdown=3", "replay.slow_component=1")
    run_distributed(cfg, resume=False)
    rows = [r for r in read_metrics(run_dir) if r["kind"] == "train"]
    assert [r["step"] for r in rows] == [3, 6, 9, 12]
    for r in rows:
        for k in (1, 2, 3):
            assert r[f"loss_{k}"] is not None and 0 < r[f"loss_{k}"] < float("inf"), (r["step"], k, r[f"loss_{k}"])
            assert r[f"busy_s_per_step_{k}"] > 0
    folder = latest_checkpoint(run_dir)
    for k in (2, 3):  # no entry was read more than once while the rank below still sent
        replay = torch.load(folder / f"component_{k}.pt", weights_only=False)["policy"]
        assert replay["bounded_reads"] == 1, (k, replay)
    # Component 2 reads what the 3x slower component 1 sends: without the bound it rereads, with it it waits.
    assert torch.load(folder / "component_2.pt", weights_only=False)["policy"]["waits_for_reuse"] > 0


def test_simulated_async_dgl_skips_overused_draws_as_the_reference_code_does(tmp_path):
    bounded = run(config(tmp_path / "b", "steps=20", "strategy=async-local", "replay.max_reuse=1", "replay.slowdown=4",
                         "replay.slow_component=1", "checkpoint_every=20"))
    free = run(config(tmp_path / "f", "steps=20", "strategy=async-local", "replay.slowdown=4", "replay.slow_component=1",
                      "checkpoint_every=20"))
    reads = lambda d, k: torch.load(latest_checkpoint(d) / f"component_{k}.pt", weights_only=False)["policy"]["input_buffer"]["most_reads"]
    assert reads(tmp_path / "b", 2) == 1 and reads(tmp_path / "f", 2) > 1  # B_1, read by component 2 (its input buffer)
    assert bounded.history[-2]["skipped_draws"] > free.history[-2]["skipped_draws"]
    with pytest.raises(ValueError, match="replay.max_reuse=-1"):
        config(tmp_path, "strategy=async-local", "replay.max_reuse=-1")


# -- 4. a run-time failure is one line on the terminal, the traceback in log.txt ---------------------------


@pytest.mark.parametrize("engine", ["simulated", "distributed"])
def test_a_failure_prints_one_line_and_no_traceback_on_the_terminal(tmp_path, engine):
    run_dir = tmp_path / "r"
    p = cli_process("train", "--quiet", *BASE, "--steps", "10", "--run-dir", str(run_dir), "--strategy", "local",
                    "--engine", engine, "model.components=2", "optim.name=adam", "optim.lr=1e6", "log_every=5")
    _, err = p.communicate(timeout=240)
    assert p.returncode == 1
    assert "Traceback" not in err and len(error_lines(err)) == 1, err
    (line,) = error_lines(err)
    # 8: the step the loss diverged at, once (the losses of steps 1..5 are checked at step 5's log row).
    assert "at training step 2" in line and "at step 2" in line and "step 5" not in line, line
    assert "Traceback" in (run_dir / "log.txt").read_text()


def test_search_and_reproduce_failures_are_one_line_with_the_traceback_in_their_log(tmp_path, monkeypatch, capsys):
    import interlock.reproduce as reproduce_mod
    import interlock.search.run as search_run

    def broken(*a, **kw):
        raise RuntimeError("runs failed: K2 seed 0 (exit 1; see its train.log)")

    monkeypatch.setattr(search_run, "run_search", broken)
    assert cli.main(["search", "--quiet", *SEARCH, "--run-dir", str(tmp_path / "s")]) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert line.endswith(f"(traceback in {tmp_path / 's' / 'log.txt'})") and "RuntimeError: runs failed" in line
    assert "Traceback" in (tmp_path / "s" / "log.txt").read_text()
    monkeypatch.setattr(reproduce_mod, "reproduce", broken)
    assert cli.main(["reproduce", "dgl-table1", "--root", str(tmp_path / "r"), "--quiet"]) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith("interlock: error: reproduce dgl-table1 failed: RuntimeError: runs failed") and "traceback in" in line


# -- 5. damaged checkpoints: the file named, the newest complete one that can be read used ------------------


@pytest.mark.parametrize("how", ["truncated", "random", "empty"])
def test_a_damaged_component_file_is_named(tmp_path, how):
    from interlock.training.loop import build_net, make_engine
    from interlock.training.tasks import build_task

    cfg = config(tmp_path / "r", "steps=2", "checkpoint_every=1")
    run(cfg)
    folder = latest_checkpoint(tmp_path / "r")
    damage(folder / "component_2.pt", how)
    task = build_task(cfg.data, seed=0)
    engine = make_engine(cfg, build_net(cfg, task), task, 2)
    with pytest.raises(DamagedCheckpoint, match=f"{folder / 'component_2.pt'} is damaged"):
        load_checkpoint(folder, engine)


def test_resume_falls_back_to_the_newest_checkpoint_that_can_be_read(tmp_path, caplog):
    extra = ["steps=8", "checkpoint_every=2", "strategy=2-wise", "eval_every=4"]
    full = run(config(tmp_path / "a", *extra))
    cfg = config(tmp_path / "b", *extra)
    run(cfg, stop_after=7)  # checkpoints at steps 4 and 6 are kept
    bad = tmp_path / "b" / "checkpoints" / "step_00000006" / "component_2.pt"
    damage(bad, "truncated")
    resumed = run(cfg, resume=True)
    assert resumed.final == full.final  # from step 4: the same run
    assert f"{bad} is damaged" in caplog.text and "step_00000004, the newest checkpoint that could be read" in caplog.text
    for folder in (tmp_path / "b" / "checkpoints").glob("step_*"):
        damage(folder / "component_1.pt", "empty")
    with pytest.raises(DamagedCheckpoint, match="no checkpoint .* can be read"):
        run(config(tmp_path / "b", *extra, "steps=10"), resume=True)


def test_distributed_ranks_agree_on_the_checkpoint_to_fall_back_to(tmp_path):
    # Only rank 1 finds its file damaged; rank 0 could load the newest: both must resume from step 2.
    from interlock.app.distributed_run import run_distributed

    extra = ["checkpoint_every=2", "strategy=local", "model.components=2", "data.eval_chunk=32"]
    cfg = config(tmp_path / "d", "steps=4", "engine=distributed", *extra)
    run_distributed(cfg, resume=False)
    bad = tmp_path / "d" / "checkpoints" / "step_00000004" / "component_2.pt"
    damage(bad, "truncated")
    resumed = run_distributed(config(tmp_path / "d", "steps=6", "engine=distributed", *extra), resume=True)
    reference = run(config(tmp_path / "s", "steps=6", *extra)).final
    assert resumed == reference
    assert f"{bad} is damaged" in (tmp_path / "d" / "log-rank1.txt").read_text()


# -- 6. disk faults: a full disk and a read-only folder said so, no temporaries left --------------------------


def test_a_full_disk_during_a_checkpoint_is_named_and_leaves_no_temporary(tmp_path, monkeypatch, capsys):
    real_save = torch.save

    def full_disk(obj, f, *a, **kw):
        if "component_" in str(f) and "step_00000004" in str(f):
            Path(f).write_bytes(b"PK\x03\x04 partial")  # what a write that ran out of space leaves
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")  # torch 2.x's words
        return real_save(obj, f, *a, **kw)

    import interlock.training.rundir as rundir

    monkeypatch.setattr(torch, "save", full_disk)
    monkeypatch.setattr(rundir, "_free_bytes", lambda path: 0)  # what the full file system reports meanwhile
    run_dir = tmp_path / "r"
    code = cli.main(["train", "--quiet", *BASE, "--steps", "6", "--run-dir", str(run_dir), "checkpoint_every=2"])
    assert code == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert "disk full while writing" in line and "component_1.pt" in line and "bug worth reporting" not in line, line
    assert not list(run_dir.rglob(".*.tmp*"))
    monkeypatch.setattr(torch, "save", real_save)
    # A temporary that a killed run left behind is removed on resume.
    stale = run_dir / "checkpoints" / "step_00000002" / ".component_3.pt.tmp99999"
    stale.write_bytes(b"half")
    assert cli.main(["train", "--quiet", "--resume", "--run-dir", str(run_dir)]) == 0
    assert not list(run_dir.rglob(".*.tmp*")) and latest_checkpoint(run_dir).name == "step_00000006"


def test_a_read_only_run_directory_is_one_line(tmp_path, monkeypatch, capsys):
    real_open = os.open
    ro = tmp_path / "ro"
    ro.mkdir()

    def read_only(path, *a, **kw):  # what a read-only mount answers to any file created in it
        if str(path).startswith(str(ro)):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *a, **kw)

    monkeypatch.setattr(os, "open", read_only)
    assert cli.main(["train", "--quiet", *BASE, "--steps", "2", "--run-dir", str(ro)]) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert f"cannot write {ro / LOCK_NAME} (Read-only file system): choose a --run-dir you may write to" in line
    assert isinstance(explain_write_error(OSError(errno.ENOSPC, "No space left on device"), "x"), RunDirError)


# -- 7. Ctrl-C during the final evaluation keeps the last step's training -------------------------------------


def test_a_stop_during_the_final_evaluation_loses_no_training(tmp_path, monkeypatch):
    import interlock.training.loop as train_mod
    from interlock.training.runs import RunState, run_state

    extra = ["steps=6", "checkpoint_every=4", "eval_every=0"]
    full = run(config(tmp_path / "a", *extra))
    real = train_mod.evaluate

    def interrupted(*a, **kw):  # Ctrl-C while the final evaluation runs
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "evaluate", interrupted)
    cfg = config(tmp_path / "b", *extra)
    with pytest.raises(KeyboardInterrupt):
        run(cfg)
    monkeypatch.setattr(train_mod, "evaluate", real)
    assert latest_checkpoint(tmp_path / "b").name == "step_00000006"
    assert run_state(tmp_path / "b", cfg) == RunState.PARTIAL  # not reused as finished: its evaluation is missing
    resumed = run(cfg, resume=True)
    assert resumed.final == full.final and resumed.train_time_s == 0.0
    rows = read_metrics(tmp_path / "b")
    assert [r["step"] for r in rows if r["kind"] == "train"] == [2, 4, 6] and rows[-1]["kind"] == "eval"
    assert run_state(tmp_path / "b", cfg) == RunState.FINISHED


# -- 8. messages ----------------------------------------------------------------------------------------------


def test_messages_name_the_option_to_change(tmp_path, monkeypatch, capsys):
    from interlock.app.cli import _failure_line
    from interlock.runtime.launch import RankFailedError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["train", "--quiet", *BASE, "--steps", "2", "--run-dir", str(tmp_path / "c"), "device=cuda"]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "device=cuda:" in line and "use device=cpu" in line and "bug" not in line
    killed = _failure_line(RankFailedError("rank 1 of 2 was killed by signal 9 without raising an exception"),
                           config(tmp_path / "k", "steps=2"), tmp_path / "log.txt")
    assert "kill -9" in killed and "most likely" not in killed
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nname = 'x'\n")
    with pytest.raises(ValueError, match=f"config file {bad} is not valid TOML"):
        load_config(bad)
    with pytest.raises(ValueError, match=r"strategy=2-wise does not fit model.components=1: n=2 exceeds"):
        load_config(None, ["model.components=1", "steps=2"])
    values = apply_overrides({}, ["model.heads=[linear]", "model.partition=[5,2]"])
    assert values["model"] == {"heads": ["linear"], "partition": [5, 2]}


def test_reproduce_names_root_and_a_set_length_replaces_the_other(tmp_path):
    from interlock.reproduce import TABLES, reproduce
    from interlock.training.runs import RunConfigMismatch

    table = TABLES["dgl-table1"]
    _, runs, _ = table.plan("cpu")
    reproduce("dgl-table1", root=tmp_path, report_only=True, overrides=["steps=30"], stream=open(os.devnull, "w"))
    saved = json.loads((tmp_path / "cpu" / "reports" / "dgl-table1" / "configs" / f"{runs[0].key}_seed0.json").read_text())
    assert saved["steps"] == 30 and saved["epochs"] == 0
    run_dir = tmp_path / "cpu" / table.family / runs[0].key / "seed0"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({**saved, "seed": 7}))
    (run_dir / "checkpoints").mkdir()
    with pytest.raises(RunConfigMismatch, match="choose another --root"):
        reproduce("dgl-table1", root=tmp_path, report_only=True, overrides=["steps=30"], stream=open(os.devnull, "w"))


# -- 9. the GPU script stops only what it started ---------------------------------------------------------------


def test_gpu_script_kills_only_its_own_process_groups():
    text = (ROOT / "experiments" / "gpu_reproduce.sh").read_text()
    assert "pkill" not in text and "killall" not in text
    assert text.count("setsid timeout") == 2 and 'kill -TERM -- "-$g"' in text
