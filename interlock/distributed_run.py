"""``interlock train --engine distributed``: one process per component, started here or by torchrun.

Under torchrun (WORLD_SIZE set) this process is one rank: it runs the training program
directly. Otherwise it starts K local processes itself (interlock.launch) and waits for
them; if one fails, all stop and its error is raised here.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from .config import TrainConfig

__all__ = ["run_distributed"]


def _under_launcher() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def run_distributed(config: TrainConfig, *, resume: bool, on_progress: Callable[[dict], None] | None = None) -> dict:
    """Train ``config`` with one process per component; returns the final evaluation row."""
    if _under_launcher():
        from .train import run

        world = int(os.environ["WORLD_SIZE"])
        if world != config.model.components:
            raise ValueError(
                f"torchrun started {world} processes but model.components={config.model.components}; "
                f"use --nproc-per-node (times --nnodes) = {config.model.components}"
            )
        rank = int(os.environ["RANK"])
        return run(config, resume=resume, on_progress=on_progress if rank == 0 else None).final
    from .launch import run_local
    from .tasks import resolve_data
    from .train import check_device

    check_device(config.device)  # a config error, said before any rank starts

    # Resolved once here, so every rank trains on the same data set (and a missing one fails before any rank starts).
    config = replace(config, data=resolve_data(config.data, seed=config.seed))
    # No wall-clock limit on the run: dist_timeout_s bounds how long a rank waits for a silent
    # or stuck peer (the process-group timeout of every receive, send and collective), not how
    # long a healthy run may train. A rank that dies is seen by the launcher at once.
    results = run_local(_rank_main, config.model.components, config.to_dict(), resume, on_progress is not None,
                        timeout_s=None)
    return results[0]


def _rank_main(config_dict: dict, resume: bool, show_progress: bool) -> dict:
    """Entry point of each started process (module level so that it can be pickled)."""
    from .train import run

    config = TrainConfig(**config_dict)
    rank = int(os.environ.get("RANK", "0"))
    progress = None
    if show_progress and rank == 0:
        from .cli import Progress

        progress = Progress(f"{config.strategy} (distributed)", stream=sys.stderr)
    # What the rank logs goes to the run's log as under torchrun (rank 0: log.txt, beside its
    # launcher's lines; rank r: log-rank<r>.txt), e.g. which checkpoint file it found damaged.
    logger = logging.getLogger("interlock")
    try:
        Path(config.run_dir).mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(Path(config.run_dir) / ("log.txt" if rank == 0 else f"log-rank{rank}.txt"))
    except OSError:
        handler = None  # (a folder that cannot be written: the run itself says so)
    if handler is not None:
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s rank {rank} %(name)s: %(message)s"))
        logger.addHandler(handler)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
    try:
        return run(config, resume=resume, on_progress=progress).final
    finally:
        if handler is not None:
            logger.removeHandler(handler)
            handler.close()
