"""The relaxed search space's gradients against a brute-force reference on a tiny network (float64):
gates (1, 0) give local learning, (0, 1) end-to-end, anything else the exact affine mix (Eq. 4)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from interlock.search import SearchSpace, gates, mixed_gradients

L, M, D, CLASSES, B = 4, 2, 5, 3, 6


def tiny_space(seed: int = 0) -> SearchSpace:
    torch.manual_seed(seed)
    blocks = [nn.Sequential(nn.Linear(D, D), nn.Tanh()) for _ in range(L)]
    cands = [[nn.Linear(D, CLASSES), nn.Sequential(nn.Linear(D, 4), nn.Tanh(), nn.Linear(4, CLASSES))] for _ in range(L - 1)]
    return SearchSpace(blocks=blocks, candidates=cands, final_head=nn.Linear(D, CLASSES), head_names=("lin", "mlp")).double()


def reference_losses(space: SearchSpace, x, y, head_weights) -> list[torch.Tensor]:
    """L_1..L_L of the plain (ungated) network: every loss differentiable through every block below it."""
    losses, h = [], x
    for l, block in enumerate(space.blocks):
        h = block(h)
        if l < L - 1:
            losses.append(F.cross_entropy(sum(head_weights[l, m] * c(h) for m, c in enumerate(space.candidates[l])), y))
    losses.append(F.cross_entropy(space.final_head(h), y))
    return losses


def reference_grads(space, x, y, signal, head_weights) -> dict[str, torch.Tensor]:
    """Brute force: each dL_i/dtheta separately, combined as Eq. 4 unrolls:
    grad theta_j = sum_{i >= j} c_i * prod_{j <= m < i} s_m * dL_i/dtheta_j (c_i = w_i, c_L = 1);
    a head's weights get their own loss's gradient."""
    losses = reference_losses(space, x, y, head_weights)
    out = {}
    for j, block in enumerate(space.blocks):
        for name, p in block.named_parameters():
            g = torch.zeros_like(p)
            for i in range(j, L):
                c = signal[i, 0] if i < L - 1 else 1.0
                path = torch.prod(signal[j:i, 1]) if i > j else 1.0
                g = g + c * path * torch.autograd.grad(losses[i], p, retain_graph=True)[0]
            out[f"blocks.{j}.{name}"] = g
    for j in range(L - 1):
        for name, p in space.candidates[j].named_parameters():
            out[f"candidates.{j}.{name}"] = torch.autograd.grad(losses[j], p, retain_graph=True)[0]
    for name, p in space.final_head.named_parameters():
        out[f"final_head.{name}"] = torch.autograd.grad(losses[-1], p, retain_graph=True)[0]
    return out


def relaxed_grads(space, x, y, signal, head_weights) -> dict[str, torch.Tensor]:
    out = space(x, y, head_weights=head_weights, loss_fn=F.cross_entropy)
    return mixed_gradients(out, dict(space.named_parameters()), signal, create_graph=False)


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(B, D, generator=g, dtype=torch.float64), torch.randint(0, CLASSES, (B,), generator=g)


def _check(space, signal, head_weights):
    x, y = _data()
    got, want = relaxed_grads(space, x, y, signal, head_weights), reference_grads(space, x, y, signal, head_weights)
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-10, atol=1e-12, msg=k)
    return got


def test_gates_1_0_are_local_learning():
    space = tiny_space()
    signal = torch.tensor([[1.0, 0.0]] * (L - 1), dtype=torch.float64)
    head_weights = torch.tensor([[0.3, 0.7]] * (L - 1), dtype=torch.float64)
    got = _check(space, signal, head_weights)
    # Local learning: block j is trained by L_j alone (the top block by the final loss).
    x, y = _data()
    losses = reference_losses(space, x, y, head_weights)
    for j in range(L):
        torch.testing.assert_close(got[f"blocks.{j}.0.weight"],
                                   torch.autograd.grad(losses[j], space.blocks[j][0].weight, retain_graph=True)[0], rtol=0, atol=0)


def test_gates_0_1_are_end_to_end():
    space = tiny_space()
    signal = torch.tensor([[0.0, 1.0]] * (L - 1), dtype=torch.float64)
    head_weights = torch.tensor([[0.5, 0.5]] * (L - 1), dtype=torch.float64)
    got = _check(space, signal, head_weights)
    x, y = _data()
    final = reference_losses(space, x, y, head_weights)[-1]
    for j in range(L):
        torch.testing.assert_close(got[f"blocks.{j}.0.weight"],
                                   torch.autograd.grad(final, space.blocks[j][0].weight, retain_graph=True)[0], rtol=1e-12, atol=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_any_gates_give_the_exact_affine_mix(seed):
    torch.manual_seed(seed)
    space = tiny_space(seed)
    signal, head_weights = gates(torch.randn(L - 1, 2, dtype=torch.float64), torch.randn(L - 1, M, dtype=torch.float64))
    _check(space, signal, head_weights)


def test_each_block_runs_its_forward_once():
    space = tiny_space()
    calls = []
    for b in space.blocks:
        b.register_forward_hook(lambda m, i, o: calls.append(m))
    x, y = _data()
    signal, head_weights = gates(torch.zeros(L - 1, 2, dtype=torch.float64), torch.zeros(L - 1, M, dtype=torch.float64))
    mixed_gradients(space(x, y, head_weights=head_weights, loss_fn=F.cross_entropy), dict(space.named_parameters()), signal,
                    create_graph=False)
    assert calls == list(space.blocks)


def test_search_space_from_a_registry_model():
    space = SearchSpace.from_model("toy_cnn_strided", heads=("aux1", "aux2"), head_kw={"final_width": 8}, depth=3,
                                   image_size=8, num_classes=4)
    assert space.num_blocks == 3 and space.num_heads == 2 and len(space.candidates) == 2
    x = torch.randn(3, 3, 8, 8)
    assert space(x).shape == (3, 4)
    signal, head_weights = gates(torch.zeros(2, 2), torch.zeros(2, 2))
    out = space(x, torch.tensor([0, 1, 2]), head_weights=head_weights, loss_fn=F.cross_entropy)
    assert len(out.losses) == 3 and len(out.hs) == 4
    grads = mixed_gradients(out, dict(space.named_parameters()), signal, create_graph=False)
    assert grads.keys() == dict(space.named_parameters()).keys()
    assert all(g.abs().sum() > 0 for k, g in grads.items() if k.endswith("weight")), "a weight without gradient"
    with pytest.raises(ValueError, match="repeat a name"):
        SearchSpace.from_model("toy_cnn_strided", heads=("aux1", "aux1"), depth=3, image_size=8)
