"""The SEDONA reproduction's arms, built from a hand-made search output: random alpha keeps the
learned heads at its new cuts, random beta keeps the learned cuts, the uniform arm is DGL's split,
every arm's config loads and builds, and the verdict reads the margin the other tables use."""

from __future__ import annotations

import json

import pytest
import torch

from interlock import models
from interlock.training.config import load_config
from interlock.models.assemble import choose_cuts
from interlock.network.net import partition_uniform
from interlock.reproduce.sedona import ARMS, RNG_OFFSET, Arm, arm_values, arms_for, verdict
from interlock.search.discretise import config_values, decide, discretised_config

HEADS = ["aux1", "aux2", "aux3", "aux4"]
# dgl_cnn has L = 6 blocks: 5 alpha and beta rows. softmax(alpha_l)_1 is largest at blocks 1, 3 and 4,
# so K = 4 cuts before blocks 1, 3, 4; beta's argmax per block: aux2, aux4, aux1, aux3, aux2.
ALPHA = [[2.0, 0.0], [-1.0, 0.0], [1.5, 0.0], [1.0, 0.0], [-3.0, 0.0]]
BETA = [[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0], [3.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 5.0, 0.0, 0.0]]
ARGMAX = {1: "aux2", 2: "aux4", 3: "aux1", 4: "aux3", 5: "aux2"}  # cut before block c -> argmax beta[c - 1]


def _result() -> dict:
    d = decide(torch.tensor(ALPHA), torch.tensor(BETA), HEADS, 4)
    return {"model": "dgl_cnn", "blocks": 6, "heads": HEADS, "alpha": ALPHA, "beta": BETA,
            "local_weight": torch.softmax(torch.tensor(ALPHA), -1)[:, 0].tolist(),
            "head_probs": torch.softmax(torch.tensor(BETA), -1).tolist(),
            "decisions": {"4": {"cuts": list(d.cuts), "heads": list(d.heads)}}}


def test_the_hand_made_search_decides_as_written():
    assert _result()["decisions"]["4"] == {"cuts": [1, 3, 4], "heads": ["aux2", "aux1", "aux3"]}


def test_arms_keep_what_they_should_and_draw_the_rest():
    result = _result()
    for seed in range(20):
        arms = arms_for(result, 4, seed)
        assert list(arms) == list(ARMS)
        assert arms["searched"] == Arm("searched", (1, 3, 4), ("aux2", "aux1", "aux3"), "local")
        assert arms["searched_2wise"] == Arm("searched_2wise", (1, 3, 4), ("aux2", "aux1", "aux3"), "2-wise")
        assert arms["uniform_mlp_sr"] == Arm("uniform_mlp_sr", None, "mlp_sr", "local")
        ra, rb = arms["random_alpha"], arms["random_beta"]
        # random alpha: K-1 distinct sorted cuts in 1..L-1, each with the head the search learned there
        assert len(ra.cuts) == 3 and list(ra.cuts) == sorted(set(ra.cuts)) and all(1 <= c <= 5 for c in ra.cuts)
        assert ra.heads == tuple(ARGMAX[c] for c in ra.cuts) and ra.strategy == "local"
        # random beta: the searched cuts, heads from the candidates
        assert rb.cuts == (1, 3, 4) and len(rb.heads) == 3 and set(rb.heads) <= set(HEADS) and rb.strategy == "local"
        assert arms_for(result, 4, seed) == arms  # seeded: the same draws every time
    draws = {(arms_for(result, 4, s)["random_alpha"].cuts, arms_for(result, 4, s)["random_beta"].heads) for s in range(20)}
    assert len(draws) > 5  # the seed changes the draws


def test_random_draws_follow_the_recorded_generator():
    import random

    rng = random.Random(RNG_OFFSET + 7)
    cuts = tuple(sorted(rng.sample(range(1, 6), 3)))
    heads = tuple(rng.choice(HEADS) for _ in range(3))
    arms = arms_for(_result(), 4, 7)
    assert (arms["random_alpha"].cuts, arms["random_beta"].heads) == (cuts, heads)


def test_every_arm_loads_and_builds_with_the_right_cuts_and_heads(tmp_path):
    base = load_config(None, ["preset=sedona-search-cpu", "steps=10"])
    result = _result()
    d = result["decisions"]["4"]
    from interlock.search.discretise import Decision

    discretised = config_values(discretised_config(base, Decision(tuple(d["cuts"]), tuple(d["heads"]))))
    for name, arm in arms_for(result, 4, 0).items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(arm_values(discretised, arm)))
        cfg = load_config(path, [])
        assert cfg.strategy == arm.strategy and cfg.model.components == 4 and cfg.steps == 10
        # the same recipe: only the model's cut, heads (and, for MLP-SR, head options) and the strategy differ
        assert (cfg.optim, cfg.lr, cfg.data, cfg.label_smoothing, cfg.model.kwargs) == (base.optim, base.lr, base.data, base.label_smoothing, base.model.kwargs)
        kw = {"num_classes": 10, "in_channels": 3, "image_size": 32, **cfg.model.kwargs}
        if arm.cuts is None:
            head_kw = {"max_features": 512} if arm.heads == "predsim" else {}  # SEDONA D.2: PredSim's 512 features on CIFAR-10
            assert cfg.model.partition == "uniform" and cfg.model.heads == arm.heads and cfg.model.head_kw == head_kw
            assert arm.heads == {"uniform_mlp_sr": "mlp_sr", "backprop": "pool_linear", "predsim": "predsim"}[name]
            cuts = choose_cuts("uniform", [None] * 6, 4)
            assert cuts == partition_uniform(6, 4) == (2, 4, 5)
        else:
            assert tuple(cfg.model.partition) == arm.cuts and tuple(cfg.model.heads) == arm.heads
            assert cfg.model.head_kw == base.model.head_kw
        net = models.create(cfg.model.name, components=4, partition=cfg.model.partition, heads=cfg.model.heads,
                            head_kw=cfg.model.head_kw, **kw)
        assert net.num_components == 4


def test_verdict_needs_the_difference_beyond_its_margin():
    assert verdict({"searched": [0.60, 0.61, 0.62], "uniform_mlp_sr": [0.55, 0.56, 0.57]}).startswith("confirmed")
    assert verdict({"searched": [0.55, 0.56, 0.57], "uniform_mlp_sr": [0.60, 0.61, 0.62]}).startswith("not confirmed: the uniform")
    assert verdict({"searched": [0.60, 0.65, 0.55], "uniform_mlp_sr": [0.59, 0.61, 0.57]}).startswith("not confirmed at this scale")
    assert verdict({"searched": [0.6]}).startswith("inconclusive")


@pytest.mark.parametrize("arm", [Arm("x", (2, 3, 5), ("aux1", "aux1", "aux4"), "local"), Arm("u", None, "mlp_sr", "local")])
def test_arm_values_leaves_the_base_alone(arm):
    base = {"model": {"name": "dgl_cnn", "partition": [1, 2, 3], "heads": ["aux1"] * 3, "head_kw": {"width": 0.25}}, "strategy": "local"}
    before = json.dumps(base)
    arm_values(base, arm)
    assert json.dumps(base) == before


def test_the_paper_scale_search_discretises_to_sedona_e2s_recipe():
    # What a GPU user runs: the search with preset sedona-search, its config-K4.json trains with E.2's values.
    from interlock.search.discretise import Decision

    search = load_config(None, ["preset=sedona-search"])
    e2 = load_config(None, ["preset=sedona-e2"])
    trained = discretised_config(search, Decision((4, 8, 12), ("aux1", "aux2", "aux3")))
    assert (trained.model.name, trained.model.components, trained.strategy) == ("vgg19_bn", 4, "local")
    assert (trained.optim, trained.lr, trained.data, trained.label_smoothing, trained.steps) == (e2.optim, e2.lr, e2.data, e2.label_smoothing, e2.steps)


def test_report_only_on_a_hand_made_search_writes_configs_and_a_report(tmp_path):
    from interlock.reproduce.sedona import reproduce_sedona
    from interlock.search.discretise import Decision

    folder = tmp_path / "search" / "seed0"
    folder.mkdir(parents=True)
    result = _result()
    (folder / "search.json").write_text(json.dumps(result))
    base = load_config(None, ["preset=sedona-search-cpu"])
    d = result["decisions"]["4"]
    (folder / "config-K4.json").write_text(json.dumps(config_values(discretised_config(base, Decision(tuple(d["cuts"]), tuple(d["heads"]))))))
    path = reproduce_sedona(seeds=[0, 1], root=tmp_path, train_overrides=["steps=5"], report_only=True, quiet=True)
    text = path.read_text()  # one search (seed 0's) serves every training seed
    assert "--seeds 0,1 " in text and "| 1 | searched | [1, 3, 4] | aux2, aux1, aux3 | - |" in text
    assert "| 0 | searched | [1, 3, 4] | aux2, aux1, aux3 | - |" in text and "| 0 | uniform_mlp_sr | uniform | mlp_sr | - |" in text
    assert "| 0 | backprop | uniform | pool_linear | - |" in text and "| 1 | predsim | uniform | predsim | - |" in text
    assert "inconclusive" in text and "none of the paper's" in text and "## Fig. 4" in text
    for seed in (0, 1):
        for name in ARMS:
            cfg = load_config(tmp_path / "configs" / f"{name}_seed{seed}.json", [])
            assert cfg.steps == 5 and cfg.seed == seed and cfg.run_dir == str(tmp_path / "train" / name / f"seed{seed}")


def test_the_search_honours_the_threads_option(monkeypatch, tmp_path):
    # interlock search threads=1 (a loaded 2-core machine: 2 threads per process ran 6x slower) was ignored.
    import interlock.search.run as run

    calls = []

    def stop(config):
        raise RuntimeError("stop")

    monkeypatch.setattr(run.torch, "set_num_threads", calls.append)
    monkeypatch.setattr(run, "build_search", stop)
    with pytest.raises(RuntimeError, match="stop"):
        run.run_search(load_config(None, ["preset=sedona-search-cpu", "threads=1", f"run_dir={tmp_path}"]))
    assert calls == [1]
