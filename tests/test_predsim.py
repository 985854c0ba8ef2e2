"""PredSim heads and loss (Nøkland & Eidnes 2019): hand computations and the gradient contract."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import interlock as il
from interlock.training.config import load_config
from interlock.heads.predsim import _pooled_size, similarity_loss, similarity_matrix


def test_similarity_matrix_and_loss_by_hand():
    # Rows centred and normalised: [1, 0] -> [1, -1]/sqrt2, [0, 1] -> [-1, 1]/sqrt2, [1, 1] -> 0.
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    rx = torch.tensor([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(similarity_matrix(x), rx)
    # One-hot labels of 3 classes, centred: same class 1, different class (-2 - 2 + 1) / 6 = -1/2.
    y = torch.tensor([0, 1, 0])
    ry = torch.tensor([[1.0, -0.5, 1.0], [-0.5, 1.0, -0.5], [1.0, -0.5, 1.0]])
    torch.testing.assert_close(similarity_matrix(F.one_hot(y, 3).float()), ry)
    # Squared differences 0 .25 1 / .25 0 .25 / 1 .25 1: sum 4 over 9 entries.
    assert similarity_loss(x, y, 3).item() == pytest.approx(4 / 9)


def test_feature_maps_are_summarised_by_each_channels_spread():
    # (B=2, C=4, H=2, W=1): channel c of sample b holds two values; their std is |a - b| / sqrt 2.
    x = torch.tensor([[[[0.0], [2.0]], [[0.0], [0.0]], [[1.0], [1.0]], [[0.0], [4.0]]],
                      [[[0.0], [0.0]], [[0.0], [2.0]], [[3.0], [3.0]], [[0.0], [0.0]]]])
    s = math.sqrt(2)
    stds = torch.tensor([[2 / s, 0, 0, 4 / s], [0, 2 / s, 0, 0]])
    torch.testing.assert_close(similarity_matrix(x), similarity_matrix(stds))
    # Three channels or fewer: flattened instead.
    x3 = x[:, :3]
    torch.testing.assert_close(similarity_matrix(x3), similarity_matrix(x3.flatten(1)))


def test_prediction_head_pools_like_the_reference_code():
    assert _pooled_size(64, 30, 30, 4096) == (8, 8)  # 64 * 8 * 8 = 4096
    assert _pooled_size(32, 8, 8, 4096) == (8, 8)  # small enough already
    assert _pooled_size(512, 4, 4, 4096) == (2, 4)  # height halved first
    head = il.heads.create("predsim", in_shape=(4, 6, 6), num_classes=3, max_features=36)
    assert head.pred.linear.in_features == 36 and torch.count_nonzero(head.pred.linear.weight) == 0
    with pytest.raises(ValueError, match="sim_weight=1.5 must be in"):
        il.heads.create("predsim", in_shape=(4, 6, 6), num_classes=3, sim_weight=1.5)
    with pytest.raises(ValueError, match="needs an image input"):
        il.heads.create("predsim", in_shape=(16,), num_classes=3)


def test_the_mixed_loss_of_a_tiny_batch_by_hand():
    torch.manual_seed(0)
    head = il.heads.create("predsim", in_shape=(2, 1, 1), num_classes=3)
    nn.init.normal_(head.pred.linear.weight)
    with torch.no_grad():
        head.sim.weight.zero_()
        head.sim.weight[:, :, 1, 1] = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # a 1x1 map: only the centre tap acts
    h = torch.tensor([[1.0, 0.0], [0.0, 0.5], [1.0, 0.5]]).reshape(3, 2, 1, 1)
    y = torch.tensor([0, 1, 0])
    # The similarity branch maps rows to [1, 0], [0, 1], [1, 1]: the hand example above, 4/9.
    logits = h.flatten(1) @ head.pred.linear.weight.t() + head.pred.linear.bias
    expected = 0.01 * F.cross_entropy(logits, y) + 0.99 * (4 / 9)
    got = head.local_loss(h, y, F.cross_entropy)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    torch.testing.assert_close(head(h), logits)  # forward is the prediction, for evaluation


def parts(K: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    blocks = [nn.Sequential(nn.Conv2d(2 if k == 0 else 4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()) for k in range(K)]
    heads = [il.heads.create("predsim", in_shape=(4, 5, 5), num_classes=3) for _ in range(K - 1)]
    heads.append(nn.Sequential(nn.Flatten(), nn.Linear(100, 3)))
    x = torch.randn(6, 2, 5, 5, generator=g)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    return blocks, heads, x, y


def brute_force_step(blocks, heads, x, y, n: int, lr: float) -> None:
    """One SGD step of Interlocking(n) with every loss differentiated separately by full autograd."""
    K = len(blocks)
    acts, a = [], x
    for b in blocks:
        a = b(a)
        acts.append(a)
    losses = [il.heads.local_loss(h, acts[k], y, F.cross_entropy) for k, h in enumerate(heads)]
    grads = {}
    for k in range(K):
        params = list(blocks[k].parameters())
        grads.update(zip(params, torch.autograd.grad(losses[min(k + n - 1, K - 1)], params, retain_graph=True)))
        params = list(heads[k].parameters())
        # Head k learns from its own loss on the detached activation.
        h_loss = il.heads.local_loss(heads[k], acts[k].detach(), y, F.cross_entropy)
        grads.update(zip(params, torch.autograd.grad(h_loss, params, allow_unused=True)))
    with torch.no_grad():
        for p, g in grads.items():
            if g is not None:
                p -= lr * g


@pytest.mark.parametrize("n", [1, 2])
def test_predsim_heads_train_under_the_gradient_contract(n):
    K, lr = 3, 0.1
    blocks, heads, x, y = parts(K, seed=n)
    ref_blocks, ref_heads = copy.deepcopy(blocks), copy.deepcopy(heads)
    net = il.ComponentNet(blocks=blocks, heads=heads)
    sim_before = heads[0].sim.weight.detach().clone()
    engine = il.Engine(net, il.Interlocking(n), optimizer=lambda p: torch.optim.SGD(p, lr=lr),
                                loss_fn=F.cross_entropy)
    engine.step(x, y)
    brute_force_step(ref_blocks, ref_heads, x, y, n, lr)
    for got, want in zip(net.state_dict().values(), nn.ModuleList([*ref_blocks, *ref_heads]).state_dict().values()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert not torch.equal(heads[0].sim.weight, sim_before)  # the similarity branch learned


def test_predsim_from_the_config_with_a_local_strategy(tmp_path):
    pytest.importorskip("sklearn", reason="the bundled digits data set needs scikit-learn")
    from interlock.training.loop import build_net, run
    from interlock.training.tasks import build_task

    base = ["data.name=digits", "data.batch_size=32", "data.eval_batch_size=500", "model.name=toy_cnn_strided",
            "model.components=3", "model.heads=predsim", "steps=3", "log_every=1"]
    cfg = load_config(None, base + ["loss.sim_weight=0.5", f"run_dir={tmp_path / 'a'}", "strategy=async-local"])
    net = build_net(cfg, build_task(cfg.data, seed=0))
    assert [type(h).__name__ for h in net.heads[:-1]] == ["PredSimHead", "PredSimHead"]
    assert all(h.sim_weight == 0.5 for h in net.heads[:-1])
    result = run(cfg)
    assert result.final["test_acc_1"] is not None and all(math.isfinite(r["loss_1"]) for r in result.history if r["kind"] == "train" and r["step"] <= 3)
    with pytest.raises(ValueError, match="loss.sim_weight=2.0: use a weight in"):
        load_config(None, base + ["loss.sim_weight=2"])
    cfg = load_config(None, base[:-3] + ["model.heads=linear", "loss.sim_weight=0.5", "steps=1"])
    with pytest.raises(ValueError, match="loss.sim_weight applies to heads with a similarity loss"):
        build_net(cfg, build_task(cfg.data, seed=0))
