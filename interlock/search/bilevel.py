"""SEDONA's bilevel optimisation (Pyeon et al. 2021, Alg. 1), functionally over parameter dicts.

One outer step, from a snapshot theta_0 at training step s:

1. T inner steps: theta_{t+1} = SGD(theta_t, grad of the relaxed network at (alpha, beta)), with
   momentum, weight decay and the LR schedule at step s + t, each kept differentiable w.r.t.
   (alpha, beta) (``create_graph``: the inner gradients are functions of the gates);
2. the meta-loss: the final classifier's loss at theta_T on *validation* batches, and its
   gradient w.r.t. (alpha, beta) through all T updates;
3. (caller) Adam updates (alpha, beta); then one ordinary SGD step from theta_0 with the new
   gates gives the snapshot at step s + 1.

The weights live in plain dicts and run through ``torch.func.functional_call``, so the module's
own parameters are never touched and every intermediate theta_t stays in the autograd graph.
BatchNorm runs in training mode throughout (the meta-loss uses batch statistics, so it is a
differentiable function of (alpha, beta); the authors' code scores it with running statistics,
which depend on (alpha, beta) without a gradient). Running statistics of the T inner steps are
updated on copies and discarded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch.func import functional_call

from .memory import Snapshot
from .relax import LossFn, SearchSpace, gates, mixed_gradients

__all__ = ["InnerSGD", "MetaResult", "sgd_step", "relaxed_gradients", "meta_gradient", "ordinary_step", "final_loss", "snapshot_of"]

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class InnerSGD:
    """The weights' optimiser: SGD as ``torch.optim.SGD`` (L2 weight decay, heavy-ball momentum),
    learning rate ``lr * schedule(step)``."""

    lr: float
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: Callable[[int], float] = lambda step: 1.0

    def lr_at(self, step: int) -> float:
        return self.lr * self.schedule(step)


def sgd_step(params: dict, grads: dict, momentum: dict | None, *, lr: float, opt: InnerSGD) -> tuple[dict, dict]:
    """(params, momentum) after one SGD step; differentiable when the inputs are.

    torch.optim.SGD: d = g + wd * p; buf = d on the first step, else mu * buf + d; p -= lr * buf.
    """
    new_p, new_m = {}, {}
    for k, p in params.items():
        d = grads[k] + opt.weight_decay * p if opt.weight_decay else grads[k]
        buf = d if momentum is None or opt.momentum == 0 else opt.momentum * momentum[k] + d
        new_m[k] = buf
        new_p[k] = p - lr * buf
    return new_p, new_m


def relaxed_gradients(space: SearchSpace, params: dict, buffers: dict, batch: Batch, signal: torch.Tensor,
                      head_weights: torch.Tensor, loss_fn: LossFn, *, create_graph: bool) -> tuple[dict, torch.Tensor]:
    """Eq. 4's gradients of every weight at ``params`` on ``batch``, and the per-block losses (L,)."""
    x, y = batch
    out = functional_call(space, {**params, **buffers}, (x, y), {"head_weights": head_weights, "loss_fn": loss_fn})
    grads = mixed_gradients(out, params, signal, create_graph=create_graph)
    return grads, torch.stack([l.detach() for l in out.losses])


def final_loss(space: SearchSpace, params: dict, buffers: dict, batches: Iterable[Batch], loss_fn: LossFn) -> tuple[torch.Tensor, int, int]:
    """Mean loss of the final classifier over ``batches`` (differentiable), its correct count, and the examples."""
    total, correct, count = 0.0, 0, 0
    for x, y in batches:
        logits = functional_call(space, {**params, **buffers}, (x,))
        total = total + loss_fn(logits, y) * len(y)
        correct += int((logits.detach().argmax(-1) == y).sum())
        count += len(y)
    if count == 0:
        raise ValueError("the meta-loss needs at least one validation batch")
    return total / count, correct, count


@dataclass
class MetaResult:
    loss: float  # the meta-loss: the final classifier's validation loss at theta_T
    grad_alpha: torch.Tensor  # d loss / d alpha, (L-1, 2)
    grad_beta: torch.Tensor  # d loss / d beta, (L-1, M)
    val_error: float  # top-1 error of theta_T on the validation batches
    train_losses: torch.Tensor  # per-block losses of the last inner step, (L,)


def meta_gradient(space: SearchSpace, snap: Snapshot, alpha: torch.Tensor, beta: torch.Tensor, train: Sequence[Batch],
                  val: Sequence[Batch], opt: InnerSGD, loss_fn: LossFn) -> MetaResult:
    """Steps 1-2 above: T = len(train) differentiable inner steps from ``snap``, then the meta-gradient
    of the final classifier's loss on the ``val`` batches (and only those) w.r.t. alpha and beta."""
    if not train:
        raise ValueError("meta_gradient needs T >= 1 training batches (search.inner_steps)")
    alpha_, beta_ = alpha.detach().requires_grad_(), beta.detach().requires_grad_()
    signal, head_weights = gates(alpha_, beta_)
    params = {k: v.detach().clone().requires_grad_() for k, v in snap.params.items()}
    momentum = None if snap.momentum is None else {k: v.detach() for k, v in snap.momentum.items()}
    buffers = {k: v.clone() for k, v in snap.buffers.items()}  # the inner steps' running statistics are discarded
    losses = None
    for t, batch in enumerate(train):
        grads, losses = relaxed_gradients(space, params, buffers, batch, signal, head_weights, loss_fn, create_graph=True)
        params, momentum = sgd_step(params, grads, momentum, lr=opt.lr_at(snap.step + t), opt=opt)
    loss, correct, count = final_loss(space, params, buffers, val, loss_fn)
    g_alpha, g_beta = torch.autograd.grad(loss, [alpha_, beta_], allow_unused=True)
    zero = lambda t: torch.zeros_like(t)
    return MetaResult(float(loss.detach()), zero(alpha) if g_alpha is None else g_alpha, zero(beta) if g_beta is None else g_beta,
                      1.0 - correct / count, losses)


def ordinary_step(space: SearchSpace, snap: Snapshot, alpha: torch.Tensor, beta: torch.Tensor, batch: Batch, opt: InnerSGD,
                  loss_fn: LossFn) -> tuple[Snapshot, torch.Tensor]:
    """One plain SGD step of the weights with the gates fixed: the snapshot at step + 1, and the per-block losses.

    The snapshot's buffers (running statistics) move in place, as in any training step.
    """
    with torch.no_grad():
        signal, head_weights = gates(alpha.detach(), beta.detach())
    params = {k: v.detach().requires_grad_() for k, v in snap.params.items()}
    grads, losses = relaxed_gradients(space, params, snap.buffers, batch, signal, head_weights, loss_fn, create_graph=False)
    with torch.no_grad():
        new_p, new_m = sgd_step({k: v.detach() for k, v in params.items()}, grads, snap.momentum, lr=opt.lr_at(snap.step), opt=opt)
    return Snapshot(step=snap.step + 1, params=new_p, buffers=snap.buffers, momentum=new_m, val_error=snap.val_error), losses


def snapshot_of(space: SearchSpace, *, step: int = 0) -> Snapshot:
    """The module's current weights as a step-``step`` snapshot (copies; no momentum yet)."""
    return Snapshot(step=step, params={k: v.detach().clone() for k, v in space.named_parameters()},
                    buffers={k: v.detach().clone() for k, v in space.named_buffers()})
