"""From the searched (alpha, beta) to an ordinary interlock config (Pyeon et al. 2021, §3.4).

For K components: cut after the K-1 blocks whose local-signal gate softmax(alpha_l)_1 is largest
(the blocks that most want to learn from their own loss rather than from above), and give the
component ending at each cut the candidate head with the largest beta_l. The result is a
``TrainConfig`` whose ``model.partition`` is that cut list and ``model.heads`` that head list, so
``interlock train`` / ``compare`` run it unchanged with every strategy and every engine.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..checks import count
from ..training.config import TrainConfig, _build
from ..models import build

__all__ = ["Decision", "decide", "discretised_config", "config_values"]


@dataclass(frozen=True)
class Decision:
    """K components: ``cuts`` (K-1 block indices where components 2..K start) and a head for each of components 1..K-1."""

    cuts: tuple[int, ...]
    heads: tuple[str, ...]


def decide(alpha: torch.Tensor, beta: torch.Tensor, head_names: Sequence[str], components: int, *, offset: int = 0) -> Decision:
    """The §3.4 rule for ``components`` = K; ties go to the lower block (a stable sort).

    ``offset``: registry blocks before SEDONA's first layer ends that the search folded into it
    (``layers.stem_blocks``: 1 for a ResNet), added to the cuts so that they index the model's blocks.
    """
    alpha, beta = torch.as_tensor(alpha, dtype=torch.float64), torch.as_tensor(beta, dtype=torch.float64)
    L = alpha.shape[0] + 1
    if alpha.dim() != 2 or alpha.shape[1] != 2 or tuple(beta.shape) != (L - 1, len(head_names)):
        raise ValueError(f"alpha {tuple(alpha.shape)} and beta {tuple(beta.shape)}: expected (L-1, 2) and (L-1, {len(head_names)})")
    count(components, f"components={components!r}: the searched network has {L} blocks; use K in 1..{L}", maximum=L)
    local = torch.softmax(alpha, dim=-1)[:, 0]  # (L-1,): the weight of block l's own loss
    order = sorted(range(L - 1), key=lambda l: (-float(local[l]), l))
    chosen = sorted(order[: components - 1])  # 0-based blocks after which to cut
    return Decision(cuts=tuple(l + 1 + offset for l in chosen), heads=tuple(head_names[int(beta[l].argmax())] for l in chosen))


def discretised_config(base: TrainConfig, decision: Decision, *, run_dir: str | None = None) -> TrainConfig:
    """``base`` (the search's config) with the model cut as ``decision`` says; the search section dropped,
    and ``search.train_preset``'s training values (if any) laid over the search's.

    Checks that the model builds the same L blocks with K components as it did for the search
    (toy_cnn's depth follows K unless model.kwargs.depth pins it).
    """
    K = len(decision.cuts) + 1
    values = copy.deepcopy(base.to_dict())
    train_preset = values.pop("search", {}).get("train_preset", "")
    if train_preset:  # e.g. SEDONA's E.2 recipe: the search's weight decay (E.1) is not the training's
        from ..training.presets import PRESETS

        for key, value in PRESETS[train_preset].items():
            if isinstance(value, dict) and isinstance(values.get(key), dict):
                values[key].update(copy.deepcopy(value))
            else:
                values[key] = copy.deepcopy(value)
        for length, other in (("steps", "epochs"), ("epochs", "steps")):  # a run has one length
            if length in PRESETS[train_preset]:
                values[other] = 0
    values["preset"] = ""  # every value is explicit: the file reads the same whatever the presets become
    values["model"].update(components=K, partition=list(decision.cuts), heads=list(decision.heads))
    if run_dir is not None:
        values["run_dir"] = run_dir
    config = _build(TrainConfig, values)
    L_search = len(build(base.model.name, components=1, **base.model.kwargs).blocks)
    L_train = len(build(config.model.name, components=K, **config.model.kwargs).blocks)
    if L_train != L_search:
        raise ValueError(f"model {base.model.name!r} builds {L_train} blocks with {K} components but was searched with "
                         f"{L_search}; pin its depth in model.kwargs (e.g. model.kwargs.depth={L_search}) and search again")
    return config


def config_values(config: TrainConfig) -> dict:
    """``config`` as the plain values of a config file, without the search section (it only configures searches)."""
    values = config.to_dict()
    values.pop("search", None)
    return values
