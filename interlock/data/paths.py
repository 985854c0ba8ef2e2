"""Where the real data sets are: an explicit path, $INTERLOCK_DATA, or the shared data folder beside the project."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["find_data_root", "ENV_VAR"]

ENV_VAR = "INTERLOCK_DATA"


def find_data_root(explicit: str | Path | None = None) -> Path | None:
    """The first existing folder of: ``explicit``, ``$INTERLOCK_DATA``, ``../shared/data`` from the
    project checkout or from the working directory. None if none exists (an explicit path that
    does not exist is an error, not a silent fallback)."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"data folder {path} does not exist; pass a folder holding e.g. cifar-10-batches-bin/")
        return path
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"${ENV_VAR}={env} is not a folder; point it at the folder holding cifar-10-batches-bin/ etc.")
        return path
    checkout = Path(__file__).resolve().parents[2]
    for candidate in (checkout.parent / "shared" / "data", Path.cwd().parent / "shared" / "data", Path.cwd() / "data"):
        if candidate.is_dir():
            return candidate
    return None
