"""Your own model and data in the training program: Dataset, DataLoader and batch lists, resumed
mid-epoch as if uninterrupted; importable factories on the command line; distributed runs with on_progress."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import DataLoader

from interlock.app.cli import main
from interlock.training.config import load_config
from interlock.data.user import user_task
from interlock.training.loop import run
import user_factories as U


def net():
    torch.manual_seed(0)  # a user's model starts from the user's weights: the same ones in every run compared
    return U.MyNet()

BASE = ["model.components=3", "model.heads=linear", "model.partition=uniform", "steps=9", "data.batch_size=8", "optim.lr=0.05",
        "log_every=3", "eval_every=0", "checkpoint_every=4", "strategy=2-wise", "threads=1"]


def config(run_dir, *extra):
    return load_config(None, [*BASE, f"run_dir={run_dir}", *extra])


def params(result_dir) -> dict:
    from interlock.training.checkpoint import latest_checkpoint

    folder = latest_checkpoint(result_dir)
    return {f"{p.name}:{k}": v for p in sorted(folder.glob("component_*.pt"))
            for k, v in torch.load(p, weights_only=False)["block"].items()}


@pytest.mark.parametrize("kind", ["dataset", "loader", "list"])
def test_your_dataset_resumed_mid_epoch_equals_the_uninterrupted_run(tmp_path, kind):
    def data():
        ds = U.Blobs(60)  # 7 batches of 8 per epoch: 9 steps cross an epoch, the checkpoint at 4 is mid-epoch
        if kind == "loader":
            return {"train": DataLoader(ds, batch_size=8, shuffle=True), "test": U.Blobs(20, seed=1)}
        if kind == "list":
            return [(ds.x[i : i + 8], ds.y[i : i + 8]) for i in range(0, 56, 8)]
        return {"train": ds, "test": U.Blobs(20, seed=1)}

    whole = run(config(tmp_path / "whole"), model=net(), data=data())
    run(config(tmp_path / "cut"), model=net(), data=data(), stop_after=6)
    resumed = run(config(tmp_path / "cut"), model=net(), data=data(), resume=True)
    assert resumed.final == {**whole.final} and resumed.steps == 9
    a, b = params(tmp_path / "whole"), params(tmp_path / "cut")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    saved = json.loads((tmp_path / "cut" / "config.json").read_text())
    assert saved["model"]["factory"] == saved["data"]["factory"] == "(passed to train.run)"
    split = "test" if kind != "list" else "train"  # a batch list has no test split: its first batches are scored
    assert whole.final[f"{split}_final_acc"] is not None and whole.final[f"{split}_acc_1"] is not None
    meta = json.loads(next((tmp_path / "cut" / "checkpoints").glob("step_00000009/meta.json")).read_text())
    assert meta["data"]["epoch"] == 1 and meta["data"]["batch"] == 2


def test_the_seeded_order_is_a_function_of_seed_and_epoch(tmp_path):
    cfg = config(tmp_path).data
    t = user_task(U.Blobs(40), cfg, seed=3)
    first = [y for _, y in t.train_batches(epoch=1, start_step=0)]
    again = [y for _, y in user_task(U.Blobs(40), cfg, seed=3).train_batches(epoch=1, start_step=2)]
    assert all(torch.equal(a, b) for a, b in zip(first[2:], again)) and len(first) == 5
    other = [y for _, y in t.train_batches(epoch=2, start_step=0)]
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


def test_bad_data_is_refused_with_what_to_change(tmp_path):
    cfg = config(tmp_path).data
    with pytest.raises(ValueError, match="one-pass iterator"):
        user_task(iter([(torch.zeros(8, 4), torch.zeros(8))]), cfg, seed=0)
    with pytest.raises(ValueError, match="fewer than one batch"):
        user_task(U.Blobs(4), cfg, seed=0)
    with pytest.raises(ValueError, match="name them train, val and test"):
        user_task({"train": U.Blobs(40), "dev": U.Blobs(40)}, cfg, seed=0)
    run(config(tmp_path / "r"), model=net(), data=U.Blobs(60), stop_after=5)
    with pytest.raises(ValueError, match="data of 60 examples"):
        run(config(tmp_path / "r"), model=net(), data=U.Blobs(64), resume=True)


def test_factories_on_the_command_line_train_resume_and_compare(tmp_path, monkeypatch, capsys):
    args = ["model.factory=user_factories:build", "data.factory=user_factories:make", "data.kwargs.n=64", "model.kwargs.width=8",
            "model.partition=flops"]
    flat = [a for a in BASE if not a.startswith("model.partition")]
    assert main(["train", *flat, *args, f"run_dir={tmp_path / 'a'}", "steps=4"]) == 0
    assert main(["train", "--resume", "--run-dir", str(tmp_path / "a"), "steps=6"]) == 0
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert saved["model"]["factory"] == "user_factories:build" and saved["steps"] == 6
    rows = [json.loads(l) for l in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["kind"] == "eval" and rows[-1]["step"] == 6 and rows[-1]["test_ensemble_acc_3"] is not None
    assert main(["compare", *flat, *args, "steps=3", "--strategies", "end-to-end,local", "--seeds", "0",
                 "--run-dir", str(tmp_path / "cmp")]) == 0
    assert "user_factories:build" in (tmp_path / "cmp" / "summary.md").read_text() or (tmp_path / "cmp" / "curves.png").exists()
    # One process per component, each importing the factories; the same parameters as in one process.
    assert main(["train", *flat, *args, f"run_dir={tmp_path / 'd'}", "steps=4", "--engine", "distributed"]) == 0
    assert main(["train", *flat, *args, f"run_dir={tmp_path / 's'}", "steps=4"]) == 0
    a, b = params(tmp_path / "d"), params(tmp_path / "s")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    capsys.readouterr()
    assert main(["train", *flat, "model.factory=user_factories:nothing", "data.factory=user_factories:make",
                 f"run_dir={tmp_path / 'b'}"]) == 2
    assert "has no nothing" in capsys.readouterr().err


def test_distributed_run_of_your_model_and_data_fires_on_progress_and_equals_simulated(tmp_path):
    rows = []
    sim = run(config(tmp_path / "sim"), model=net(), data=U.make())
    dist = run(config(tmp_path / "dist", "engine=distributed"), model=net(), data=U.make(), on_progress=rows.append)
    assert [r["step"] for r in rows if r["kind"] == "train"] == [3, 6, 9]
    assert rows[-1]["kind"] == "eval" and rows[-1] == dist.final
    assert dist.final["test_final_acc"] == sim.final["test_final_acc"]
    a, b = params(tmp_path / "sim"), params(tmp_path / "dist")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_your_model_split_at_module_paths_or_by_measured_time(tmp_path):
    by_points = run(config(tmp_path / "p", "model.partition=body.0,body.2", "steps=3"), model=net(), data=U.make())
    by_time = run(config(tmp_path / "t", "model.partition=time", "steps=3"), model=net(), data=U.make())
    assert by_points.final["test_acc_3"] is not None and by_time.final["test_acc_3"] is not None
    with pytest.raises(ValueError, match="applies to your own model"):
        run(load_config(None, ["model.name=dgl_cnn", "model.components=2", "model.partition=time", "steps=1",
                               "data.name=digits", f"run_dir={tmp_path / 'r'}"]))
