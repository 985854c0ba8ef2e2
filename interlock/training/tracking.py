"""Experiment trackers fed from the rows of ``metrics.jsonl``: TensorBoard and Weights & Biases.

``metrics.jsonl`` stays the run's record; a tracker receives the very rows written there (on every
engine the main rank writes them), each numeric field as a scalar ``<kind>/<field>`` at the row's
step (``train/loss_1``, ``eval/test_final_acc``). Both packages are optional extras
(``pip install 'interlock[track]'``); asking for one that is not installed is a config error.

Resume: TensorBoard drops the events after the checkpoint's step (``purge_step``), as
``metrics.jsonl`` drops its rows; W&B continues the run of the same id (kept in
``<run_dir>/wandb_run_id``), so a resumed run is one W&B run.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from ..checks import is_number

__all__ = ["TrackConfig", "scalars", "TensorBoardSink", "WandbSink", "make_sinks"]

WANDB_MODES = ("", "offline", "online")


@dataclass
class TrackConfig:
    """Trackers that also receive the metrics rows (the JSONL file is written either way)."""

    tensorboard: bool = False  # write TensorBoard events under <run_dir>/tensorboard (needs tensorboard)
    wandb: str = ""  # "" (off) | offline (a W&B run under <run_dir>/wandb, no network; wandb sync uploads it) | online
    wandb_project: str = "interlock"  # the W&B project the run belongs to
    memory: bool = False  # peak memory per component in the train rows: saved activations (counted by autograd hooks), parameters, gradients, optimizer state; on a GPU the allocator's peak too

    def __post_init__(self) -> None:
        for name in ("tensorboard", "memory"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"track.{name}={getattr(self, name)!r}: use true or false")
        if self.wandb not in WANDB_MODES:
            raise ValueError(f"track.wandb={self.wandb!r}: use offline, online or \"\" (off)")
        for wanted, package in ((self.tensorboard, "tensorboard"), (bool(self.wandb), "wandb")):
            if wanted and importlib.util.find_spec(package) is None:
                option = "track.tensorboard=true" if package == "tensorboard" else f"track.wandb={self.wandb}"
                raise ValueError(f"{option} needs the {package} package: pip install 'interlock[track]' "
                                 f"(or pip install {package}), or turn the option off")


def scalars(row: dict) -> dict[str, float]:
    """The row's numeric fields as ``<kind>/<field>`` scalars (the step, booleans and non-finite values left out)."""
    kind = row.get("kind", "row")
    return {f"{kind}/{k}": float(v) for k, v in row.items()
            if k not in ("step", "kind") and is_number(v)}


class TensorBoardSink:
    def __init__(self, run_dir: Path, *, resume_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: events at steps after the checkpoint are dropped, as metrics.jsonl drops its rows.
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"),
                                    purge_step=None if resume_step is None else resume_step + 1)

    def log(self, row: dict) -> None:
        step = int(row.get("step", 0))
        for tag, value in scalars(row).items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    def __init__(self, run_dir: Path, *, mode: str, project: str, config: dict, resume_step: int | None) -> None:
        import wandb

        run_dir = Path(run_dir)
        id_file = run_dir / "wandb_run_id"
        if resume_step is not None and id_file.exists():
            run_id = id_file.read_text().strip()
        else:
            run_id = secrets.token_hex(4)
            id_file.write_text(run_id + "\n")
        os.environ.setdefault("WANDB_SILENT", "true")  # its banner would break the one-line progress display
        self.run = wandb.init(mode=mode, dir=str(run_dir), project=project, id=run_id, name=run_dir.name,
                              config=config, resume="allow")

    def log(self, row: dict) -> None:
        # W&B steps must grow; a train row and an eval row of one step share it.
        self.run.log(scalars(row), step=int(row.get("step", 0)))

    def close(self) -> None:
        self.run.finish()


def make_sinks(track: TrackConfig, run_dir: Path, *, config: dict, resume_step: int | None) -> list:
    """The trackers ``track`` asks for, opened on ``run_dir`` (``resume_step``: the checkpoint's step on resume)."""
    sinks: list = []
    if track.tensorboard:
        sinks.append(TensorBoardSink(run_dir, resume_step=resume_step))
    if track.wandb:
        sinks.append(WandbSink(run_dir, mode=track.wandb, project=track.wandb_project, config=config,
                               resume_step=resume_step))
    return sinks
