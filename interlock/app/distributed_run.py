"""``interlock train --engine distributed``: one process per component, started here or by torchrun.

Under torchrun (WORLD_SIZE set) this process is one rank: it runs the training program
directly. Otherwise it starts K local processes itself (interlock.training.spawn) and waits for
them; if one fails, all stop and its error is raised here.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ..training.config import TrainConfig
from ..training.loop import run
from ..training.spawn import launch, under_launcher

__all__ = ["run_distributed"]


def run_distributed(config: TrainConfig, *, resume: bool, on_progress: Callable[[dict], None] | None = None) -> dict:
    """Train ``config`` with one process per component; returns the final evaluation row."""
    if under_launcher():
        world = int(os.environ["WORLD_SIZE"])
        if world != config.model.components:
            raise ValueError(
                f"torchrun started {world} processes but model.components={config.model.components}; "
                f"use --nproc-per-node (times --nnodes) = {config.model.components}"
            )
        rank = int(os.environ["RANK"])
        return run(config, resume=resume, on_progress=on_progress if rank == 0 else None).final
    return launch(run, config, resume=resume, on_progress=on_progress).final
