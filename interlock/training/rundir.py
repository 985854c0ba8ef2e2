"""A run directory's lock, and what a failed write into it means.

**The lock.** Two runs writing into one directory would interleave their metrics rows and
overwrite each other's checkpoints, so every command that writes a run directory (``train``
on every engine, ``compare``'s runs, ``search``, ``reproduce``'s root) holds
``<dir>/.interlock.lock`` for its whole life. The file names the holder (pid, host, command,
start time); it is created with ``O_EXCL``, so of two runs started at once exactly one gets it.
A lock whose holder is gone (same host, pid no longer alive) is stale: it is replaced, and
the log says so. A lock held from another host cannot be checked from here: the error says
to remove the file once that run is known to be over.

Within one process the lock is re-entrant (``compare`` -> ``train.run``); the ranks that
``interlock train --engine distributed`` starts run under their launcher's lock
(:data:`HELD_ENV` names it in the environment of every process started while it is held).

**Write faults.** :func:`explain_write_error` turns the errors a full disk or a read-only
folder raise (``OSError`` ENOSPC/EROFS/EACCES, or the RuntimeError of PyTorch's writer, which
hides the errno: then the free space decides) into a :class:`RunDirError` naming the file and
what to change.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

__all__ = ["RunDirLocked", "RunDirError", "lock_run_dir", "explain_write_error", "LOCK_NAME", "HELD_ENV"]

log = logging.getLogger(__name__)

LOCK_NAME = ".interlock.lock"
HELD_ENV = "INTERLOCK_HELD_LOCKS"  # os.pathsep-separated lock files a launcher holds for its ranks

_held: dict[Path, int] = {}  # lock file -> nesting depth, in this process


class RunDirLocked(FileExistsError):
    """Another live run holds the run directory."""


class RunDirError(OSError):
    """The run directory cannot be written (full disk, read-only, no permission): a message that says what to change."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _inherited() -> set[Path]:
    return {Path(p) for p in os.environ.get(HELD_ENV, "").split(os.pathsep) if p}


def _acquire(path: Path) -> None:
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv[:3]),
              "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(3):  # (a stale lock removed by another starter at the same moment: try again)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                other = json.loads(path.read_text())
            except (OSError, ValueError):
                other = None  # being written right now, or garbage
            if other is None:
                time.sleep(0.2)
                try:
                    other = json.loads(path.read_text())
                except FileNotFoundError:
                    continue
                except (OSError, ValueError):
                    other = {}
            host, pid = other.get("host"), other.get("pid")
            if host == socket.gethostname() and isinstance(pid, int) and not _alive(pid):
                log.warning("%s: replacing a stale lock of pid %d (no longer running)", path.parent, pid)
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
                continue
            who = f"pid {pid} on {host}" + (f" ({other.get('command')}, since {other.get('since')})" if other.get("since") else "")
            same_host = host == socket.gethostname()
            raise RunDirLocked(
                f"{path.parent} is in use by another run ({who}): two runs in one directory would mix their metrics "
                f"and checkpoints. Wait for it to end, or choose another directory"
                + ("" if same_host else f"; if that run is over, remove {path}")
            )
        except OSError as err:
            raise explain_write_error(err, path) from None
        with os.fdopen(fd, "w") as f:
            json.dump(holder, f)
        return
    raise RunDirLocked(f"could not take {path}: other runs keep creating it; choose another directory")


@contextmanager
def lock_run_dir(run_dir: str | Path):
    """Hold ``run_dir``'s lock (creating the folder) until the block ends; see the module docstring."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise explain_write_error(err, run_dir) from None
    path = (run_dir / LOCK_NAME).resolve()
    if path in _held or path in _inherited():
        _held[path] = _held.get(path, 0) + 1
        try:
            yield path
        finally:
            _held[path] -= 1
            if not _held[path]:
                del _held[path]
        return
    _acquire(path)
    _held[path] = 1
    before = os.environ.get(HELD_ENV)
    os.environ.update(held_env())  # processes started meanwhile (a launcher's ranks) run under this lock
    try:
        yield path
    finally:
        del _held[path]
        if before is None:
            os.environ.pop(HELD_ENV, None)
        else:
            os.environ[HELD_ENV] = before
        try:
            path.unlink()
        except OSError:
            pass


def held_env() -> dict[str, str]:
    """The environment entry that lets started ranks run under the locks this process holds."""
    return {HELD_ENV: os.pathsep.join(str(p) for p in sorted(set(_held) | _inherited()))}


_FULL = (errno.ENOSPC, errno.EDQUOT)
_NEARLY_FULL = 1 << 20  # bytes: less than this free after a failed write is a full disk


def _free_bytes(path: Path) -> int | None:
    import shutil

    for folder in (path, *path.parents):
        if folder.exists():
            try:
                return shutil.disk_usage(folder).free
            except OSError:
                return None
    return None
_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


def explain_write_error(err: BaseException, path: str | Path) -> BaseException:
    """A :class:`RunDirError` for a write into ``path`` that failed for want of space or permission; else ``err``."""
    code = getattr(err, "errno", None)
    # torch.save reports a failed write as a RuntimeError without the errno ("[enforce fail at
    # inline_container.cc:...] unexpected pos ...", "basic_ios::clear: iostream error", ...): the
    # free space left says whether the disk is full.
    free = _free_bytes(Path(path)) if code in _FULL or isinstance(err, RuntimeError) else None
    if code in _FULL or (isinstance(err, RuntimeError) and free is not None and free < _NEARLY_FULL):
        return RunDirError(errno.ENOSPC, f"disk full while writing {path}" + ("" if free is None else f" ({free} bytes free)")
                           + ": free space on that file system (or choose a --run-dir on another one), then continue "
                             "with --resume")
    if code in _READ_ONLY:
        return RunDirError(code, f"cannot write {path} ({os.strerror(code)}): choose a --run-dir you may write to")
    return err
