"""The run's log file: what interlock logs also goes to ``log.txt`` in the run's folder."""

from __future__ import annotations

import logging
from pathlib import Path

from ..training.rundir import explain_write_error

__all__ = ["add_file_log", "remove_file_log"]


def add_file_log(log_path: Path) -> logging.Handler:
    """Send what interlock logs to ``log_path`` too (a folder that cannot be written is said in one line)."""
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_path)
    except OSError as err:
        raise explain_write_error(err, log_path) from None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("interlock").addHandler(handler)
    return handler


def remove_file_log(handler: logging.Handler) -> None:
    logging.getLogger("interlock").removeHandler(handler)
    handler.close()
