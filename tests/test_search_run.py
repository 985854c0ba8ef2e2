"""The search end to end on the bundled digits (seconds): resume equals uninterrupted, the outputs,
discretisation on hand-set alpha/beta, and a discretised config training identically on the
simulated and the distributed engine."""

from __future__ import annotations

import json

import pytest
import torch

from interlock.app.cli import main
from interlock.training.config import load_config
from interlock.training.metrics import read_metrics
from interlock.search.discretise import Decision, config_values, decide, discretised_config
from interlock.search.run import run_search

pytest.importorskip("sklearn", reason="the bundled digits data set needs scikit-learn")

SEARCH = [
    "data.name=digits", "data.batch_size=32", "model.name=toy_cnn_strided", "model.kwargs.depth=4",
    'model.head_kw={"final_width": 16}', "search.heads=aux1,aux2", "search.pretrain_steps=4", "search.snapshot_every=2",
    "search.memory_size=2", "search.meta_steps=3", "search.inner_steps=2", "search.val_batch_size=64",
    "search.checkpoint_every=2", "search.log_every=1", "optim.lr=0.05", "lr.name=cosine", "steps=4", "strategy=local",
    "label_smoothing=0.1", "threads=1",
]


def test_decide_cuts_after_the_blocks_that_most_want_their_own_loss():
    # softmax(alpha_l)_1 for blocks 1..5: 0.27, 0.88, 0.5, 0.95, 0.12 -> K=3 cuts after blocks 2 and 4.
    alpha = torch.tensor([[-1.0, 0.0], [2.0, 0.0], [0.0, 0.0], [3.0, 0.0], [-2.0, 0.0]])
    beta = torch.tensor([[0.0, 1.0, 0.0], [5.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.1, 2.0], [1.0, 0.0, 0.0]])
    names = ("aux1", "aux2", "aux3")
    assert decide(alpha, beta, names, 3) == Decision(cuts=(2, 4), heads=("aux1", "aux3"))
    assert decide(alpha, beta, names, 2) == Decision(cuts=(4,), heads=("aux3",))
    assert decide(alpha, beta, names, 6) == Decision(cuts=(1, 2, 3, 4, 5), heads=("aux2", "aux1", "aux3", "aux3", "aux1"))
    assert decide(alpha, beta, names, 1) == Decision(cuts=(), heads=())
    with pytest.raises(ValueError, match="use K in 1..6"):
        decide(alpha, beta, names, 7)


def test_discretised_config_is_an_ordinary_config_that_trains_on_both_engines(tmp_path):
    from interlock.app.distributed_run import run_distributed
    from interlock.training.loop import run

    base = load_config(None, SEARCH + ["data.val_size=100", "eval_every=0", "data.eval_chunk=32", "checkpoint_every=4"])
    config = discretised_config(base, Decision(cuts=(1, 3), heads=("aux2", "aux1")), run_dir=str(tmp_path / "sim"))
    assert (config.model.components, config.model.partition, config.model.heads) == (3, [1, 3], ["aux2", "aux1"])
    path = tmp_path / "config-K3.json"
    path.write_text(json.dumps(config_values(config)))
    assert "search" not in json.loads(path.read_text())
    sim = run(load_config(path, []))
    dist = run_distributed(load_config(path, [f"run_dir={tmp_path / 'dist'}", "engine=distributed"]), resume=False)
    assert dist == sim.final
    for k in (1, 2, 3):
        a = torch.load(tmp_path / "sim" / "checkpoints" / "step_00000004" / f"component_{k}.pt", weights_only=False)
        b = torch.load(tmp_path / "dist" / "checkpoints" / "step_00000004" / f"component_{k}.pt", weights_only=False)
        for part in ("block", "head"):
            for name, t in a[part].items():
                assert torch.equal(t, b[part][name]), (k, part, name)


def test_search_resume_equals_uninterrupted_and_writes_its_outputs(tmp_path):
    whole = load_config(None, SEARCH + [f"run_dir={tmp_path / 'whole'}"])
    full = run_search(whole, components=[2, 3])
    cut = load_config(None, SEARCH + [f"run_dir={tmp_path / 'cut'}"])
    run_search(cut, stop_after=5)  # pretraining done, one meta step: the newest checkpoint is at step 4
    assert json.loads((tmp_path / "cut" / "search.json").read_text())["meta_steps_done"] == 0
    args = ["search", "--resume", "--run-dir", str(tmp_path / "cut"), "--components", "2,3", "--quiet"]
    assert main(args) == 0
    resumed = json.loads((tmp_path / "cut" / "search.json").read_text())
    assert resumed["alpha"] == full["alpha"] and resumed["beta"] == full["beta"]
    assert resumed["decisions"] == full["decisions"]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "step_time_s"} for r in rows]
    assert strip(read_metrics(tmp_path / "cut")) == strip(read_metrics(tmp_path / "whole"))
    for name in ("search.png", "config-K2.json", "config-K3.json"):
        assert (tmp_path / "whole" / name).exists()
    k3 = json.loads((tmp_path / "whole" / "config-K3.json").read_text())
    assert k3["model"]["partition"] == full["decisions"]["3"]["cuts"] and len(k3["model"]["heads"]) == 2
    assert full["meta_steps_done"] == 3 and len(full["alpha"]) == 3 and len(full["beta"][0]) == 2
    rows = read_metrics(tmp_path / "whole")
    assert [(r["kind"], r["step"]) for r in rows] == [("pretrain", 2), ("pretrain", 4), ("meta", 5), ("meta", 6), ("meta", 7)]
    assert main(["search", *SEARCH, f"--run-dir={tmp_path / 'whole'}", "--quiet"]) == 2  # refuses to overwrite a search
