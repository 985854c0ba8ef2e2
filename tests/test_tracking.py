"""TensorBoard and W&B (offline) receive the rows of metrics.jsonl, read back from the files they write."""

from __future__ import annotations

import json
import struct

import pytest

from interlock.training.config import load_config
from interlock.training.metrics import read_metrics
from interlock.training.tracking import TrackConfig, scalars
from interlock.training.loop import run

pytest.importorskip("sklearn", reason="the bundled digits data set needs scikit-learn")

BASE = ["data.name=digits", "data.batch_size=32", "data.eval_batch_size=200", "data.val_size=100",
        "model.name=toy_cnn_strided", "model.components=2", "strategy=local", "log_every=2", "eval_every=4"]


def expected(rows: list[dict]) -> dict[tuple[str, int], float]:
    return {(tag, r["step"]): v for r in rows for tag, v in scalars(r).items()}


def test_scalars_are_the_numeric_fields_by_kind():
    row = {"kind": "train", "step": 4, "loss_1": 0.5, "lr": 0.1, "data": "digits", "ok": True, "bad": None}
    assert scalars(row) == {"train/loss_1": 0.5, "train/lr": 0.1}


def test_tensorboard_events_hold_every_row(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    run(load_config(None, BASE + ["steps=8", f"run_dir={run_dir}", "track.tensorboard=true"]))
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    got = {(tag, e.step): e.value for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)}
    want = expected(read_metrics(run_dir))
    assert got.keys() == want.keys() and ("train/loss_2", 8) in got and ("eval/test_final_acc", 8) in got
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-6)  # TensorBoard stores float32


def _wandb_records(path):
    """The records of a W&B run file: a 7-byte header, then LevelDB-log records in 32 KiB blocks."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, parts = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        if kind == 0 and length == 0:
            break
        parts += data[pos:pos + length]
        pos += length
        if kind in (1, 4):  # FULL or LAST: one record complete
            record = pb.Record()
            record.ParseFromString(parts)
            yield record
            parts = b""


def test_wandb_offline_run_holds_every_row(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "run"
    run(load_config(None, BASE + ["steps=8", f"run_dir={run_dir}", "track.wandb=offline"]))
    files = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    got = {}
    for record in _wandb_records(files[0]):
        if record.WhichOneof("record_type") == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            step = items.pop("_step")
            got.update({(k, step): v for k, v in items.items() if not k.startswith("_")})
    assert got == pytest.approx(expected(read_metrics(run_dir)))
    assert (run_dir / "wandb_run_id").read_text().strip() in files[0].name


def test_a_tracker_that_is_not_installed_is_a_config_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ValueError, match=r"track.wandb=offline needs the wandb package: pip install 'interlock\[track\]'"):
        TrackConfig(wandb="offline")
    with pytest.raises(ValueError, match="track.wandb='yes'"):
        TrackConfig(wandb="yes")


def test_a_resumed_run_leaves_the_uninterrupted_runs_events(tmp_path):
    # metrics.jsonl drops the rows after the checkpoint on resume; TensorBoard must drop those events too.
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = load_config(None, BASE + ["steps=8", "checkpoint_every=3", f"run_dir={tmp_path / 'run'}", "track.tensorboard=true"])
    run(cfg, stop_after=5)  # killed after step 5: the checkpoint is at step 3, steps 4-5 are trained again
    run(cfg, resume=True)
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    steps = [e.step for e in acc.Scalars("train/loss_1")]
    assert steps == [r["step"] for r in read_metrics(tmp_path / "run") if r["kind"] == "train"] == [2, 4, 6, 8]
