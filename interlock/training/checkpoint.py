"""Atomic, per-component checkpoints.

Layout of a run directory::

    checkpoints/step_00000400/component_1.pt ... component_K.pt, meta.json
    checkpoints/latest            # names the newest complete checkpoint folder

Each process writes the files of the components it holds (each file atomically), then the
main process writes ``meta.json`` and finally replaces ``latest``. A crash at any point
leaves ``latest`` naming the previous complete checkpoint, so nothing finished is lost.

A write that fails (a full disk, a read-only folder) removes its temporary file and raises
:class:`~interlock.training.rundir.RunDirError` naming the file; temporaries a killed run left behind
are removed when the run is resumed (:func:`remove_stale_temporaries`). A checkpoint whose
files cannot be read (truncated, overwritten) raises :class:`DamagedCheckpoint` naming the
file, and a resumed run falls back to the newest older complete one
(:func:`checkpoint_candidates`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from .metrics import atomic_write_text

__all__ = ["save_checkpoint", "load_checkpoint", "latest_checkpoint", "checkpoint_candidates", "DamagedCheckpoint",
           "remove_stale_temporaries", "mark_evaluated"]


class DamagedCheckpoint(ValueError):
    """A checkpoint file exists but cannot be read back."""

KEEP = 2  # complete checkpoints kept; older ones are removed after a new one is complete


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException as err:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        from .rundir import explain_write_error

        if isinstance(err, Exception):
            raise explain_write_error(err, path) from err
        raise


def save_checkpoint(run_dir: Path, engine, meta: dict) -> Path:
    """Write every local component's state, then (main process) meta.json and the ``latest`` pointer.

    ``engine.barrier()`` waits until every process has written its components.
    """
    root = Path(run_dir) / "checkpoints"
    folder = root / f"step_{engine.step_count:08d}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        from .rundir import explain_write_error

        raise explain_write_error(err, folder) from err
    for k in engine.local_components:
        _atomic_save(engine.component_state(k), folder / f"component_{k + 1}.pt")
    engine.barrier()
    if engine.is_main:
        atomic_write_text(folder / "meta.json", json.dumps({**meta, "step": engine.step_count}, indent=2))
        atomic_write_text(root / "latest", folder.name + "\n")
        done = sorted(p for p in root.glob("step_*") if (p / "meta.json").exists())
        for old in done[:-KEEP]:
            shutil.rmtree(old, ignore_errors=True)
    engine.barrier()
    return folder


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = Path(run_dir) / "checkpoints" / "latest"
    if not pointer.exists():
        return None
    folder = pointer.parent / pointer.read_text().strip()
    if not (folder / "meta.json").exists():
        raise FileNotFoundError(f"{pointer} names {folder}, which is incomplete; remove {pointer} to start over")
    return folder


def _meta(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None


def checkpoint_candidates(run_dir: Path) -> list[Path]:
    """Complete checkpoint folders (a readable meta.json), the one ``latest`` names first, then newest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    done = sorted((p for p in root.glob("step_*") if _meta(p) is not None), reverse=True)
    pointer = root / "latest"
    named = root / pointer.read_text().strip() if pointer.exists() else None
    return ([named] if named in done else []) + [p for p in done if p != named]


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Remove the half-written ``.name.tmpPID`` files a killed run left in its checkpoints (call while
    holding the run directory's lock, before anything is written); returns what was removed."""
    root = Path(run_dir) / "checkpoints"
    gone = [p for p in root.rglob(".*.tmp*") if p.is_file()] if root.is_dir() else []
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


def mark_evaluated(folder: Path) -> None:
    """Record in ``folder``'s meta.json that the run's final evaluation is written (main process)."""
    meta = json.loads((folder / "meta.json").read_text())
    atomic_write_text(folder / "meta.json", json.dumps({**meta, "final_eval": True}, indent=2))


def load_checkpoint(folder: Path, engine) -> dict:
    """Load the local components' states from ``folder`` into ``engine``; returns the meta dict.

    A file that cannot be read raises :class:`DamagedCheckpoint` naming it."""
    meta = _meta(folder)
    if meta is None:
        raise DamagedCheckpoint(f"{folder / 'meta.json'} cannot be read: the checkpoint is damaged")
    for k in engine.local_components:
        path = folder / f"component_{k + 1}.pt"
        if not path.exists():
            raise DamagedCheckpoint(f"{path} is missing: the checkpoint has no state for component {k + 1}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated (PytorchStreamReader), overwritten (UnpicklingError), empty (EOFError)
            raise DamagedCheckpoint(f"{path} is damaged ({type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else 'no detail'})") from err
        engine.load_component_state(k, state)
    engine.step_count = int(meta["step"])
    return meta
