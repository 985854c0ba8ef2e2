"""One training run for the command line (``train``, ``compare``, ``reproduce``): its progress line,
its log file, and a failure said in one line (:class:`RunFailed`), its traceback in the log.

``interlock.reproduce`` trains through :func:`run_one` too, so this module, not the command line's,
holds it: the command line imports reproduce, and reproduce imports this.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import REQUEST_ERRORS, RunFailure
from ..training.config import TrainConfig
from ..training.rundir import RunDirError, lock_run_dir
from .logs import add_file_log, remove_file_log
from .progress import Progress

__all__ = ["REQUEST_ERRORS", "RunFailed", "failure_line", "logged_command", "run_one"]

log = logging.getLogger("interlock")


class RunFailed(Exception):
    """A run failed at run time; ``line`` says where and what to change, the traceback went to the run's log."""

    def __init__(self, line: str) -> None:
        super().__init__(line)
        self.line = line


def run_one(config: TrainConfig, *, resume: bool, quiet: bool, label: str):
    """One run on the configured engine, with a progress line; returns the final evaluation row.

    Everything logged meanwhile also goes to ``<run_dir>/log.txt``; a run-time failure adds its
    full traceback there and is raised as :class:`RunFailed`, one line for the terminal.
    """
    run_dir = Path(config.run_dir)
    rank = os.environ.get("RANK", "0")
    if rank == "0":  # the run directory is this run's before anything is written into it (log.txt included)
        with lock_run_dir(run_dir):
            return _run_one(config, resume=resume, quiet=quiet, label=label, run_dir=run_dir, rank=rank)
    return _run_one(config, resume=resume, quiet=quiet, label=label, run_dir=run_dir, rank=rank)


def _run_one(config: TrainConfig, *, resume: bool, quiet: bool, label: str, run_dir: Path, rank: str):
    progress = None if quiet else Progress(label)
    log_path = run_dir / ("log.txt" if rank == "0" else f"log-rank{rank}.txt")
    handler = add_file_log(log_path)
    try:
        if config.engine in ("distributed", "pipeline"):  # one process per component
            from .distributed_run import run_distributed

            return run_distributed(config, resume=resume, on_progress=progress)
        from ..training.loop import run

        return run(config, resume=resume, on_progress=progress).final
    except (*REQUEST_ERRORS, RunDirError):
        raise
    except Exception as err:
        log.error("the run in %s failed", run_dir, exc_info=err)
        raise RunFailed(failure_line(err, config, log_path)) from err
    finally:
        remove_file_log(handler)
        if progress is not None:
            progress.close()


def logged_command(folder: Path, what: str, fn):
    """``fn()`` for ``search`` and ``reproduce`` as :func:`run_one` runs a training run: what is logged
    also goes to ``<folder>/log.txt``, and a run-time failure is one line (its traceback in that file)."""
    log_path = Path(folder) / "log.txt"
    handler = add_file_log(log_path)
    try:
        return fn()
    except (*REQUEST_ERRORS, RunDirError, RunFailed):
        raise
    except Exception as err:
        log.error("%s failed", what, exc_info=err)
        message = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise RunFailed(f"{what} failed: {type(err).__name__}: {message} (traceback in {log_path})") from err
    finally:
        remove_file_log(handler)


def failure_line(err: BaseException, config: TrainConfig, log_path: Path) -> str:
    """Where a run failed (run, step, rank, component), what went wrong, and what to change, in one line."""
    from ..runtime.launch import RankFailedError
    from ..training.loop import TrainingDiverged
    from ..runtime.transport import TransportError

    failure = err if isinstance(err, RunFailure) else RunFailure()  # (raised outside the loop: where is not known)
    err = failure.error if isinstance(err, RunFailure) else err  # what went wrong: the error a RunFailure wraps
    place = f"{config.strategy} run in {config.run_dir} failed"
    where = failure.where
    if where and where != "setup":
        place += f" at {where}"
    elif where == "setup":
        place += " while starting"
    if failure.rank is not None:
        place += f" on rank {failure.rank} of {failure.world_size}"
        if failure.component is not None:
            place += f" (component {failure.component})"
    message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if isinstance(err, TrainingDiverged):
        what, hint = message, ""  # the message names the component, the step and what to change
    elif isinstance(err, (TransportError, TimeoutError)) or "timed out" in message.lower():
        what = f"{type(err).__name__}: {message}"
        hint = (f"a rank waited dist_timeout_s={config.dist_timeout_s:g} s for a peer in vain; if another rank failed "
                f"first, the log says how; if a step legitimately takes longer, raise dist_timeout_s")
    elif isinstance(err, RankFailedError):
        what = message
        # SIGKILL comes from the kernel's out-of-memory killer or from a person or a scheduler: say both.
        hint = ("signal 9 (SIGKILL) comes from a kill -9, a job scheduler, or the kernel when the machine runs out of "
                "memory; if nobody killed it, lower data.batch_size or data.eval_batch_size"
                if "signal 9" in message else "the rank died without a Python error")
    else:
        what, hint = f"{type(err).__name__}: {message}", "if the config looks right, this is a bug worth reporting"
    line = f"{place}: {what}"
    if hint:
        line += f"; {hint}"
    return f"{line} (traceback in {log_path})"
