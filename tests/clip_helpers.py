"""A small three-component network for the clipping and EMA tests, and what one rank of it returns."""

from __future__ import annotations

from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

import interlock as il

K, STEPS, MAX_NORM = 3, 3, 0.05


def parts(seed=0):
    torch.manual_seed(seed)
    blocks = [nn.Sequential(nn.Linear(6, 8), nn.Tanh()), nn.Sequential(nn.Linear(8, 8), nn.Tanh()), nn.Linear(8, 8)]
    heads = [None, None, nn.Linear(8, 4)]
    x, y = torch.randn(16, 6), torch.randint(0, 4, (16,))
    return blocks, heads, [(x.roll(s, 0), y.roll(s, 0)) for s in range(STEPS)]


def sgd(params):
    return torch.optim.SGD(params, lr=0.5)


def train(runtime: str, mode: str, **kw):
    """This process's parameters, pre-clip norms and EMA shadows after STEPS end-to-end steps."""
    blocks, heads, batches = parts()
    net = il.ComponentNet(blocks=blocks, heads=heads)
    engine = il.Engine(net, il.EndToEnd(), optimizer=sgd, loss_fn=nn.functional.cross_entropy, runtime=runtime,
                       clip_norm=MAX_NORM, clip_mode=mode, ema_decay=0.8, **kw)
    norms = []
    for x, y in batches:
        norms.append(list(engine.step(x if runtime == "local" or engine.rank == 0 else None, y).grad_norms))
    out = {k: {"params": [p.detach().clone() for p in net.component_parameters(k)],
               "ema": [s.clone() for s in engine.worker(k).ema.shadow]} for k in engine.local_components}
    engine.close()
    return out, norms


def rank_main() -> dict:
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    out = {mode: train("ranks", mode, timeout_s=60) for mode in ("global", "component")}
    dist.barrier()
    dist.destroy_process_group()
    return out
