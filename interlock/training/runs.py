"""Reusing finished runs: only when the run directory's config is the one asked for.

``compare`` and ``reproduce`` train many runs into one folder tree and skip those already
done. A run is reused only when its saved ``config.json`` equals the requested config in
every option that changes what is trained (everything but ``run_dir``, ``dist_timeout_s``
and ``data.fallback``); an earlier run
with another config is refused with the options that differ, or moved aside when the
caller asks for a rerun, never reported under the new config's name.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from .config import TrainConfig

__all__ = ["RunState", "run_state", "config_differences", "RunConfigMismatch"]

# Options that say where a run lives or how long a rank may wait, not what it trains or
# measures. data.fallback only says what to do were CIFAR-10 missing; a substitution that
# happened is recorded in data.name and data.substitute_for, which are compared.
_IGNORED = ("run_dir", "dist_timeout_s", "data.fallback")


class RunConfigMismatch(ValueError):
    """A run directory holds a run of another config."""


class RunState:
    NEW = "new"  # nothing there: train from scratch
    PARTIAL = "partial"  # same config, interrupted: resume from its newest checkpoint
    FINISHED = "finished"  # same config, done: reuse its metrics


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k not in ("kwargs", "head_kw"):  # option dicts compare as one value
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _normalise(values: dict) -> dict:
    # Through JSON so that tuples and lists compare equal, as they do once saved.
    flat = _flatten(json.loads(json.dumps(values)))
    return {k: v for k, v in flat.items() if k not in _IGNORED}


def _defaults() -> dict:
    from .config import describe_options

    return {key: json.loads(default) for key, _, default, _ in describe_options()}


def config_differences(saved: dict, wanted: TrainConfig) -> list[str]:
    """``option: saved -> wanted`` for every option (dotted) that differs, ignoring those in ``_IGNORED``.

    An option the saved config lacks (it was added to interlock after that run) counts as
    its default, so adding an option does not orphan every earlier run.
    """
    a, b = _normalise(saved), _normalise(wanted.to_dict())
    for key, default in _defaults().items():
        if key not in _IGNORED and key not in a:
            a[key] = default
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _finished(run_dir: Path) -> bool:
    from .checkpoint import latest_checkpoint

    folder = latest_checkpoint(run_dir)
    if folder is None:
        return False
    meta = json.loads((folder / "meta.json").read_text())
    # (final_eval False: stopped during the final evaluation; resuming only evaluates)
    return meta["step"] >= meta["total_steps"] and meta.get("final_eval", True)


def run_state(run_dir: str | Path, config: TrainConfig, *, rerun: bool = False, where_option: str = "--run-dir") -> str:
    """What to do with ``run_dir`` for ``config``: a :class:`RunState` value.

    A directory whose config differs raises :class:`RunConfigMismatch` naming the options (and
    ``where_option``, the caller's option that chooses the folder: ``--run-dir``, ``--root``),
    unless ``rerun``: then it is renamed ``<run_dir>.replaced-<time>`` (kept, not deleted)
    and the run starts anew.
    """
    from .checkpoint import latest_checkpoint

    run_dir = Path(run_dir)
    saved_path = run_dir / "config.json"
    if not run_dir.exists() or (not saved_path.exists() and latest_checkpoint(run_dir) is None):
        return RunState.NEW
    diffs = config_differences(json.loads(saved_path.read_text()), config) if saved_path.exists() else ["config.json is missing"]
    if diffs:
        if not rerun:
            raise RunConfigMismatch(
                f"{run_dir} holds a run of another config ({'; '.join(diffs[:6])}{' ...' if len(diffs) > 6 else ''}); "
                f"pass --rerun to move it aside and train anew, or choose another {where_option}"
            )
        aside = run_dir.with_name(f"{run_dir.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.move(str(run_dir), str(aside))
        return RunState.NEW
    if latest_checkpoint(run_dir) is None:
        return RunState.NEW  # same config; the earlier attempt died before its first checkpoint
    return RunState.FINISHED if _finished(run_dir) else RunState.PARTIAL
