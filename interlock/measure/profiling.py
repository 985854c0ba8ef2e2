"""``profile_steps=a:b``: torch.profiler traces of training steps a..b, one file per process.

While a profile is recording, the worker wraps each action in ``torch.profiler.record_function``
named as in interlock's own trace (the action's kind, e.g. ``Forward``, ``SendStream``, with its
component), so the kernels and the communication a step launches sit under the schedule's
actions. Each process writes ``<run_dir>/profile/component_<k>.json`` (one per rank;
``components_<first>-<last>.json`` when one process holds several), a Chrome trace that Perfetto
(ui.perfetto.dev) and chrome://tracing load. Outside a profile nothing is wrapped: a run pays
nothing for the option.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

__all__ = ["parse_profile_steps", "StepProfiler", "recording", "close_open"]

_RECORDING = False  # read by the worker once per action
_OPEN: "StepProfiler | None" = None  # the profiler recording now, for close_open after a failure


def recording() -> bool:
    """Whether a profile is recording in this process (the worker then names its actions)."""
    return _RECORDING


def parse_profile_steps(text: str) -> tuple[int, int] | None:
    """``"a:b"`` -> (a, b), training steps counted from 1, both included; ``""`` -> None."""
    if text == "":
        return None
    m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(text))
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise ValueError(f"profile_steps={text!r}: give a:b, the first and last training step to profile "
                         "(1 <= a <= b, e.g. 5:7), or \"\" for none")
    return int(m.group(1)), int(m.group(2))


_FINISHED: list = []  # finished profiles, kept alive (see StepProfiler._stop)


class StepProfiler:
    """Starts torch.profiler before step a, stops after step b and writes this process's trace."""

    def __init__(self, spec: str, run_dir: Path, components: list[int], device: torch.device) -> None:
        self.window = parse_profile_steps(spec)
        ks = [k + 1 for k in components]
        name = f"component_{ks[0]}" if len(ks) == 1 else f"components_{ks[0]}-{ks[-1]}"
        self.path = Path(run_dir) / "profile" / f"{name}.json"
        self.activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            self.activities.append(torch.profiler.ProfilerActivity.CUDA)
        self._prof = None

    def before_step(self, step: int) -> None:
        """``step``: the training step (from 1) about to run."""
        global _RECORDING
        if self.window is not None and self._prof is None and self.window[0] <= step <= self.window[1]:
            global _OPEN
            self._prof = torch.profiler.profile(activities=self.activities, record_shapes=False)
            self._prof.__enter__()
            _RECORDING, _OPEN = True, self

    def after_step(self, step: int, *, last: bool = False) -> None:
        """``step``: the training step just run; ``last``: the run stops here (a window past the end is cut)."""
        if self._prof is not None and (step >= self.window[1] or last):
            self._stop()

    def _stop(self) -> None:
        global _RECORDING, _OPEN
        prof, self._prof = self._prof, None
        _RECORDING, _OPEN = False, None
        prof.__exit__(None, None, None)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(self.path))
        # Never let the garbage collector free a finished profile: on torch 2.13's CPU build, collecting one
        # segfaulted about one ranks run in four (a cycle collected at the next checkpoint's torch.save,
        # tests/test_profiling.py). A profile is one per process and run, so keeping it costs little.
        _FINISHED.append(prof)

    def close(self) -> None:
        """End a profile still recording (a run that stopped inside the window), keeping what it recorded."""
        if self._prof is not None:
            self._stop()


def close_open() -> None:
    """After a run failed inside its window: end the profile and write what it recorded."""
    if _OPEN is not None:
        _OPEN.close()
