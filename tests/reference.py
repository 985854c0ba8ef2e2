"""Brute-force references for the gradient contract, and small networks to test on.

The reference never looks at interlock's plans, schedules or workers: it runs one
ordinary forward pass through the whole network (so BatchNorm statistics move once),
differentiates each loss separately with full autograd, and combines the gradients as
DESIGN.md's contract states them.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
import torch.nn.functional as F

from interlock.network.net import ComponentNet


def mlp_parts(K: int, *, seed: int, width: int = 6, classes: int = 3, in_dim: int = 5):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    blocks = [nn.Sequential(nn.Linear(in_dim if k == 0 else width, width), nn.Tanh()) for k in range(K)]
    heads = [nn.Linear(width, classes) for _ in range(K)]
    x = torch.randn(8, in_dim, generator=g)
    y = torch.randint(0, classes, (8,), generator=g)
    return blocks, heads, x, y, F.cross_entropy


def bn_parts(K: int, *, seed: int, channels: int = 3, classes: int = 4):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    blocks = [
        nn.Sequential(nn.Conv2d(2 if k == 0 else channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU())
        for k in range(K)
    ]
    heads = [nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(channels * 4, classes)) for _ in range(K)]
    x = torch.randn(6, 2, 5, 5, generator=g)
    y = torch.randint(0, classes, (6,), generator=g)
    return blocks, heads, x, y, F.cross_entropy


def token_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1), y.flatten())  # (B*T, V) vs (B*T,)


def token_parts(K: int, *, seed: int, vocab: int = 7, dim: int = 6):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    blocks = [nn.Sequential(nn.Embedding(vocab, dim), nn.LayerNorm(dim))]
    blocks += [nn.Sequential(nn.Linear(dim, dim), nn.GELU()) for _ in range(K - 1)]
    heads = [nn.Linear(dim, vocab) for _ in range(K)]
    x = torch.randint(0, vocab, (3, 4), generator=g)  # (B, T) token ids
    y = torch.randint(0, vocab, (3, 4), generator=g)
    return blocks, heads, x, y, token_loss


def scalar_net(weights):
    """Components a_k = w_k * a_{k-1} (one weight each, no bias), final head the identity."""
    blocks = []
    for w in weights:
        lin = nn.Linear(1, 1, bias=False)
        with torch.no_grad():
            lin.weight.fill_(w)
        blocks.append(lin)
    return ComponentNet(blocks=blocks, heads=[None] * (len(weights) - 1) + [nn.Identity()])


def weights(net):
    return [b.weight.item() for b in net.blocks]


PARTS = {"mlp": mlp_parts, "bn": bn_parts, "tokens": token_parts}


def contract_grads(blocks, heads, x, y, loss_fn, *, n: int, mix: str, weights=None):
    """Gradients of every block and head parameter under Interlocking(n, mix), by brute force.

    Returns ({param: grad}, [unweighted loss floats]).
    """
    K = len(blocks)
    weights = weights or [1.0] * K
    acts, a = [], x
    for b in blocks:
        a = b(a)
        acts.append(a)
    losses = [None if h is None else loss_fn(h(acts[k]), y) for k, h in enumerate(heads)]
    weighted = [None if l is None else w * l for l, w in zip(losses, weights)]
    grads: dict[nn.Parameter, torch.Tensor] = {}
    for k, block in enumerate(blocks):
        m = min(k + n - 1, K - 1)
        sources = [m] if mix == "furthest" else list(range(k, m + 1))
        params = list(block.parameters())
        for j in sources:
            gs = torch.autograd.grad(weighted[j], params, retain_graph=True, allow_unused=True)
            for p, g in zip(params, gs):
                if g is not None:
                    grads[p] = grads[p] + g if p in grads else g
    for k, head in enumerate(heads):
        if head is not None:
            params = list(head.parameters())
            for p, g in zip(params, torch.autograd.grad(weighted[k], params, retain_graph=True)):
                grads[p] = g
    return grads, [None if l is None else l.item() for l in losses]


def reference_train(blocks, heads, batches, loss_fn, *, n: int, mix: str, make_opt, weights=None):
    """Train copies of blocks/heads for len(batches) steps with contract gradients; return (blocks, heads, losses)."""
    blocks, heads = copy.deepcopy(blocks), copy.deepcopy(heads)
    opts = []
    for b, h in zip(blocks, heads):
        params = list(b.parameters()) + ([] if h is None else list(h.parameters()))
        opts.append(make_opt(params))
    history = []
    for x, y in batches:
        grads, losses = contract_grads(blocks, heads, x, y, loss_fn, n=n, mix=mix, weights=weights)
        for opt in opts:
            for group in opt.param_groups:
                for p in group["params"]:
                    p.grad = grads.get(p)
            opt.step()
        history.append(losses)
    return blocks, heads, history


def state_of(modules) -> dict[str, torch.Tensor]:
    """All parameters and buffers of a list of modules (None skipped), keyed by position and name."""
    out = {}
    for i, m in enumerate(modules):
        if m is not None:
            for name, t in m.state_dict().items():
                out[f"{i}.{name}"] = t
    return out
