"""Atomic, per-component checkpoints.

Layout of a run directory::

    checkpoints/step_00000400/component_1.pt ... component_K.pt, meta.json
    checkpoints/latest            # names the newest complete checkpoint folder

Each process writes the files of the components it holds (each file atomically), then the
main process writes ``meta.json`` and finally replaces ``latest``. A crash at any point
leaves ``latest`` naming the previous complete checkpoint, so nothing finished is lost.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from .metrics import atomic_write_text

__all__ = ["save_checkpoint", "load_checkpoint", "latest_checkpoint"]

KEEP = 2  # complete checkpoints kept; older ones are removed after a new one is complete


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_checkpoint(run_dir: Path, engine, meta: dict) -> Path:
    """Write every local component's state, then (main process) meta.json and the ``latest`` pointer.

    ``engine.barrier()`` waits until every process has written its components.
    """
    root = Path(run_dir) / "checkpoints"
    folder = root / f"step_{engine.step_count:08d}"
    folder.mkdir(parents=True, exist_ok=True)
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


def load_checkpoint(folder: Path, engine) -> dict:
    """Load the local components' states from ``folder`` into ``engine``; returns the meta dict."""
    meta = json.loads((folder / "meta.json").read_text())
    for k in engine.local_components:
        path = folder / f"component_{k + 1}.pt"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: the checkpoint has no state for component {k + 1}")
        engine.load_component_state(k, torch.load(path, map_location="cpu", weights_only=False))
    engine.step_count = int(meta["step"])
    return meta
