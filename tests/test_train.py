"""The training program: config, runs, evaluation, checkpoints, resume, divergence, CLI."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

import interlock as il
from interlock.app import cli
from interlock.training.checkpoint import latest_checkpoint
from interlock.training.config import load_config, parse_strategy
from interlock.training.metrics import read_metrics
from interlock.training.loop import TrainingDiverged, build_net, evaluate, run
from interlock.training.tasks import build_task

pytest.importorskip("sklearn", reason="the bundled digits data set needs scikit-learn")

# Small, real, bundled data (scikit-learn's handwritten digits) keeps these runs to seconds.
BASE = [
    "data.name=digits", "data.batch_size=32", "data.eval_batch_size=200", "data.val_size=100",
    "model.name=toy_cnn_strided", "model.components=3", "optim.lr=0.05", "log_every=2", "eval_every=4",
]


def config(tmp_path, *extra):
    return load_config(None, BASE + [f"run_dir={tmp_path / 'run'}", *extra])


def component_states(run_dir):
    folder = latest_checkpoint(run_dir)
    return {p.name: torch.load(p, weights_only=False) for p in sorted(folder.glob("component_*.pt"))}


def assert_states_equal(a, b):
    assert a.keys() == b.keys()
    for name in a:
        for part in ("block", "head"):
            for key, value in a[name][part].items():
                assert torch.equal(value, b[name][part][key]), f"{name} {part} {key}"


def without_timing(rows):
    drop = {"step_time_s", "samples_per_s", "predicted_parallel_step_time_s"}
    timing = ("busy_s_", "wait_s_", "comm_s_")
    return [{k: v for k, v in r.items() if k not in drop and not k.startswith(timing)} for r in rows]


def test_parse_strategy_round_trips_names():
    for s in (il.EndToEnd(), il.Local(), il.Interlocking(2), il.Interlocking(3, "sum")):
        assert parse_strategy(s.name) == s
    with pytest.raises(ValueError, match="unknown strategy 'two-wise'"):
        parse_strategy("two-wise")


@pytest.mark.parametrize("overrides,match", [
    (["steps=10", "epochs=1"], "exactly one of epochs"),
    (["steps=10", "optim.lr=-1"], r"optim.lr=-1.0: use a positive learning rate"),
    (["steps=10", "optim.momentom=0.9"], "unknown option 'optim.momentom'"),
    (["steps=10", "model.components=3", "loss_weights=1,1"], "loss_weights has 2 entries"),
    (["steps=10", "data.name=imagenet"], "data.name='imagenet'"),
    (["steps=ten"], "override steps='ten'"),
    (["steps=10", "strategy=4wise"], "unknown strategy"),
])
def test_bad_configs_name_the_option(overrides, match):
    with pytest.raises(ValueError, match=match):
        load_config(None, overrides)


def test_run_writes_config_metrics_and_checkpoint(tmp_path):
    cfg = config(tmp_path, "steps=8", "strategy=2-wise")
    result = run(cfg)
    run_dir = tmp_path / "run"
    assert json.loads((run_dir / "config.json").read_text())["strategy"] == "2-wise"
    rows = read_metrics(run_dir)
    train = [r for r in rows if r["kind"] == "train"]
    evals = [r for r in rows if r["kind"] == "eval"]
    assert [r["step"] for r in train] == [2, 4, 6, 8] and [r["step"] for r in evals] == [4, 8]
    assert all(set(r) >= {"loss_1", "loss_2", "loss_3", "lr", "step_time_s", "samples_per_s"} for r in train)
    final = evals[-1]
    assert result.final == final and result.steps == 8
    for key in ("test_acc_1", "test_acc_2", "test_acc_3", "test_ensemble_acc_2", "test_ensemble_acc_3", "val_final_acc"):
        assert 0.0 <= final[key] <= 1.0
    header = (run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "test_final_acc" in header and "loss_3" in header
    assert latest_checkpoint(run_dir).name == "step_00000008"


def test_evaluate_matches_a_direct_computation(tmp_path):
    cfg = config(tmp_path, "steps=4")
    task = build_task(cfg.data, seed=0)
    net = build_net(cfg, task)
    engine = il.Engine(net, il.Local(), optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
                                loss_fn=torch.nn.functional.cross_entropy)
    for x, y in list(task.train_batches(epoch=0, start_step=0))[:3]:
        engine.step(x, y)
    scores = evaluate(engine, task.eval_splits()["test"], num_classes=task.num_classes, is_text=False)
    xs, ys = zip(*task.eval_splits()["test"])
    x, y = torch.cat(xs), torch.cat(ys)
    net.eval()
    with torch.no_grad():
        outs = net.heads_forward(x)
    probs = [o.softmax(-1) for o in outs]
    for k, out in enumerate(outs):
        assert scores[f"acc_{k + 1}"] == pytest.approx((out.argmax(-1) == y).double().mean().item())
        assert scores[f"loss_{k + 1}"] == pytest.approx(torch.nn.functional.cross_entropy(out, y).item(), rel=1e-5)
    ens = (probs[1] + probs[2]) / 2  # top 2 heads
    assert scores["ensemble_acc_2"] == pytest.approx((ens.argmax(-1) == y).double().mean().item())
    assert scores["final_acc"] == scores["acc_3"]


def test_evaluation_streams_small_chunks_and_reduces_once_not_per_batch(tmp_path):
    # Distributed evaluation was slow and memory-hungry: a collective per batch serialised the
    # ranks, and each rank held whole eval batches of activations. Both engines now evaluate
    # in chunks of EVAL_CHUNK and sum the ensembles' probabilities once per buffer.
    cfg = config(tmp_path, "steps=1", "data.eval_batch_size=50")
    task = build_task(cfg.data, seed=0)
    engine = il.Engine(build_net(cfg, task), il.Local(), optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
                                loss_fn=torch.nn.functional.cross_entropy)
    reduced, chunks = [], []
    all_reduce, heads_forward = engine.all_reduce_sum, engine.heads_forward
    engine.all_reduce_sum = lambda t: reduced.append(tuple(t.shape)) or all_reduce(t)
    engine.heads_forward = lambda x: chunks.append(len(x)) or heads_forward(x)
    split = task.eval_splits()["test"]
    assert len(list(split)) == 8  # 360 test digits in batches of 50
    scores = evaluate(engine, split, num_classes=10, is_text=False, chunk=16)
    assert max(chunks) == 16 and sum(chunks) == 360
    assert reduced == [(3,), (3, 360, 10), (5,), (5,)]  # heads present, ensembles once, correct, losses
    assert 0 <= scores["ensemble_acc_3"] <= 1


def test_a_rank_that_does_not_feed_the_network_drops_the_images_but_keeps_the_labels(tmp_path):
    cfg = config(tmp_path, "steps=1")
    full, labels_only = build_task(cfg.data, seed=3), build_task(cfg.data, seed=3)
    labels_only.drop_inputs()
    for (x, y), (none, y2) in zip(full.train_batches(epoch=2, start_step=5), labels_only.train_batches(epoch=2, start_step=5)):
        assert none is None and x.shape[0] == len(y2) and torch.equal(y, y2)
    for split in ("val", "test"):
        pairs = list(zip(full.eval_splits()[split], labels_only.eval_splits()[split]))
        assert pairs and all(b[0] is None and torch.equal(a[1], b[1]) for a, b in pairs)
    image_bytes = lambda t: t.data.train_x.untyped_storage().nbytes() + t.data.test_x.untyped_storage().nbytes()
    assert image_bytes(labels_only) <= 2 * 64 and image_bytes(full) > 100_000  # one 8x8 image each, not all of them


@pytest.mark.parametrize("strategy", ["2-wise", "end-to-end"])
def test_resume_equals_uninterrupted(tmp_path, strategy):
    extra = ["steps=10", f"strategy={strategy}", "checkpoint_every=3", "lr.name=cosine", "lr.warmup_steps=2"]
    full = run(config(tmp_path / "a", *extra))
    interrupted = config(tmp_path / "b", *extra)
    run(interrupted, stop_after=7)  # as if killed after step 7: the newest checkpoint is at step 6
    assert latest_checkpoint(tmp_path / "b" / "run").name == "step_00000006"
    resumed = run(interrupted, resume=True)
    assert resumed.final == full.final
    # The divergence yardstick (the first step's losses) survives the interruption.
    meta = lambda d: json.loads((latest_checkpoint(d) / "meta.json").read_text())
    assert meta(tmp_path / "b" / "run")["first_losses"] == meta(tmp_path / "a" / "run")["first_losses"]
    assert all(1.5 < v < 3.5 for v in meta(tmp_path / "a" / "run")["first_losses"])
    assert_states_equal(component_states(tmp_path / "b" / "run"), component_states(tmp_path / "a" / "run"))
    assert without_timing(read_metrics(tmp_path / "b" / "run")) == without_timing(read_metrics(tmp_path / "a" / "run"))


def test_a_finished_run_is_not_overwritten(tmp_path):
    cfg = config(tmp_path, "steps=2")
    run(cfg)
    with pytest.raises(FileExistsError, match="pass --resume"):
        run(cfg)


def test_divergence_names_component_and_step_and_keeps_last_good_checkpoint(tmp_path):
    cfg = config(tmp_path, "steps=40", "optim.lr=1e12", "optim.momentum=0", "checkpoint_every=1", "strategy=local")
    with pytest.raises(TrainingDiverged, match=r"(loss|weights) of component \d .*(at|after) step \d+") as info:
        run(cfg)
    bad_step = int(re.search(r"step (\d+)", info.value.args[0]).group(1))
    folder = latest_checkpoint(tmp_path / "run")
    assert int(folder.name.split("_")[1]) < bad_step
    # The message names the checkpoint that really is kept.
    assert f"keeps its checkpoint of step {int(folder.name.split('_')[1])}" in info.value.args[0]
    for state in component_states(tmp_path / "run").values():
        assert all(torch.isfinite(v).all() for v in state["block"].values() if v.is_floating_point())


def test_a_finite_explosion_stops_the_run_and_claims_no_checkpoint_it_lacks(tmp_path):
    # Adam at lr=1e6: losses of about 1e14 from step 2 on, all finite.
    cfg = config(tmp_path, "steps=20", "optim.name=adam", "optim.lr=1e6", "strategy=local")
    with pytest.raises(TrainingDiverged) as info:
        run(cfg)
    message = info.value.args[0]
    match = re.match(r"loss of component (\d) is ([0-9.e+]+) at step 2, over 100 times its first-step loss \(([0-9.]+)\)", message)
    assert match, message
    value, first = float(match.group(2)), float(match.group(3))
    assert value > 100 * first and 1.5 < first < 3.5  # the untrained network's loss: about ln(10)
    assert "no checkpoint was written before it" in message and "keeps" not in message
    assert latest_checkpoint(tmp_path / "run") is None
    # The yardstick is the first step's loss: the same run with the check off trains on.
    assert run(config(tmp_path / "off", "steps=3", "optim.name=adam", "optim.lr=1e6", "strategy=local",
                      "divergence_ratio=0")).steps == 3


def test_non_finite_loss_is_caught_before_the_update(tmp_path, monkeypatch):
    # A loss that is NaN from the start: the run stops at step 1 naming the component.
    import interlock.training.loop as train_mod

    real = train_mod.make_loss_fn
    monkeypatch.setattr(train_mod, "make_loss_fn", lambda task, ls: lambda out, y: real(task, ls)(out, y) * float("nan"))
    with pytest.raises(TrainingDiverged, match=r"loss of component 1 is nan at step 1"):
        run(config(tmp_path, "steps=3", "strategy=local"))


def test_missing_cifar_fails_unless_a_fallback_is_asked_for_which_is_then_recorded(tmp_path, monkeypatch, capsys):
    # $INTERLOCK_DATA names a folder without CIFAR-10: the same clear failure as --data with that folder.
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("INTERLOCK_DATA", str(empty))
    howto = r"CIFAR-10 was not found in .*empty: get the binary version .*University of Toronto.*set data.fallback=digits"
    with pytest.raises(FileNotFoundError, match=howto):
        build_task(load_config(None, ["steps=1"]).data, seed=0)
    args = ["--quiet", "--steps", "2", "model.components=3", "data.batch_size=32", "data.eval_batch_size=200",
            "data.val_size=2000", "log_every=1"]
    assert cli.main(["train", *args, "--run-dir", str(tmp_path / "refused")]) == 2
    assert re.search(howto, capsys.readouterr().err)
    assert not (tmp_path / "refused" / "config.json").exists()

    # Asked for: the run says what it trained on, in config.json, metrics and the plot title.
    titles = []
    import interlock.app.plots as plots_mod

    monkeypatch.setattr(plots_mod, "learning_curves_png", lambda runs, path, *, title, split: titles.append(title) or path)
    assert cli.main(["compare", *args, "data.fallback=digits", "--strategies", "local", "--run-dir", str(tmp_path / "cmp")]) == 0
    table = capsys.readouterr().out
    run_dir = tmp_path / "cmp" / "local" / "seed0"
    saved = json.loads((run_dir / "config.json").read_text())["data"]
    assert saved["name"] == "digits" and saved["substitute_for"] == "cifar10" and saved["fallback"] == "digits"
    assert saved["val_size"] == 143  # the CIFAR-sized validation split shrinks to 10% of the 1437 digits
    evals = [r for r in read_metrics(run_dir) if r["kind"] == "eval"]
    assert evals and all(r["data"] == "digits (fallback: cifar10 not found)" for r in evals)
    assert titles == ["toy_cnn, K=3, digits (fallback: cifar10 not found)"]
    assert "digits (fallback: cifar10 not found)" in table
    summary = json.loads((tmp_path / "cmp" / "summary.json").read_text())
    assert summary["config"]["data"]["name"] == "digits"


def test_explicit_missing_data_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_task(load_config(None, ["steps=1", f"data.root={tmp_path / 'nope'}"]).data, seed=0)


def test_cli_train_and_compare(tmp_path, capsys):
    args = ["--quiet", "--steps", "4", *BASE, "eval_every=0"]
    assert cli.main(["train", *args, "--run-dir", str(tmp_path / "one"), "--strategy", "local"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["strategy"] == "local" and 0 <= out["test_final_acc"] <= 1
    assert cli.main(["compare", *args, "--run-dir", str(tmp_path / "cmp"), "--strategies", "end-to-end,2-wise", "--seeds", "0,1"]) == 0
    table = capsys.readouterr().out
    assert "| end-to-end |" in table and "| 2-wise |" in table and "±" in table
    summary = json.loads((tmp_path / "cmp" / "summary.json").read_text())
    assert len(summary["results"]["2-wise"]) == 2
    assert (tmp_path / "cmp" / "curves.png").stat().st_size > 10_000
    # A second compare reuses the finished runs instead of training again.
    assert cli.main(["compare", *args, "--run-dir", str(tmp_path / "cmp"), "--strategies", "end-to-end,2-wise", "--seeds", "0,1"]) == 0
    assert capsys.readouterr().out.count("| 2-wise |") == 1
    assert cli.main(["train", *args, "--run-dir", str(tmp_path / "one"), "--strategy", "local"]) == 2
    assert "pass --resume" in capsys.readouterr().err


def test_losses_are_finite_and_decrease_on_real_digits(tmp_path):
    result = run(config(tmp_path, "steps=60", "strategy=2-wise", "eval_every=0", "log_every=10"))
    train = [r for r in result.history if r["kind"] == "train"]
    assert all(math.isfinite(r["loss_3"]) for r in train)
    assert train[-1]["loss_3"] < train[0]["loss_3"]
    assert result.final["test_final_acc"] > 0.5  # ten classes: chance is 0.1


def test_distributed_training_equals_simulated_and_resumes_a_simulated_checkpoint(tmp_path):
    # One process per component (gloo, one thread each) gives the simulated run's numbers
    # exactly; and a run interrupted on one engine resumes on the other.
    from interlock.app.distributed_run import run_distributed

    # (The same evaluation chunks on both engines: data.eval_chunk's default differs between them.)
    extra = ["steps=6", "strategy=2-wise", "checkpoint_every=3", "threads=1", "data.eval_chunk=32"]
    simulated = run(config(tmp_path / "sim", *extra))
    distributed = run_distributed(config(tmp_path / "dist", *extra, "engine=distributed"), resume=False)
    assert distributed == simulated.final
    assert_states_equal(component_states(tmp_path / "dist" / "run"), component_states(tmp_path / "sim" / "run"))

    interrupted = config(tmp_path / "mixed", *extra)
    run(interrupted, stop_after=4)  # newest checkpoint: step 3, written by the simulated engine
    resumed = run_distributed(config(tmp_path / "mixed", *extra, "engine=distributed"), resume=True)
    assert resumed == simulated.final
    assert_states_equal(component_states(tmp_path / "mixed" / "run"), component_states(tmp_path / "sim" / "run"))


def test_trace_and_component_times_are_written(tmp_path):
    result = run(config(tmp_path, "steps=5", "strategy=2-wise", "trace_steps=2", "eval_every=0"))
    run_dir = tmp_path / "run"
    events = [e for e in json.loads((run_dir / "trace.json").read_text())["traceEvents"] if e.get("ph") == "X"]
    assert {e["tid"] for e in events} == {1, 2, 3}  # one row per component
    assert sum(e["name"] == "Update" for e in events) == 3 * 2  # two traced steps of three components
    assert (run_dir / "trace.png").stat().st_size > 5_000
    row = next(r for r in result.history if r["kind"] == "train")
    assert all(row[f"busy_s_per_step_{k}"] > 0 for k in (1, 2, 3))
    assert all(row[f"wait_s_per_step_{k}"] >= 0 and row[f"comm_s_per_step_{k}"] >= 0 for k in (1, 2, 3))
    assert 0 < row["predicted_parallel_step_time_s"] < row["step_time_s"]


def test_language_model_trains_from_the_command_line(tmp_path, capsys):
    args = ["train", "--quiet", "--steps", "4", "--run-dir", str(tmp_path / "lm"), "--strategy", "2-wise",
            "data.name=shakespeare", "data.batch_size=4", "data.block_size=16", "data.eval_batches=2",
            "data.eval_batch_size=8", "data.eval_text=wikitext2", "model.name=gpt", "model.components=2",
            "model.heads=transformer", "model.kwargs.n_layer=2", "model.kwargs.n_head=2", "model.kwargs.n_embd=16",
            "optim.name=adam", "optim.lr=1e-3", "lr.name=inverse_sqrt", "lr.warmup_steps=2", "threads=1"]
    assert cli.main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # A 66-symbol vocabulary (65 characters + <unk>): an untrained model's perplexity is about 66.
    assert 20 < out["test_final_ppl"] < 80 and out["wikitext2_final_ppl"] > 1
    assert math.isclose(out["test_final_ppl"], math.exp(out["test_final_loss"]), rel_tol=1e-9)


def test_heads_command_reports_costs(capsys):
    assert cli.main(["heads", "dgl_cnn", "width=0.25", "--components", "2", "--heads", "mlp_sr"]) == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("| 1 ") or l.startswith("| 2 ")]
    assert len(lines) == 2 and all(l.count("%") == 2 for l in lines)


def test_losses_stay_on_the_device_until_a_log_row_and_divergence_names_the_step_it_happened(tmp_path, monkeypatch):
    # The loop copies the losses to the host once per log row (plus the first step's yardstick),
    # not once per step; a divergence is still reported at the step it happened.
    from interlock.engine import Losses

    reads = []
    real = Losses._values

    def counting(self):
        if self._floats is None:
            reads.append(1)
        return real(self)

    monkeypatch.setattr(Losses, "_values", counting)
    run(config(tmp_path / "ok", "steps=10", "strategy=2-wise", "log_every=5", "eval_every=0"))
    assert len(reads) == 1  # the first step's yardstick; the log rows stack the tensors instead
    import interlock.training.loop as train_mod

    loss_fn = train_mod.make_loss_fn
    monkeypatch.setattr(train_mod, "make_loss_fn", lambda task, ls: lambda out, y: loss_fn(task, ls)(out, y) * float("nan"))
    with pytest.raises(TrainingDiverged, match=r"loss of component 1 is nan at step 1"):
        run(config(tmp_path / "nan", "steps=10", "strategy=local", "log_every=5", "eval_every=0"))


def test_step_time_counts_the_device_finishing_a_window_once(tmp_path, monkeypatch):
    # On a GPU a step returns once its kernels are launched: the loop waits for the device where a
    # log row, evaluation or checkpoint reads results anyway, and counts the wait as training time.
    # A stand-in wait of 0.3 s: with a log row every 2 steps each row's step time grows by 0.15 s,
    # and evaluation or a checkpoint at a logged step waits no second time.
    import time as time_mod

    from interlock.measure import timing

    waits = []

    def slow_device(device):
        waits.append(str(device))
        time_mod.sleep(0.3)

    monkeypatch.setattr(timing, "settle", slow_device)
    result = run(config(tmp_path, "steps=8", "checkpoint_every=4"))
    rows = [r for r in read_metrics(tmp_path / "run") if r["kind"] == "train"]
    assert [r["step"] for r in rows] == [2, 4, 6, 8]
    assert waits == ["cpu"] * 4  # one per log row: step 4's evaluation and checkpoint found it settled
    assert all(r["step_time_s"] >= 0.15 for r in rows)
    assert result.train_time_s >= 4 * 0.3


def test_microbatches_from_the_config(tmp_path):
    result = run(config(tmp_path, "steps=4", "strategy=2-wise", "microbatches=2", "eval_every=0"))
    assert result.steps == 4 and 0 <= result.final["test_final_acc"] <= 1
    for bad, match in (("microbatches=3", "does not divide data.batch_size=32"), ("microbatches=0", "use an integer m >= 1")):
        with pytest.raises(ValueError, match=match):
            config(tmp_path, "steps=4", bad)
    with pytest.raises(ValueError, match="trains without micro-batches"):
        config(tmp_path, "steps=4", "strategy=hogwild", "microbatches=2")


def test_split_backward_from_the_config_changes_the_schedule_not_the_numbers(tmp_path):
    # One stream per component (2-wise, furthest): the split weight pass from the kept gradients is
    # the one-pass backward's arithmetic, bit for bit.
    split = run(config(tmp_path / "split", "steps=3", "strategy=2-wise", "eval_every=0"))
    onepass = run(config(tmp_path / "one", "steps=3", "strategy=2-wise", "eval_every=0", "split_backward=false"))
    assert split.final == onepass.final
    assert_states_equal(component_states(tmp_path / "split" / "run"), component_states(tmp_path / "one" / "run"))
