"""SEDONA's continuous model (Pyeon et al. 2021, appendix C.3, Table 6): train with the learned (alpha, beta), undiscretised.

Every layer's error gradient is Eq. 4's affine mix, with the gates softmax(alpha_l) the search
learned, of its own loss and the gradient from above; each layer's loss is that of Eq. 3's mixture
of the candidate heads, weighted by softmax(beta_l). The weights train from scratch with the
discretised config's recipe (optimiser, schedule, data, length) by the search's own plain SGD
step (``bilevel.ordinary_step``), and the final classifier is evaluated on the test split. One
process, no checkpoints: an interrupted run starts again (its result file is written only at the
end, atomically, so a finished run is never lost).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ..training.config import TrainConfig
from ..training.metrics import atomic_write_text
from .bilevel import InnerSGD, ordinary_step, snapshot_of
from .relax import SearchSpace

__all__ = ["train_continuous"]


def train_continuous(config: TrainConfig, alpha: Sequence, beta: Sequence, heads: Sequence[str], *,
                     result_path: str | Path | None = None) -> dict:
    """Train ``config.model`` with fixed gates (``alpha``, ``beta``: (L-1, 2) and (L-1, M) as in
    search.json) over candidate heads ``heads``; returns (and writes to ``result_path``) the final
    classifier's test accuracy, the steps and the wall time."""
    from ..training.tasks import build_task
    from ..training.loop import lr_multiplier

    o = config.optim
    if o.name != "sgd" or o.nesterov:
        raise ValueError(f"the continuous model trains with the search's SGD step; set optim.name=sgd and optim.nesterov=false "
                         f"(got optim.name={o.name}, nesterov={o.nesterov})")
    if config.threads:
        torch.set_num_threads(config.threads)
    t0 = time.perf_counter()
    task = build_task(config.data, seed=config.seed)
    torch.manual_seed(config.seed)
    space = SearchSpace.from_model(config.model.name, heads=tuple(heads), head_kw=config.model.head_kw,
                                   **{**task.model_kwargs, **config.model.kwargs}).to(config.device).train()
    alpha = torch.as_tensor(alpha, dtype=torch.float32, device=config.device)
    beta = torch.as_tensor(beta, dtype=torch.float32, device=config.device)
    L = space.num_blocks
    if tuple(alpha.shape) != (L - 1, 2) or tuple(beta.shape) != (L - 1, space.num_heads):
        raise ValueError(f"alpha {tuple(alpha.shape)} and beta {tuple(beta.shape)} do not fit {config.model.name}'s {L} "
                         f"SEDONA layers and {space.num_heads} candidate heads: use the search.json of this model")
    steps = config.steps or max(1, round(config.epochs * task.steps_per_epoch))
    opt = InnerSGD(lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, schedule=lr_multiplier(config.lr, steps))
    smoothing = config.label_smoothing

    def loss_fn(logits, y):
        return F.cross_entropy(logits, y, label_smoothing=smoothing)

    snap, done, epoch = snapshot_of(space), 0, 0
    while done < steps:
        for x, y in task.train_batches(epoch=epoch, start_step=0):
            snap, _ = ordinary_step(space, snap, alpha, beta, (x.to(config.device), y.to(config.device)), opt, loss_fn)
            done += 1
            if done == steps:
                break
        epoch += 1
    space.eval()
    right = count = 0
    with torch.no_grad():
        for x, y in task.eval_splits()["test"]:
            x, y = x.to(config.device), y.to(config.device)
            logits = functional_call(space, {**snap.params, **snap.buffers}, (x,))
            right += int((logits.argmax(-1) == y).sum())
            count += len(y)
    out = {"test_final_acc": right / max(1, count), "steps": steps, "wall_time_s": time.perf_counter() - t0,
           "config": config.to_dict()}
    if result_path is not None:
        atomic_write_text(Path(result_path), json.dumps(out, indent=2) + "\n")
    return out
