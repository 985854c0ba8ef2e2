"""Tied networks for tests/test_ties.py and tests/test_hf.py, and what their spawned ranks run
(module level, so that the ranks can import it)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import interlock as il

STEPS = 3
STRATEGIES = {"end-to-end": il.EndToEnd(), "local": il.Local(), "2-wise": il.Interlocking(2), "2-wise-sum": il.Interlocking(2, "sum")}


def token_loss(logits, y):
    return F.cross_entropy(logits.flatten(0, 1), y.flatten())


def sgd(params):
    return torch.optim.SGD(params, lr=0.5)


def tied_net(seed: int = 0, *, vocab: int = 11, dim: int = 6, K: int = 3):
    """An embedding in component 1 whose matrix is also the output projection of the heads of
    components 2..K (tied copies); component 1's head is its own. float64."""
    torch.manual_seed(seed)
    emb = nn.Embedding(vocab, dim)
    blocks = [nn.Sequential(emb, nn.Linear(dim, dim), nn.Tanh())]
    blocks += [nn.Sequential(nn.Linear(dim, dim), nn.Tanh()) for _ in range(K - 1)]
    heads: list[nn.Module] = [nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, vocab))]
    copies = [emb.weight]
    for _ in range(K - 1):
        proj = nn.Linear(dim, vocab, bias=False)
        proj.weight = nn.Parameter(emb.weight.detach().clone())
        copies.append(proj.weight)
        heads.append(nn.Sequential(nn.LayerNorm(dim), proj))
    net = il.ComponentNet(blocks=blocks, heads=heads, ties=[copies]).double()
    g = torch.Generator().manual_seed(seed + 1)
    batches = [(torch.randint(0, vocab, (4, 5), generator=g), torch.randint(0, vocab, (4, 5), generator=g)) for _ in range(STEPS)]
    return net, batches


def tiny_gpt2(seed: int = 0, *, layers: int = 2):
    from transformers import GPT2Config, AutoModelForCausalLM

    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=layers, n_embd=16, n_head=2, vocab_size=40, n_positions=16, bos_token_id=0, eos_token_id=0,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return AutoModelForCausalLM.from_config(cfg).double()


def token_batches(vocab: int = 40, steps: int = STEPS, seed: int = 5):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, vocab, (3, 8), generator=g), torch.randint(0, vocab, (3, 8), generator=g)) for _ in range(steps)]


def states(net) -> dict:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def rank_main(K: int) -> dict:
    """Every tied case on this rank: the distributed engine's parameters of this rank's component."""
    from datetime import timedelta

    import torch.distributed as dist
    from interlock.engine import Engine

    dist.init_process_group("gloo", timeout=timedelta(seconds=60))  # once: the engines then leave it open
    out = {}
    for name, strategy in (STRATEGIES.items() if K == 3 else ()):
        net, batches = tied_net(K=K)
        engine = Engine(net, strategy, runtime="ranks", optimizer=sgd, loss_fn=token_loss, timeout_s=60,
                                   static_shapes=True, total_steps=STEPS)
        for i, (x, y) in enumerate(batches):
            engine.step(x, y)
            if i == 0:
                out[name + "/1"] = states(net)  # after one step: against brute-force autograd
        out[name] = states(net)
        engine.close()
    if K == 2:
        from interlock.network.hf import adapt

        net = adapt(tiny_gpt2(), components=2, heads="lm")
        engine = Engine(net, il.Interlocking(2), runtime="ranks", optimizer=sgd, loss_fn=token_loss, timeout_s=60,
                                   static_shapes=True, total_steps=STEPS)
        for x, y in token_batches():
            engine.step(x, y)
        out["hf-gpt2"] = states(net)
        engine.close()
    dist.barrier()
    dist.destroy_process_group()
    return out
