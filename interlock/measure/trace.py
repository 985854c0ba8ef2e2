"""Traces and per-component metrics from action records (measured or simulated).

Every engine returns :class:`~interlock.core.worker.ActionRecord` lists (component, action,
start, end), and :func:`interlock.timemodel.clock.critical_path` returns simulated ones; this module
turns either into a Chrome trace (chrome://tracing, https://ui.perfetto.dev), a Gantt chart
PNG with one row per component like Fig. 2 of Gomez et al. 2022, or JSON-able times.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

from ..core import schedule as S
from ..core.worker import ActionRecord

__all__ = ["CATEGORIES", "category", "chrome_trace", "gantt_png", "component_times"]

logger = logging.getLogger(__name__)

# The Gantt colour of each action category (interlock.core.schedule.CATEGORIES names them).
_COLOURS = {
    "forward": "#4c72b0",
    "head": "#8c8c8c",
    "input gradient": "#dd8452",
    "weight gradient": "#55a868",
    "full backward": "#c44e52",
    "communication": "#ccb974",
    "update": "#8172b3",
}
# Action categories, in legend order, with their Gantt colours (a category without one is drawn grey).
CATEGORIES = {cat: _COLOURS.get(cat, "#bbbbbb") for cat in S.CATEGORIES}


def category(action: S.Action) -> str:
    """The category (a key of :data:`CATEGORIES`) an action is drawn and counted under: its own ``category``."""
    cat = getattr(action, "category", None)
    if cat not in CATEGORIES:
        raise ValueError(
            f"no trace category for action {action!r} (category {cat!r}); give its class one of "
            f"interlock.core.schedule.CATEGORIES"
        )
    return cat


def _check(records: Sequence[ActionRecord]) -> list[ActionRecord]:
    records = list(records)
    if not records:
        raise ValueError("no records to draw: run steps with record=True and pass their .records")
    for r in records:
        if not isinstance(r, ActionRecord):
            raise ValueError(f"expected interlock ActionRecords, got {type(r).__name__}")
        category(r.action)  # fail early on an unknown action
    return records


def _args(r: ActionRecord) -> dict:
    """The action's fields for the trace viewer; losses named as in the docs (L_1 .. L_K).

    Optional fields at their defaults (no micro-batch, no kept gradients) are left out."""
    args = {"component": r.component + 1}
    for f in dataclasses.fields(r.action):
        value = getattr(r.action, f.name)
        if f.default is not dataclasses.MISSING and value == f.default:
            continue
        if f.name == "loss":
            value = f"L_{value + 1}"
        elif f.name == "losses":
            value = [f"L_{j + 1}" for j in value]
        args[f.name] = value
    return args


def _read_umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it, so set it straight back
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    # A reader (or a crash) never sees a half-written file: write beside it, then rename.
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    # mkstemp makes the file 0600; a trace is as readable as every other file of the run (0666 less the umask).
    os.fchmod(fd, 0o666 & ~_UMASK)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
        logger.debug("wrote %s", path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def chrome_trace(records: Sequence[ActionRecord], path: str | os.PathLike, *, origin_s: float | None = None) -> Path:
    """Write the records as Chrome trace-event JSON: one row ("thread") per component.

    One complete ("X") event per record, named by the action kind, its category and
    fields (the stream's loss, hops left) in ``args``; times in microseconds from
    ``origin_s`` (default: the earliest start). Written atomically; returns the path.
    """
    records = _check(records)
    origin = min(r.start_s for r in records) if origin_s is None else float(origin_s)
    pid = 1
    events: list[dict] = [{"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": "interlock"}}]
    for k in sorted({r.component for r in records}):
        tid = k + 1
        events.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": f"component {tid}"}})
        events.append({"name": "thread_sort_index", "ph": "M", "pid": pid, "tid": tid, "args": {"sort_index": tid}})
    for r in records:
        events.append(
            {
                "name": r.action.kind,
                "cat": category(r.action),
                "ph": "X",
                "pid": pid,
                "tid": r.component + 1,
                "ts": (r.start_s - origin) * 1e6,
                "dur": max(r.end_s - r.start_s, 0.0) * 1e6,
                "args": _args(r),
            }
        )

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump({"traceEvents": events, "displayTimeUnit": "ms"}, f)

    return _atomic_write(path, write)


def gantt_png(records: Sequence[ActionRecord], path: str | os.PathLike, *, title: str) -> Path:
    """Draw the records as a Gantt chart PNG: one row per component (component 1 at the
    bottom, as activations flow upwards), one bar per action coloured by :func:`category`.
    Written atomically; returns the path."""
    records = _check(records)
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
    except ImportError as err:  # matplotlib is optional for the library
        raise ImportError("gantt_png needs matplotlib: pip install matplotlib") from err

    origin = min(r.start_s for r in records)
    components = sorted({r.component for r in records})
    rows = {k: i for i, k in enumerate(components)}
    bars: dict[tuple[int, str], list[tuple[float, float]]] = defaultdict(list)
    for r in records:
        bars[(r.component, category(r.action))].append((r.start_s - origin, max(r.end_s - r.start_s, 0.0)))

    # The Figure API (no pyplot) keeps no global state and needs no display.
    fig = Figure(figsize=(11, 1.2 + 0.6 * len(components)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for (k, cat), spans in bars.items():
        ax.broken_barh(spans, (rows[k] - 0.4, 0.8), facecolors=CATEGORIES[cat], edgecolor="white", linewidth=0.3)
    ax.set_yticks(range(len(components)), [f"component {k + 1}" for k in components])
    ax.set_ylim(-0.6, len(components) - 0.4)
    end = max(r.end_s for r in records) - origin
    ax.set_xlim(0, end * 1.01 if end > 0 else 1.0)
    ax.set_xlabel("time (s)")
    ax.set_title(title)
    used = {cat for _, cat in bars}
    handles = [Patch(color=color, label=cat) for cat, color in CATEGORIES.items() if cat in used]
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small", frameon=False)
    return _atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


def component_times(records: Sequence[ActionRecord]) -> list[dict]:
    """Per component (ascending), JSON-able: where its time went.

    ``busy_s``: compute actions (forward, head, backward passes, update); ``wait_s``: time
    in receives (waiting for the neighbour, plus the transfer); ``comm_s``: sends;
    ``span_s``: first start to last end; ``idle_s``: the rest of the span (between
    actions: another component's turn in the simulated engine, overhead in a distributed
    one); ``steps``: completed steps (Updates); ``*_per_step_s``: means per step (None
    without a completed step).
    """
    records = _check(records)
    by_component: dict[int, list[ActionRecord]] = defaultdict(list)
    for r in records:
        by_component[r.component].append(r)
    out = []
    for k in sorted(by_component):
        rs = by_component[k]
        busy = sum(r.duration_s for r in rs if r.action.comm is None)
        wait = sum(r.duration_s for r in rs if r.action.comm == "recv")
        comm = sum(r.duration_s for r in rs if r.action.comm == "send")
        span = max(r.end_s for r in rs) - min(r.start_s for r in rs)
        steps = sum(r.action.category == "update" for r in rs)
        out.append(
            {
                "component": k + 1,
                "steps": steps,
                "busy_s": busy,
                "wait_s": wait,
                "comm_s": comm,
                "span_s": span,
                "idle_s": span - busy - wait - comm,
                "busy_per_step_s": busy / steps if steps else None,
                "wait_per_step_s": wait / steps if steps else None,
                "comm_per_step_s": comm / steps if steps else None,
            }
        )
    return out
