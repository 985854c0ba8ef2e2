"""The one error a run that went wrong raises: :class:`RunFailure`, saying where it failed.

The training loop (interlock.training.loop) raises it, or wraps the error that stopped the run in
it, filling in the run directory, the phase and step, and the component; the launcher of a
distributed run (interlock.runtime.launch) adds the rank whose failure came first. The command
line reads it for its one-line report. The original error is the ``__cause__``, and travels with
it from a rank to its launcher.

Errors about the request itself (:data:`REQUEST_ERRORS`: a bad config value, a missing or
occupied run directory) are not wrapped: their message is the whole story.
"""

from __future__ import annotations

__all__ = ["RunFailure", "REQUEST_ERRORS"]

# Errors that are about the request (config, paths), not about a run going wrong: their message
# says what to change, and the command line prints it with exit code 2.
REQUEST_ERRORS: tuple[type[Exception], ...] = (ValueError, FileNotFoundError, FileExistsError)


class RunFailure(RuntimeError):
    """A run failed at run time. Each field is None where it is not known.

    ``run``: the run directory; ``phase``: what the loop was doing ("setup", "training step",
    "evaluation at step", "checkpoint at step"); ``step``: the step it was at (for a divergence,
    the step whose loss diverged); ``rank`` of ``world_size``: the process that failed first in a
    distributed run; ``component`` (1-based): the one component that process holds, or whose
    loss diverged; ``failed_at``: the wall time it failed (the launcher ranks failures by it).

    Raised as it is by a failure interlock names itself (e.g. ``TrainingDiverged``); otherwise by
    :meth:`wrap`, with the original error as ``__cause__`` (:attr:`error`).
    """

    def __init__(self, message: str = "", *, run: str | None = None, phase: str | None = None, step: int | None = None,
                 rank: int | None = None, world_size: int | None = None, component: int | None = None,
                 failed_at: float | None = None) -> None:
        super().__init__(message)
        self.run, self.phase, self.step = run, phase, step
        self.rank, self.world_size, self.component = rank, world_size, component
        self.failed_at = failed_at
        self.wrapped = False  # True: the failure is __cause__'s, said by wrap()

    @classmethod
    def wrap(cls, err: BaseException, **where) -> RunFailure:
        """``err`` as a RunFailure at ``where`` (the fields of :class:`RunFailure`), ``err`` its ``__cause__``."""
        text = str(err).strip()
        failure = cls(f"{type(err).__name__}: {text}" if text else type(err).__name__, **where)
        failure.wrapped = True
        failure.__cause__ = err
        return failure

    @property
    def error(self) -> BaseException:
        """What went wrong: the wrapped error, or this one."""
        return self.__cause__ if self.wrapped and self.__cause__ is not None else self

    @property
    def where(self) -> str | None:
        """The phase and step in words ("training step 7", "setup"), None if not known."""
        if self.phase is None or self.phase == "setup" or self.step is None:
            return self.phase
        return f"{self.phase} {self.step}"

    def __reduce__(self):
        # An exception pickles its args and __dict__ but not its __cause__: a wrapped error would
        # reach the launcher without the error it wraps.
        return _rebuild, (type(self), self.args, self.__dict__, self.__cause__ if self.wrapped else None)


def _rebuild(cls: type[RunFailure], args: tuple, state: dict, cause: BaseException | None) -> RunFailure:
    failure = cls(*args)
    failure.__dict__.update(state)
    if cause is not None:
        failure.__cause__ = cause
    return failure
