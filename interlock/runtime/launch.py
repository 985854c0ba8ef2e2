"""Start K processes on this machine, one per component, as torchrun would.

    from interlock.runtime.launch import run_local
    results = run_local(train_one_rank, 4, config)   # calls train_one_rank(config) on ranks 0..3

Each process gets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and
MASTER_PORT (a free port on 127.0.0.1), so an ``Engine(..., runtime="ranks")`` made inside ``fn``
joins the group as under ``torchrun --standalone --nproc-per-node=K``. ``fn`` must be
importable (a module-level function) and its arguments picklable: processes start fresh
("forkserver" by default: a server process imports torch once and forks each rank from
it, seconds faster per run than "spawn", which imports torch in every rank). Each rank
gets the caller's environment as it is at the call. For several machines use torchrun
(see :mod:`interlock.runtime.ranks`).

If a rank raises or dies, the others are given ``grace_s`` to stop by themselves (a
rank waiting for a message from a dead peer fails at once, or at the process-group
timeout), then terminated; the caller gets the first failing rank's own exception,
with its traceback attached, not the errors it caused in the others.

Ranks die with their launcher: each rank watches a pipe whose only writer is the
launcher, and exits at once when it closes, whatever ended the launcher (SIGKILL
included, which no handler sees). An exception in the launcher (Ctrl-C, or SIGTERM
turned into one by the command line) terminates every rank before it propagates.
Checkpoints are written atomically, so a rank stopped anywhere leaves the newest
complete checkpoint in place.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from multiprocessing.connection import wait as wait_for
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..errors import RunFailure

__all__ = ["run_local", "RankFailedError", "free_port"]

logger = logging.getLogger(__name__)

_DEATH_SEEN_LATE_S = 1.0


class RankFailedError(RunFailure):
    """A rank failed and its exception could not be brought back as it was (or it died without one)."""


class _RemoteTraceback(Exception):
    """Carries a rank's formatted traceback as the ``__cause__`` of the re-raised exception."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (another process could still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def run_local(
    fn: Callable[..., Any],
    nprocs: int,
    *args: Any,
    timeout_s: float | None = None,
    env: Mapping[str, str] | None = None,
    threads: int | None = 1,
    grace_s: float = 3.0,
    start_method: str = "forkserver",
) -> list[Any]:
    """Run ``fn(*args)`` in ``nprocs`` fresh processes (ranks 0..nprocs-1); return each rank's return value.

    ``timeout_s``: wall-clock limit for the whole run (None: no limit); past it every rank
    is terminated and TimeoutError is raised. ``env``: extra environment variables for the
    ranks (applied after the torchrun ones, so they may override them). ``threads``:
    ``torch.set_num_threads`` in each rank (None leaves PyTorch's default; with several
    ranks on few cores one thread each avoids oversubscription). ``grace_s``: how long the
    other ranks get to stop by themselves after one fails. ``start_method``: "forkserver"
    (where the platform has it; else "spawn") or "spawn". Return values come back through
    ``torch.save``, so tensors are fine.
    """
    if isinstance(nprocs, bool) or not isinstance(nprocs, int) or nprocs < 1:
        raise ValueError(f"nprocs={nprocs!r}: give the number of processes (components) as an integer >= 1")
    if timeout_s is not None and not timeout_s > 0:
        raise ValueError(f"timeout_s={timeout_s!r}: give a positive number of seconds, or None for no limit")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads={threads!r}: give an integer >= 1, or None for PyTorch's default")
    if start_method not in ("forkserver", "spawn"):
        raise ValueError(f"start_method={start_method!r}: use 'forkserver' or 'spawn' (fork is unsafe with torch threads)")
    if start_method not in mp.get_all_start_methods():
        start_method = "spawn"
    ctx = mp.get_context(start_method)
    if start_method == "forkserver":
        # Takes effect when the server starts (the first call): ranks fork with torch imported,
        # and torch._dynamo, which every first optimizer construction imports (seconds); the
        # module then freezes the garbage collector's view of those objects, so they stay
        # shared with the ranks instead of being copied into each (see interlock.runtime._preload).
        ctx.set_forkserver_preload(["interlock.runtime._preload"])
    port = free_port()
    # The launcher holds the only write end; the ranks hold read ends, on which EOF means the
    # launcher is gone (the kernel closes its descriptors however it died).
    lifeline_r, lifeline_w = ctx.Pipe(duplex=False)
    with tempfile.TemporaryDirectory(prefix="interlock-run-") as tmp:
        out = Path(tmp)
        procs = [
            ctx.Process(
                target=_rank_main,
                args=(rank, nprocs, port, fn, args, dict(os.environ), dict(env or {}), threads, str(out), lifeline_r),
                name=f"interlock-rank-{rank}",
            )
            for rank in range(nprocs)
        ]
        try:
            for p in procs:
                p.start()
            exits, terminated = _supervise(procs, timeout_s=timeout_s, grace_s=grace_s)
        except BaseException:  # e.g. Ctrl-C or SIGTERM in the caller: leave no rank behind
            for p in procs:
                if p.is_alive():
                    p.terminate()  # all at once, then wait: stopping them one by one would take K grace periods
            for p in procs:
                if p.pid is not None:
                    _stop(p)
            raise
        finally:
            lifeline_r.close()
            lifeline_w.close()
        failure = _first_failure(out, exits, terminated, nprocs)
        if failure is not None:
            raise failure
        if any(r in terminated for r in range(nprocs)):
            raise TimeoutError(
                f"run_local: ranks {sorted(terminated)} of {nprocs} were still running after {timeout_s} s and were "
                f"terminated; raise timeout_s or look for a rank waiting on a message that is never sent"
            )
        return [torch.load(out / f"result-{r}.pt", weights_only=False) for r in range(nprocs)]


def _supervise(procs, *, timeout_s: float | None, grace_s: float) -> tuple[dict[int, tuple[int, float]], set[int]]:
    """Wait for every process; after a failure or the deadline, stop the rest. Returns exits and the terminated ranks."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    exits: dict[int, tuple[int, float]] = {}  # rank -> (exit code, wall time it was seen)
    terminated: set[int] = set()
    stop_at: float | None = None  # when the survivors of a failure get terminated
    while len(exits) < len(procs):
        now = time.monotonic()
        limits = [t for t in (deadline, stop_at) if t is not None]
        wait_s = None if not limits else max(0.0, min(limits) - now)
        alive = {p.sentinel: r for r, p in enumerate(procs) if r not in exits}
        for sentinel in wait_for(list(alive), timeout=wait_s):
            r = alive[sentinel]
            procs[r].join()
            exits[r] = (procs[r].exitcode, time.time())
            if procs[r].exitcode != 0 and stop_at is None:
                stop_at = time.monotonic() + grace_s
        now = time.monotonic()
        if (stop_at is not None and now >= stop_at) or (deadline is not None and now >= deadline):
            left = [r for r in range(len(procs)) if r not in exits]
            why = "another rank failed" if stop_at is not None and now >= stop_at else "the run timed out"
            logger.warning("terminating ranks %s: %s", left, why)
            for r, p in enumerate(procs):
                if r not in exits:
                    terminated.add(r)
                    _stop(p)
                    exits[r] = (p.exitcode, time.time())
    return exits, terminated


def _stop(p) -> None:
    p.terminate()
    p.join(2.0)
    if p.is_alive():
        p.kill()
        p.join()


def _first_failure(out: Path, exits, terminated: set[int], nprocs: int) -> BaseException | None:
    """The exception of the rank that failed first (by the time it failed), or None if all succeeded."""
    candidates = []
    for r, (code, seen) in exits.items():
        path = out / f"error-{r}.pkl"
        if path.exists():
            with open(path, "rb") as f:
                record = pickle.load(f)
            candidates.append((record["time"], r, record))
        elif code != 0 and r not in terminated:
            # Died without reporting (a signal, os._exit, out of memory): only its exit code is
            # known, and when the launcher saw it, a moment after its peers (which fail within
            # milliseconds on the closed connections) may have reported their own errors. The
            # margin ranks such a death before those consequences.
            how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
            candidates.append((seen - _DEATH_SEEN_LATE_S, r, {"died": how}))
    if not candidates:
        return None
    _, rank, record = min(candidates, key=lambda c: (c[0], c[1]))
    others = sorted(r for _, r, _ in candidates if r != rank)
    note = f"raised on rank {rank} of {nprocs}" + (f"; ranks {others} failed after it" if others else "")
    if "died" in record:
        return RankFailedError(f"rank {rank} of {nprocs} {record['died']} without raising an exception",
                               rank=rank, world_size=nprocs)
    exc = None
    if record["exception"] is not None:
        try:
            exc = pickle.loads(record["exception"])
        except Exception:  # the exception class cannot be rebuilt here: fall back to its text
            exc = None
    if not isinstance(exc, BaseException):
        return RankFailedError(f"rank {rank} of {nprocs} failed:\n{record['traceback']}", rank=rank, world_size=nprocs)
    remote = _RemoteTraceback(f"\n\nTraceback on rank {rank} of {nprocs}:\n{record['traceback']}")
    if isinstance(exc, RunFailure):  # where it failed, now with which rank (for one-line reports: interlock.app.cli)
        exc.rank, exc.world_size = rank, nprocs
        exc.error.__cause__ = remote  # (under the error a RunFailure wraps, which came along with it)
    else:
        exc.__cause__ = remote
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    return exc


def _watch_launcher(lifeline) -> None:
    """Exit this rank as soon as the launcher's end of ``lifeline`` closes (the launcher is gone)."""
    try:
        lifeline.recv_bytes()  # the launcher never writes: this returns only by EOF
    except (EOFError, OSError):
        pass
    # No cleanup: a dead launcher cannot collect results, and a checkpoint being written is
    # atomic. os._exit also ends a rank that is blocked in a collective or a receive.
    os._exit(1)


def _rank_main(rank: int, nprocs: int, port: int, fn, args, env: dict, overrides: dict, threads: int | None, out: str,
               lifeline=None) -> None:
    """A rank's entry point: torchrun's environment, fn(*args), and the result or error written to ``out``."""
    if lifeline is not None:
        threading.Thread(target=_watch_launcher, args=(lifeline,), name="interlock-lifeline", daemon=True).start()
    # The caller's environment now (a forkserver's own dates from its start), torchrun's
    # variables, then the caller's overrides.
    os.environ.clear()
    os.environ.update(env)
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(nprocs), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(nprocs),
        GROUP_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )
    os.environ.update(overrides)
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        result = fn(*args)
        if dist.is_initialized():
            # fn left its process group open: close it together, so no rank exits while another
            # still receives from it.
            dist.barrier()
            dist.destroy_process_group()
        _write(Path(out) / f"result-{rank}.pt", lambda f: torch.save(result, f))
    except BaseException as err:  # noqa: BLE001 - every failure is reported to the launcher
        # A RunFailure says when it was raised (failed_at), before cleanup that closed
        # connections and so made the peers fail: the launcher ranks failures by time.
        failed_at = (err.failed_at if isinstance(err, RunFailure) else None) or time.time()
        try:
            payload = pickle.dumps(err)
        except Exception:
            payload = None
        record = {"time": failed_at, "traceback": traceback.format_exc(), "exception": payload}
        _write(Path(out) / f"error-{rank}.pkl", lambda f: pickle.dump(record, f))
        sys.stdout.flush()
        sys.stderr.flush()
        # Exit at once: the peers see the closed connections and fail instead of waiting for
        # messages from this rank, and no interpreter teardown can hang on the process group.
        os._exit(1)


def _write(path: Path, dump) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        dump(f)
    os.replace(tmp, path)  # the launcher never reads a half-written file
