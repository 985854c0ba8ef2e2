"""One local process per component for a distributed or pipeline run: start them, relay rank 0's
progress rows back, return rank 0's result; if one fails, all stop and its error is raised here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from .config import TrainConfig
from .devices import check_device

__all__ = ["launch", "under_launcher"]


def under_launcher() -> bool:
    """This process is one rank of a run that torchrun or interlock.runtime.launch started."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def launch(program: Callable, config: TrainConfig, *, resume: bool, on_progress: Callable[[dict], None] | None = None,
           stop_after: int | None = None, model=None, data=None):
    """Start one local process per component, run ``program`` (interlock.training.loop.run) on
    ``config`` in each, return rank 0's result.

    ``program`` is passed in rather than imported, so that the training loop can call this
    module without the two importing each other; it is pickled by name to every rank.
    ``model`` / ``data``: your own objects (interlock.training.loop.run), pickled to every rank.
    ``on_progress`` is called here, in a thread of this process, with every row rank 0 emits.
    """
    from ..runtime.launch import run_local
    from .tasks import resolve_data

    check_device(config.device)  # a config error, said before any rank starts

    # Resolved once here, so every rank trains on the same data set (and a missing one fails before any rank starts).
    if data is None:  # (your own data needs no resolving)
        config = replace(config, data=resolve_data(config.data, seed=config.seed))
    relay = _ProgressRelay(on_progress) if on_progress is not None else None
    try:
        # No wall-clock limit on the run: dist_timeout_s bounds how long a rank waits for a silent
        # or stuck peer (the process-group timeout of every receive, send and collective), not how
        # long a healthy run may train. A rank that dies is seen by the launcher at once.
        results = run_local(_rank_run, config.model.components, program, config.to_dict(), resume,
                            None if relay is None else relay.address, None if relay is None else relay.key,
                            stop_after, model, data, timeout_s=None)
    finally:
        if relay is not None:
            relay.close()
    return results[0]


class _ProgressRelay:
    """Rows from rank 0 to the launcher's ``on_progress``, over a local authenticated connection."""

    def __init__(self, on_progress: Callable[[dict], None]) -> None:
        import secrets
        import threading
        from multiprocessing.connection import Listener

        self.key = secrets.token_bytes(16)
        self._listener = Listener(("127.0.0.1", 0), authkey=self.key)
        self.address = self._listener.address
        self._on_progress = on_progress
        self._thread = threading.Thread(target=self._serve, name="interlock-progress", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            with self._listener.accept() as conn:
                while True:
                    row = conn.recv()
                    if row is None:
                        return
                    self._on_progress(row)
        except (EOFError, OSError):  # rank 0 ended (or never connected): no more rows
            return

    def close(self) -> None:
        self._thread.join(timeout=5.0)  # rank 0 sends None at its end: every row has been delivered
        self._listener.close()


def _rank_run(program: Callable, config_dict: dict, resume: bool, address, key, stop_after, model, data):
    """Entry point of each started process (module level so that it can be pickled): rank 0's rows go to the launcher."""
    config = TrainConfig(**config_dict)
    rank = int(os.environ.get("RANK", "0"))
    conn = None
    if address is not None and rank == 0:
        from multiprocessing.connection import Client

        conn = Client(address, authkey=key)
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
        return program(config, resume=resume, on_progress=None if conn is None else conn.send, stop_after=stop_after,
                   model=model, data=data)
    finally:
        if conn is not None:
            conn.send(None)
            conn.close()
        if handler is not None:
            logger.removeHandler(handler)
            handler.close()
