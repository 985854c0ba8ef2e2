"""Metrics of a run as JSON lines (one row per event) and a CSV view of the same rows."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
from pathlib import Path

__all__ = ["MetricsWriter", "read_metrics", "atomic_write_text", "summarise"]


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a crash leaves either the old file or the new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:  # a full disk or a read-only folder: no half-written temporary left, and say which
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        from .rundir import explain_write_error

        raise explain_write_error(err, path) from err


def _clean(value):
    # JSON has no NaN/inf: write them as null so every line stays valid JSON.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsWriter:
    """Appends rows to ``metrics.jsonl``; ``write_csv`` renders all rows as ``metrics.csv``.

    ``keep_until_step``: on resume, rows after the checkpoint's step are dropped first, so the
    resumed run's file equals an uninterrupted run's. ``sinks``: trackers (interlock.training.tracking)
    that receive every row written, as written.
    """

    def __init__(self, run_dir: Path, *, keep_until_step: int | None = None, sinks: list | None = None) -> None:
        self.sinks = list(sinks or [])
        self.path = Path(run_dir) / "metrics.jsonl"
        self.csv_path = Path(run_dir) / "metrics.csv"
        if keep_until_step is None:
            self.path.write_text("")
        else:
            rows = [r for r in read_metrics(self.path) if r.get("step", 0) <= keep_until_step] if self.path.exists() else []
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in rows))
        self._file = open(self.path, "a")

    def write(self, row: dict) -> None:
        row = {k: _clean(v) for k, v in row.items()}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        for sink in self.sinks:
            sink.log(row)

    def write_csv(self) -> None:
        rows = read_metrics(self.path)
        columns: list[str] = []
        for r in rows:
            columns.extend(c for c in r if c not in columns)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=columns, restval="")
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(self.csv_path, buf.getvalue())

    def close(self) -> None:
        self._file.close()
        for sink in self.sinks:
            sink.close()


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def summarise(rows: list[dict]) -> dict:
    """A run's metrics rows in brief: its last evaluation and the medians of its training rows."""
    evals = [r for r in rows if r.get("kind") == "eval"]
    train = [r for r in rows if r.get("kind") == "train"]

    def median(key: str) -> float | None:
        values = [r[key] for r in train if r.get(key) is not None]
        return statistics.median(values) if values else None

    return {
        "final": evals[-1] if evals else {},
        "step_time_s": median("step_time_s"),
        "samples_per_s": median("samples_per_s"),
        # The simulated engine's critical-path estimate of a step on K devices (absent for other engines).
        "predicted_parallel_step_time_s": median("predicted_parallel_step_time_s"),
    }
