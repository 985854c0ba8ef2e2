"""The training program: one run of one strategy, from a TrainConfig, on any engine.

``run(config)`` builds the task (data), the network and the engine, trains for the
configured steps, evaluates every head, writes metrics and atomic checkpoints into the
run directory, and returns the final evaluation. ``run(config, resume=True)`` continues
from the newest complete checkpoint and ends where an uninterrupted run would.

The loop only talks to the engine through the interface both engines offer (step,
gather_losses, heads_forward, all_reduce_sum, component states), so the same function
runs in one process or, under ``interlock train --engine distributed``, in every rank.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import heads, models
from ..errors import REQUEST_ERRORS, RunFailure
from ..measure import timing
from ..runtime._memory import release_free_memory
from .checkpoint import (DamagedCheckpoint, checkpoint_candidates, load_checkpoint, mark_evaluated,
                         remove_stale_temporaries, save_checkpoint)
from .config import LossConfig, LRConfig, OptimConfig, TrainConfig, load_config
from .metrics import MetricsWriter, atomic_write_text, read_metrics
from .param_groups import split_no_decay
from ..measure import memstats, profiling
from .rundir import RunDirError, lock_run_dir
from ..measure.profiling import StepProfiler
from .devices import check_device
from .spawn import launch, under_launcher
from .tracking import make_sinks
from ..data.text import IGNORE_INDEX
from .tasks import Task, build_task, resolve_data
from ..engine import Engine, Losses
from ..measure.timing import resolve as resolve_times

__all__ = ["run", "RunResult", "TrainingDiverged", "make_optimizer_factory", "make_lr_factory", "evaluate"]

log = logging.getLogger(__name__)


class TrainingDiverged(RunFailure):
    """A loss became NaN or infinite, or exploded while finite; the newest checkpoint (if any) is kept.

    ``step``: the training step whose loss or weights diverged (losses are checked in batches, a
    few steps after they were computed: the step the loop had reached is not the one that failed);
    ``component`` (1-based): the component whose loss or weights diverged."""

    def __init__(self, message: str, step: int | None = None, *, component: int | None = None) -> None:
        super().__init__(message, phase=None if step is None else "training step", step=step, component=component)


@dataclass
class _Where:
    """What the training loop is doing, for error messages: ``phase`` ("training step", "evaluation", ...) and ``step``."""

    phase: str = "setup"
    step: int = 0

    def __str__(self) -> str:
        return self.phase if self.phase == "setup" else f"{self.phase} {self.step}"


@dataclass
class RunResult:
    run_dir: Path
    steps: int
    final: dict  # the last evaluation row
    train_time_s: float
    history: list[dict] = field(default_factory=list)


def make_optimizer_factory(cfg: OptimConfig, exempt: "frozenset[int] | set[int]" = frozenset()) -> Callable:
    """Every component's optimizer. It takes ``(name, parameter)`` pairs (``takes_names``); with
    ``cfg.no_decay`` the parameters whose ids are in ``exempt`` (norms' weights, biases, embeddings:
    :func:`interlock.training.param_groups.split_no_decay`) go in a group with weight decay 0."""

    def factory(named):
        named = list(named)
        if cfg.no_decay:
            groups = [{"params": [(n, p) for n, p in named if id(p) not in exempt], "weight_decay": cfg.weight_decay},
                      {"params": [(n, p) for n, p in named if id(p) in exempt], "weight_decay": 0.0}]
            params = [g for g in groups if g["params"]]  # a component may hold only one kind
        else:
            params = named
        if cfg.name == "sgd":
            return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
        cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
        return cls(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)

    factory.takes_names = True
    return factory


def lr_multiplier(cfg: LRConfig, total_steps: int) -> Callable[[int], float]:
    """The LR schedule as a multiplier of the base LR, per step (LambdaLR convention)."""
    warm = cfg.warmup_steps
    milestones = [round(m * total_steps) for m in cfg.milestones]

    def f(step: int) -> float:
        if cfg.name == "inverse_sqrt":  # Transformer schedule: linear warm-up, then 1/sqrt(step)
            s = step + 1
            return min(s / warm, math.sqrt(warm / s))
        scale = min(1.0, (step + 1) / warm) if warm else 1.0
        if cfg.name == "multistep":
            return scale * cfg.gamma ** sum(step >= m for m in milestones)
        if cfg.name == "cosine":
            progress = min(1.0, max(0.0, (step - warm) / max(1, total_steps - warm)))
            return scale * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
        return scale

    return f


def make_lr_factory(cfg: LRConfig, total_steps: int) -> Callable | None:
    if cfg.name == "none" and cfg.warmup_steps == 0:
        return None
    mult = lr_multiplier(cfg, total_steps)
    return lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, mult)


def make_loss_fn(task: Task, label_smoothing: float) -> Callable:
    if task.is_text:
        def lm_loss(logits, y):  # (B, T, V) vs (B, T)
            return F.cross_entropy(logits.flatten(0, 1), y.flatten(), label_smoothing=label_smoothing)
        return lm_loss

    def cls_loss(logits, y):  # (B, C) vs (B,)
        return F.cross_entropy(logits, y, label_smoothing=label_smoothing)

    return cls_loss


def build_net(config: TrainConfig, task: Task):
    part = config.model.partition
    if part == "time" or (isinstance(part, list) and part and isinstance(part[0], str)):
        raise ValueError(f"model.partition={part!r} (measured time or module paths) applies to your own model "
                         f"(model.factory=module:function or train.run(config, model=...)); registered models take "
                         f"uniform, params, flops or block indices")
    torch.manual_seed(config.seed)  # the same weights on every rank and every engine
    head_kw = dict(config.model.head_kw)
    if config.model.components > 1 and any(heads.takes(h, "sim_weight") for h in config.model.head_names):  # PredSim's mixed loss
        head_kw["sim_weight"] = config.loss.sim_weight
    elif config.loss.sim_weight != LossConfig().sim_weight:
        raise ValueError(f"loss.sim_weight applies to heads with a similarity loss (model.heads=predsim); "
                         f"model.heads={config.model.heads!r} has none: leave loss.sim_weight out")
    return models.create(
        config.model.name,
        components=config.model.components,
        heads=config.model.heads,
        partition=config.model.partition,
        head_kw=head_kw,
        **{**task.model_kwargs, **config.model.kwargs},
    )


def _no_decay_ids(net) -> frozenset[int]:
    modules = [m for m in (*net.blocks, *net.heads) if m is not None]
    return frozenset(id(p) for p in split_no_decay(modules)[1])


# The config's engine names: which runtime, and for "pipeline" PyTorch's pipeline schedules.
RUNTIME_OF = {"simulated": "local", "distributed": "ranks", "pipeline": "ranks"}


def make_engine(config: TrainConfig, net, task: Task, total_steps: int) -> Engine:
    strategy = config.strategy_obj
    # Each component's LR schedule spans the updates it makes (a sequential stage, or the whole run).
    updates = strategy.updates_per_component(config.model.components, total_steps)
    lr_scheduler = (make_lr_factory(config.lr, total_steps) if updates is None
                    else [make_lr_factory(config.lr, n) for n in updates])
    kw = dict(
        optimizer=make_optimizer_factory(config.optim, _no_decay_ids(net) if config.optim.no_decay else frozenset()),
        loss_fn=make_loss_fn(task, config.label_smoothing),
        lr_scheduler=lr_scheduler,
        loss_weights=config.loss_weights,
        rng_seed=config.seed,  # dropout masks depend on (seed, step, component) only: resumable, runtime-independent
        record=True,  # action timings: per-component busy/wait/comm time, traces, predicted K-device time
        split_backward=config.split_backward,
        microbatches=config.microbatches,
        clip_norm=config.clip.norm, clip_mode=config.clip.mode, ema_decay=config.ema.decay,
        precision=config.precision, compile=config.compile, compile_mode=config.compile_mode,
        # The run's length (quotas, stages, the final drain); Hogwild's pipeline drains where checkpoints
        # are written, so a checkpoint holds no batch in flight.
        total_steps=total_steps, flush_every=config.checkpoint_every,
    )
    runtime = RUNTIME_OF[config.engine]
    if runtime == "local":
        return Engine(net.to(config.device), strategy, **kw)
    if config.engine == "pipeline":
        kw.update(pipeline=config.pipeline.schedule, microbatches=config.pipeline.microbatches)
    # Training batches all have one size (the last smaller one is dropped): static shapes.
    return Engine(net, strategy, runtime="ranks", device=config.device, timeout_s=config.dist_timeout_s,
                  backend=config.dist_backend, static_shapes=True, **kw)


# Evaluation runs each batch through the network in chunks (data.eval_chunk; 0 picks these).
# On the distributed engine small chunks flow up the ranks as a pipeline (rank k scores
# chunk i+1 while rank k+1 scores chunk i) and each rank holds a few chunk-sized
# activations, not whole eval batches. One process gains nothing from small chunks and
# loses with several threads (each chunk's parallel regions wait for a thread that another
# job's load has descheduled), so it takes larger ones. Equal chunks give bit-identical
# numbers on every engine; different ones differ in rounding.
EVAL_CHUNK = {"distributed": 32, "pipeline": 32, "simulated": 128}
# Head probabilities are summed over processes (for the ensembles) once this many values
# are buffered, not once per batch: a per-batch collective would make every rank wait for
# the last one on every batch, serialising the pipeline.
_ENSEMBLE_BUFFER = 1 << 22


@torch.no_grad()
def evaluate(engine, batches, *, num_classes: int, is_text: bool, device: str = "cpu", chunk: int | None = None) -> dict:
    """Accuracy and mean loss of every head, and of the ensembles of the top m heads (m = 2..K).

    ``chunk``: examples per forward pass (None: whole batches).

    Each process scores the heads it holds; sums are reduced over processes. The ensemble of
    the top m heads averages the softmax of the heads among K-m+1..K (the interlocking
    paper's Table 2); heads a network lacks are left out (their accuracy is None).
    """
    K = engine.num_components
    net = engine.net
    present = torch.zeros(K, dtype=torch.float64)
    for k in engine.local_components:
        present[k] = float(net.heads[k] is not None)
    present = engine.all_reduce_sum(present)
    in_top = [present[K - m :].sum().item() for m in range(2, K + 1)]  # heads in each top-m ensemble
    was_training = net.training
    net.eval()
    correct = torch.zeros(2 * K - 1, dtype=torch.float64)  # heads 1..K, then ensembles m=2..K
    loss_sum = torch.zeros(2 * K - 1, dtype=torch.float64)
    count = 0
    pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (probs (K, N, C), targets (N,), valid (N,))

    def score_ensembles() -> None:
        # (K, N, C): each head's softmax in its own slot, zeros where another process holds the
        # head, so the reduction is exact and every engine sums the ensembles in the same order.
        probs = engine.all_reduce_sum(torch.cat([p for p, _, _ in pending], dim=1))
        yf = torch.cat([t for _, t, _ in pending])
        valid = torch.cat([v for _, _, v in pending])
        pending.clear()
        if not engine.is_main:  # scored once, on the main process
            return
        ens = torch.zeros_like(probs[0])
        for m in range(1, K + 1):  # the top m heads: K-m+1..K
            ens = ens + probs[K - m]
            if m == 1 or in_top[m - 2] == 0:
                continue
            mean = ens / in_top[m - 2]
            correct[K + m - 2] += ((mean.argmax(-1) == yf) & valid).sum().item()
            picked = mean.gather(1, yf.clamp_min(0)[:, None])[:, 0]
            loss_sum[K + m - 2] -= picked.clamp_min(1e-12).log()[valid].sum().item()

    buffered = 0
    for x, y in batches:
        size = chunk or len(y)
        ys = y.split(size)
        xs = [None] * len(ys) if x is None else x.split(size)  # (None: a rank that does not feed the network)
        for xc, yc in zip(xs, ys):
            xc, yc = None if xc is None else xc.to(device), yc.to(device)
            outs = engine.heads_forward(xc)
            yf = yc.flatten()
            valid = yf != IGNORE_INDEX  # text evaluation marks targets already scored by another window
            count += int(valid.sum())
            probs = torch.zeros(K, yf.numel(), num_classes, device=yf.device) if K > 1 else None
            for k, out in enumerate(outs):
                if out is None:
                    continue
                logits = (out.flatten(0, 1) if is_text else out).float()  # (N, C)
                correct[k] += ((logits.argmax(-1) == yf) & valid).sum().item()
                loss_sum[k] += F.cross_entropy(logits, yf, reduction="sum").item()
                if probs is not None:
                    probs[k] = logits.softmax(-1)
            if probs is not None:
                pending.append((probs, yf, valid))
                buffered += probs.numel()
                if buffered >= _ENSEMBLE_BUFFER:
                    score_ensembles()
                    buffered = 0
        release_free_memory()  # see interlock.runtime._memory: without it each rank's heap grows batch after batch
    if pending:
        score_ensembles()
    net.train(was_training)
    correct = engine.all_reduce_sum(correct)
    loss_sum = engine.all_reduce_sum(loss_sum)
    row: dict = {}
    for k in range(K):
        ok = present[k] > 0
        row[f"acc_{k + 1}"] = float(correct[k]) / count if ok else None
        row[f"loss_{k + 1}"] = float(loss_sum[k]) / count if ok else None
    for m in range(2, K + 1):
        ok = in_top[m - 2] > 0
        row[f"ensemble_acc_{m}"] = float(correct[K + m - 2]) / count if ok else None
        row[f"ensemble_loss_{m}"] = float(loss_sum[K + m - 2]) / count if ok else None
    row["final_acc"] = row[f"acc_{K}"]
    row["final_loss"] = row[f"loss_{K}"]
    if is_text:
        row["final_ppl"] = math.exp(min(row["final_loss"], 50.0))
    return row


def drop_unfed_inputs(task: Task, engine) -> None:
    """Only the process holding component 1 feeds the network: any other drops the inputs
    (most of its memory) and hands the freed pages back to the system."""
    if 0 not in engine.local_components:
        task.drop_inputs()
        release_free_memory()


def run(
    config: TrainConfig,
    *,
    resume: bool = False,
    on_progress: Callable[[dict], None] | None = None,
    stop_after: int | None = None,
    model=None,
    data=None,
) -> RunResult:
    """Train one run; see the module docstring.

    ``model``: your own network instead of ``model.name`` (an ``nn.Module`` or a list of blocks,
    split into ``model.components`` by ``model.partition`` with ``model.heads`` heads; or an
    ``interlock.ComponentNet``); ``data``: your own data instead of ``data.name`` (a
    ``Dataset``, a ``DataLoader``, an iterable of batches or a dict of train/val/test:
    interlock.data.user). ``model.factory`` / ``data.factory`` in the config do the same from
    importable functions. With ``engine=distributed`` (or ``pipeline``) outside torchrun, this
    starts one process per component itself (the objects are pickled to them) and
    ``on_progress`` receives rank 0's rows here.

    ``stop_after``: stop after that many steps as an interruption would (no final evaluation
    or checkpoint); used to test that resuming equals an uninterrupted run.
    """
    if config.engine in ("distributed", "pipeline") and not under_launcher():
        return launch(run, config, resume=resume, on_progress=on_progress, stop_after=stop_after, model=model, data=data)
    if config.threads:
        torch.set_num_threads(config.threads)
    from .custom import user_objects

    config, model, data = user_objects(config, model, data)
    custom_model = model is not None or bool(config.model.factory)
    # What really runs is what config.json records (a fallback data set under its own name).
    config = replace(config, data=resolve_data(config.data, seed=config.seed))
    check_device(config.device)
    run_dir = Path(config.run_dir)
    # The main process holds the run directory for the run's life (the ranks that a launcher
    # started run under its lock): a second run into it is refused, not interleaved.
    main = os.environ.get("RANK", "0") == "0"
    if main:
        with lock_run_dir(run_dir):
            return _run(config, run_dir, resume, on_progress, stop_after, model, data, custom_model)
    return _run(config, run_dir, resume, on_progress, stop_after, model, data, custom_model)


def _run(config: TrainConfig, run_dir: Path, resume: bool, on_progress, stop_after, model, data,
         custom_model: bool) -> RunResult:
    where = _Where()
    engine, failed = None, False
    try:
        if data is not None:
            from ..data.user import user_task

            task = user_task(data, config.data, seed=config.seed)
        else:
            task = build_task(config.data, seed=config.seed)
        total_steps = config.steps or max(1, math.ceil(config.epochs * task.steps_per_epoch))
        if custom_model:
            from .custom import build_user_net

            if data is None:  # a registered data set with your model: a sample batch for the split
                first = next(iter(task.train_batches(epoch=0, start_step=0)))
                task.sample = first
            net = build_user_net(model, config, task.sample[0])
        else:
            net = build_net(config, task)
        if getattr(task, "num_classes", None) is None:  # your data: the classes the network predicts
            from .custom import infer_num_classes

            task.num_classes = infer_num_classes(net, task.sample[0])
        engine = make_engine(config, net, task, total_steps)
        drop_unfed_inputs(task, engine)
        return _train(config, task, engine, run_dir, total_steps, resume, on_progress, stop_after, where)
    except BaseException as err:
        failed = True
        if isinstance(err, Exception) and not isinstance(err, (*REQUEST_ERRORS, RunDirError)):
            # Where it failed travels with the error (also from a rank to its launcher), so the
            # command line can say it in one line.
            failure = _failure(err, run_dir, where, engine)
            if failure is not err:
                raise failure from err
        raise
    finally:
        profiling.close_open()  # a failure inside profile_steps keeps what was recorded
        memstats.enable(False)
        if engine is not None:
            # After a failure, no waiting: a distributed rank would otherwise sit in the closing
            # barrier (its peers are still training) until dist_timeout_s, and its own error would
            # reach the launcher after the ones it causes in its peers; a failing flush would also
            # replace the original error.
            engine.close(wait=not failed)


def _failure(err: Exception, run_dir: Path, where: _Where, engine) -> RunFailure:
    """``err`` as a RunFailure that says where the run was: a RunFailure already keeps what it knows."""
    local = None if engine is None else engine.local_components
    context = {
        "run": str(run_dir), "phase": where.phase, "step": None if where.phase == "setup" else where.step,
        "component": local[0] + 1 if local is not None and len(local) == 1 else None,
        # When it failed, before closing the engine makes the peers fail too: the launcher
        # reports the rank that failed first as the cause.
        "failed_at": time.time(),
    }
    if not isinstance(err, RunFailure):
        return RunFailure.wrap(err, **context)
    # A divergence is found a few steps after the step it happened in: it names that step itself.
    if err.phase is not None:
        del context["phase"], context["step"]
    for name, value in context.items():
        if getattr(err, name) is None:
            setattr(err, name, value)
    return err


# -- the training loop ---------------------------------------------------------------------------
#
# _train reads top to bottom: where the run starts (fresh or resumed), then step after step, with a
# log row, an evaluation or a checkpoint where one is due, then the final checkpoint and evaluation.
# What its steps share lives in one _Loop; each piece of work is a function of it below.


@dataclass
class _Start:
    """Where a run starts: fresh, or from its newest readable checkpoint."""

    first_losses: list | None = None  # the divergence yardstick a resumed run keeps
    final_eval_due: bool = False  # a checkpoint of the last step whose final evaluation was stopped
    finished: RunResult | None = None  # the run had already finished: nothing to do


@dataclass
class _Loop:
    """What the training loop's steps share: the run they belong to, and the state they move on."""

    config: TrainConfig
    task: Task
    engine: object
    run_dir: Path
    total_steps: int
    start: int  # the step the run (re)started at
    end: int  # the step this call stops at (total_steps, or stop_after)
    stop_after: int | None
    on_progress: Callable[[dict], None] | None
    where: _Where
    metrics: MetricsWriter | None
    first_losses: list | None  # every component's loss before any update (None: not yet known)
    saved_step: int | None  # the newest complete checkpoint, for what a divergence message may promise
    step: int = 0
    last_eval: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    # Steps whose losses are still on the device: read (one host copy) and checked at the next log
    # row, evaluation or checkpoint, not at every step (a per-step read would drain a GPU pipeline).
    unchecked: list[tuple[int, Losses, list[bool] | None]] = field(default_factory=list)
    window_losses: list[list[float]] = field(default_factory=list)  # the checked losses of the current log window
    window_norms: list = field(default_factory=list)  # with clipping: each step's pre-clip gradient norms (on device)
    window_records: list = field(default_factory=list)
    # Log rows waiting for other processes' values (async DGL's ranks report at their own pace):
    # written in order once complete, never out of order, all of them by the end.
    held: list[tuple[dict, torch.Tensor, int]] = field(default_factory=list)
    traced: list = field(default_factory=list)
    # Step time is wall time per training step, data loading included, evaluation and checkpoints excluded.
    window_time: float = 0.0
    window_steps: int = 0
    train_time: float = 0.0
    step_end: float | None = None  # when the latest step returned on the host, until its device work is counted

    @property
    def device(self):
        # A distributed rank's own device (cuda:LOCAL_RANK under NCCL), else the configured one.
        return self.engine.device


def _train(config, task, engine, run_dir, total_steps, resume, on_progress, stop_after, where: _Where) -> RunResult:
    begin = _resume_point(task, engine, run_dir, total_steps) if resume else _fresh_start(run_dir)
    if begin.finished is not None:
        return begin.finished
    s = _open_run(config, task, engine, run_dir, total_steps, resume, begin.first_losses, on_progress, stop_after, where)
    if begin.final_eval_due:  # stopped during the final evaluation: the training is all in the checkpoint
        log.info("resumed %s at its last step %d: only the final evaluation is left", run_dir, s.start)
        s.last_eval = _final_evaluation(s)
        _close_metrics(s)
        return RunResult(run_dir=run_dir, steps=s.step, final=s.last_eval, train_time_s=0.0, history=s.history)
    profiler = StepProfiler(config.profile_steps, run_dir, engine.local_components, s.device)
    memstats.reset()
    memstats.enable(config.track.memory)
    while _more(s):
        epoch, offset = divmod(s.step, task.steps_per_epoch)
        tick = time.perf_counter()
        for x, y in task.train_batches(epoch=epoch, start_step=offset):
            _train_step(s, profiler, x, y, tick)
            # (a row at the run's steps too: async DGL may read batches past them until every quota is made)
            if engine.logs(s.step) and (s.step % config.log_every == 0 or s.step == total_steps or not _more(s)):
                _log_row(s, batch_size=y.shape[0])
            if config.eval_every and s.step % config.eval_every == 0 and s.step < total_steps:
                _catch_up(s)
                s.last_eval = _evaluate(s, final=False)
            if config.checkpoint_every and s.step % config.checkpoint_every == 0 and s.step < s.end:
                _catch_up(s)  # never save the weights of a step whose loss diverged, and keep every row up to it
                _checkpoint(s)
            if not _more(s):
                break
            tick = time.perf_counter()
    profiler.close()
    _check_unchecked(s)
    _release_rows(s, wait=True)
    # (stop_after ends a run early as a crash would: no final checkpoint)
    if s.step >= total_steps and not engine.wants_more:
        s.step = engine.end_training()  # (the processes agree on the step count of the final checkpoint)
        # The last step's checkpoint comes before the final evaluation: a stop during the
        # evaluation loses no training; --resume then only evaluates (meta.json's final_eval).
        _checkpoint(s, final_eval=False)
        s.last_eval = _final_evaluation(s)
    _close_metrics(s)
    return RunResult(run_dir=run_dir, steps=s.step, final=s.last_eval, train_time_s=s.train_time, history=s.history)


def _fresh_start(run_dir: Path) -> _Start:
    if checkpoint_candidates(run_dir):
        raise FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it, or choose another --run-dir")
    return _Start()


def _resume_point(task: Task, engine, run_dir: Path, total_steps: int) -> _Start:
    """Load the newest readable checkpoint into the engine; say what is left to do."""
    candidates = checkpoint_candidates(run_dir)
    if not candidates:
        raise FileNotFoundError(f"--resume: {run_dir} has no complete checkpoint to resume from; start the run without --resume")
    if engine.is_main:
        for path in remove_stale_temporaries(run_dir):
            log.info("removed %s, a checkpoint file a stopped run left half-written", path)
    meta = _load_newest_readable(candidates, engine)
    if hasattr(task, "check_position"):  # your data: the checkpoint says what it was trained on
        task.check_position(meta.get("data"))
    final_eval_due = meta["step"] >= total_steps and not meta.get("final_eval", True)
    if meta["step"] >= total_steps and not final_eval_due:
        # Finished already: report its final evaluation, write nothing (a second evaluation
        # row would duplicate the first). A longer steps=... continues it instead.
        log.info("%s already finished at step %d of %d; nothing to do (pass a larger steps= to continue it)",
                 run_dir, meta["step"], total_steps)
        evals = [r for r in read_metrics(run_dir) if r.get("kind") == "eval"] if (run_dir / "metrics.jsonl").exists() else []
        return _Start(finished=RunResult(run_dir=run_dir, steps=meta["step"], final=evals[-1] if evals else {}, train_time_s=0.0))
    log.info("resumed %s at step %d", run_dir, meta["step"])
    # (A checkpoint written before this yardstick existed has none: only NaN/inf stop that run.)
    return _Start(first_losses=meta.get("first_losses") or [None] * engine.num_components, final_eval_due=final_eval_due)


def _open_run(config: TrainConfig, task: Task, engine, run_dir: Path, total_steps: int, resume: bool,
              first_losses: list | None, on_progress, stop_after: int | None, where: _Where) -> _Loop:
    """config.json and the metrics writer (the main process's), and the loop's state at the start step."""
    start = engine.step_count
    if engine.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.json", json.dumps(config.to_dict(), indent=2) + "\n")
    engine.barrier()
    metrics = None
    if engine.is_main:
        sinks = make_sinks(config.track, run_dir, config=config.to_dict(), resume_step=start if resume else None)
        metrics = MetricsWriter(run_dir, keep_until_step=start if resume else None, sinks=sinks)
    return _Loop(config=config, task=task, engine=engine, run_dir=run_dir, total_steps=total_steps, start=start,
                 end=total_steps if stop_after is None else min(total_steps, stop_after), stop_after=stop_after,
                 on_progress=on_progress, where=where, metrics=metrics, first_losses=first_losses,
                 saved_step=start if resume else None, step=start)


def _more(s: _Loop) -> bool:
    """Whether to train another step. An engine whose components train at their own pace (async DGL)
    may need batches past total_steps until every component has made its quota (``wants_more``)."""
    if s.stop_after is not None and s.step >= s.stop_after:
        return False
    return s.step < s.total_steps or s.engine.wants_more


def _train_step(s: _Loop, profiler: StepProfiler, x, y, tick: float) -> None:
    """One training step on batch (x, y); ``tick``: when its batch began loading (the step's time starts there)."""
    config, engine, step = s.config, s.engine, s.step
    s.where.phase, s.where.step = "training step", step + 1
    profiler.before_step(step + 1)
    result = engine.step(None if x is None else x.to(s.device), y.to(s.device))
    profiler.after_step(step + 1, last=step + 1 >= s.end)
    s.step_end = time.perf_counter()
    spent = s.step_end - tick
    s.window_time += spent
    s.train_time += spent
    if s.first_losses is None:
        # Every component's loss before any update: the yardstick of divergence (saved
        # with each checkpoint, so a resumed run keeps it). One collective, once.
        s.first_losses = engine.gather_losses(list(result.losses))
    s.unchecked.append((step + 1, result.losses, result.updated))
    s.window_records.extend(result.records)
    if result.grad_norms is not None:
        s.window_norms.append(result.grad_norms.tensor())
    if config.trace_steps and s.start + 1 <= step < s.start + 1 + config.trace_steps:  # (the first step warms up)
        s.traced.extend(result.records)
        if step + 1 == s.start + 1 + config.trace_steps:
            _write_trace(engine, s.traced, s.run_dir,
                         title=f"{config.strategy}, K={engine.num_components}, steps {s.start + 2}..{step + 1}")
    s.step += 1
    s.window_steps += 1


def _log_row(s: _Loop, *, batch_size: int) -> None:
    """Every component's mean loss and action times over the window: one reduction per log row."""
    engine = s.engine
    _check_unchecked(s)
    _settle_time(s)
    s.window_records = resolve_times(s.window_records)  # GPU event marks -> seconds (one sync)
    table = _local_table(engine, s.window_losses, s.window_records, s.window_steps, s.window_norms)
    row = {"kind": "train", "step": s.step, "total_steps": s.total_steps, "epoch": s.step / s.task.steps_per_epoch,
           "step_time_s": s.window_time / s.window_steps, "samples_per_s": s.window_steps * batch_size / s.window_time,
           "lr": engine_lr(engine)}
    predicted = engine.predicted_time(s.window_records) if s.window_records else None
    if predicted is not None:
        # What K devices would need per step: the critical path of this window's measured actions.
        row["predicted_parallel_step_time_s"] = predicted.makespan_s / s.window_steps
    row.update(engine.counters())  # e.g. async DGL's updates per component and skipped draws
    s.held.append((row, table, s.step))
    _release_rows(s, wait=not _more(s))
    s.window_losses, s.window_records, s.window_time, s.window_steps = [], [], 0.0, 0
    s.window_norms = []


def _catch_up(s: _Loop) -> None:
    """Before an evaluation or a checkpoint: every step's loss checked, its device work counted, every row written."""
    _check_unchecked(s)
    _settle_time(s)
    _release_rows(s, wait=True)  # a resumed run keeps the rows up to its checkpoint: all of them written


def _check_unchecked(s: _Loop) -> None:
    if not s.unchecked:
        return
    values = torch.stack([l.tensor().to(s.device) for _, l, _ in s.unchecked]).tolist()
    for (at, _, updated), vals in zip(s.unchecked, values):
        if updated is not None and any(v is None or not math.isfinite(v) for v in s.first_losses):
            # Components that train at their own pace (async DGL, sequential stages) set theirs at
            # their first update (None: a NaN saved in a checkpoint).
            s.first_losses = [vals[k] if (v is None or not math.isfinite(v)) and updated[k] else v
                              for k, v in enumerate(s.first_losses)]
        _check_losses(s, vals, at, updated)
        s.window_losses.append(vals)
    s.unchecked.clear()


def _check_losses(s: _Loop, losses: list[float], step: int, updated: list[bool] | None) -> None:
    """Stop on a NaN/inf loss, or on a finite one ``divergence_ratio`` times its first-step value.

    ``updated``: which components trained this step (None: all); the others have no loss.
    """
    config = s.config
    ratio = config.divergence_ratio
    for k in s.engine.local_components:
        value = losses[k]
        if s.engine.net.heads[k] is None or (updated is not None and not updated[k]):
            continue
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"loss of component {k + 1} is {value} at step {step}; {_kept(s)}. Lower optim.lr "
                f"(now {config.optim.lr}) or add warm-up (lr.warmup_steps)", step, component=k + 1
            )
        first = None if s.first_losses is None else s.first_losses[k]
        # The first step's loss is the untrained network's (about ln(classes)); a healthy run
        # never comes near 100 times it. max(.., 0.1) keeps a near-zero first loss from
        # making every later wobble look like an explosion.
        if ratio and first is not None and math.isfinite(first) and value > ratio * max(first, 0.1):  # (None: no head)
            raise TrainingDiverged(
                f"loss of component {k + 1} is {value:.4g} at step {step}, over {ratio:g} times its first-step "
                f"loss ({first:.4g}): training diverged; {_kept(s)}. Lower optim.lr (now {config.optim.lr}) or add "
                f"warm-up (lr.warmup_steps); divergence_ratio=0 turns this check off", step, component=k + 1
            )


def _kept(s: _Loop) -> str:
    """What a stopped run keeps, for a divergence message."""
    if s.saved_step is None:
        return (f"the run stops here; no checkpoint was written before it (checkpoint_every={s.config.checkpoint_every}"
                f"{': one is written at the end only' if not s.config.checkpoint_every else ''})")
    return f"the run stops here and keeps its checkpoint of step {s.saved_step}"


def _settle_time(s: _Loop) -> None:
    # A step returns once its kernels are launched; on a GPU they may still be running. Wait for
    # them where a log row, evaluation or checkpoint needs the results anyway, once per step, and
    # count the wait as training time, so step times measure the device and not the launches.
    if s.step_end is None:
        return
    timing.settle(s.device)
    waited = time.perf_counter() - s.step_end
    s.window_time += waited
    s.train_time += waited
    s.step_end = None


def _release_rows(s: _Loop, *, wait: bool) -> None:
    """Write the held log rows whose every process's values have arrived, in order."""
    while s.held:
        row, table, at = s.held[0]
        full = s.engine.log_row(table, at, wait=wait)
        if full is None:
            return
        s.held.pop(0)
        row.update(_row_fields(full))
        _emit(s, row)


def _emit(s: _Loop, row: dict) -> None:
    s.history.append(row)
    if s.metrics is not None:
        s.metrics.write(row)
    if s.on_progress is not None and s.engine.is_main:
        s.on_progress(row)


def _evaluate(s: _Loop, *, final: bool) -> dict:
    """One evaluation row at the current step: the validation split during training, every split at the end."""
    config, task, step = s.config, s.task, s.step
    s.where.phase, s.where.step = "evaluation at step", step
    row = {"kind": "eval", "step": step, "epoch": step / task.steps_per_epoch, "data": config.data.label}
    splits = task.eval_splits()
    if not final and "val" in splits:  # the test set is scored at the end only when there is a validation split
        splits = {"val": splits["val"]}
    chunk = config.data.eval_chunk or EVAL_CHUNK[config.engine]
    for split, batches in splits.items():
        # With an EMA (ema.decay > 0) evaluation scores the EMA weights, swapped in for it and out after it.
        with s.engine.ema_weights():
            scores = evaluate(s.engine, batches, num_classes=task.num_classes, is_text=task.is_text, device=s.device, chunk=chunk)
        row.update({f"{split}_{k}": v for k, v in scores.items()})
    _emit(s, row)
    return row


def _final_evaluation(s: _Loop) -> dict:
    """The final evaluation, then the last checkpoint marked as evaluated (meta.json's final_eval)."""
    result = _evaluate(s, final=True)
    if s.engine.is_main:
        mark_evaluated(s.run_dir / "checkpoints" / f"step_{s.step:08d}")
    s.engine.barrier()
    return result


def _checkpoint(s: _Loop, **extra) -> None:
    """An atomic checkpoint of the current step (``extra``: more meta.json fields)."""
    engine, step = s.engine, s.step
    s.where.phase, s.where.step = "checkpoint at step", step
    # A finite loss can still come with an update that overflowed: never save such weights.
    for k in engine.local_components:
        for name, t in engine.component_state(k)["block"].items():
            if t.is_floating_point() and not torch.isfinite(t).all():
                raise TrainingDiverged(
                    f"weights of component {k + 1} ({name}) are not finite after step {step}; {_kept(s)}. "
                    f"Lower optim.lr (now {s.config.optim.lr}) or add warm-up (lr.warmup_steps)", step, component=k + 1
                )
    first = None if s.first_losses is None else [v if v is not None and math.isfinite(v) else None for v in s.first_losses]
    meta = {"strategy": s.config.strategy, "total_steps": s.total_steps, "first_losses": first, **extra}
    if hasattr(s.task, "position"):
        meta["data"] = s.task.position(step)
    save_checkpoint(s.run_dir, engine, meta)
    s.saved_step = step


def _close_metrics(s: _Loop) -> None:
    if s.metrics is not None:
        s.metrics.close()
        s.metrics.write_csv()


def _load_newest_readable(candidates: list[Path], engine) -> dict:
    """Load the newest checkpoint whose files every process can read; a damaged one is named in the
    log and the next older complete one is tried. The processes agree on which (one reduction each)."""
    for folder in candidates:
        try:
            meta, bad, why = load_checkpoint(folder, engine), 0.0, ""
        except DamagedCheckpoint as err:
            meta, bad, why = None, 1.0, str(err)
        if why:
            log.warning("%s; trying an older checkpoint", why)
        if float(engine.all_reduce_sum(torch.tensor([bad], dtype=torch.float64))[0]) == 0:
            if folder != candidates[0]:
                log.warning("resuming from %s, the newest checkpoint that could be read", folder)
            return meta
        if not why:
            log.warning("%s: another process could not read its part; trying an older checkpoint", folder)
    names = ", ".join(p.name for p in candidates)
    raise DamagedCheckpoint(f"no checkpoint in {Path(candidates[0]).parent} can be read ({names}; the log names the "
                            f"damaged files): start the run anew in another --run-dir")


def _local_table(engine, window_losses: list[list[float]], records: list, steps: int, norms: list = ()) -> torch.Tensor:
    """(K, [loss, busy, wait, comm, ...]): per component, the window's mean loss and seconds per step spent
    computing, waiting in receives and sending; each process fills its own components' rows (the
    engine's ``log_row`` then brings them together)."""
    from ..measure.trace import component_times

    K = engine.num_components
    # (K, [loss, busy, wait, comm, saved peak, state, CUDA peak, fp16 skipped updates (-1: not fp16),
    #     gradient norm (NaN: clipping off)])
    table = torch.zeros(K, 9, dtype=torch.float64)
    mean_losses = torch.tensor(window_losses, dtype=torch.float64).nanmean(0)
    skipped = engine.skipped_steps()
    mean_norms = (torch.stack(list(norms)).double().cpu().nanmean(0) if norms  # (one host copy per log row)
                  else torch.full((K,), math.nan, dtype=torch.float64))
    for k in engine.local_components:
        table[k, 0] = mean_losses[k]
        table[k, 7] = skipped.get(k, -1)  # so far in the run (checkpoints keep the count)
        table[k, 8] = mean_norms[k]
    if memstats.enabled():  # track.memory: the window's peak per component
        cuda = engine.device.type == "cuda"
        for k in engine.local_components:
            meter = memstats.meter(k)
            table[k, 4] = meter.peak
            table[k, 5] = memstats.state_bytes(engine.optimizers[k])
            meter.reset_peak()
            if cuda and len(engine.local_components) == 1:  # the allocator's peak is per process
                table[k, 6] = torch.cuda.max_memory_allocated(engine.device)
        if cuda:
            torch.cuda.reset_peak_memory_stats(engine.device)
    if records:
        for row in component_times(records):
            table[row["component"] - 1, 1:4] = torch.tensor([row["busy_s"], row["wait_s"], row["comm_s"]], dtype=torch.float64) / steps
    return table


def _row_fields(table: torch.Tensor) -> dict:
    """A log row's per-component fields from the full (K, 9) table."""
    out = {}
    for k in range(table.shape[0]):
        if not math.isnan(float(table[k, 8])):  # clipping on: the window's mean pre-clip gradient norm
            out[f"grad_norm_{k + 1}"] = float(table[k, 8])
        out[f"busy_s_per_step_{k + 1}"] = float(table[k, 1])
        out[f"wait_s_per_step_{k + 1}"] = float(table[k, 2])
        out[f"comm_s_per_step_{k + 1}"] = float(table[k, 3])
    if memstats.enabled():
        for k in range(table.shape[0]):
            out[f"peak_saved_bytes_{k + 1}"] = int(table[k, 4])  # activations autograd kept, at their peak
            out[f"state_bytes_{k + 1}"] = int(table[k, 5])  # parameters, gradients, optimizer state
            out[f"peak_memory_bytes_{k + 1}"] = int(table[k, 4] + table[k, 5])
            if table[k, 6] > 0:
                out[f"peak_cuda_bytes_{k + 1}"] = int(table[k, 6])
    for k in range(table.shape[0]):
        if table[k, 7] >= 0:  # precision=fp16: updates the component's gradient scaler skipped so far
            out[f"fp16_skipped_steps_{k + 1}"] = int(table[k, 7])
    out.update({f"loss_{k + 1}": float(v) for k, v in enumerate(table[:, 0].tolist())})
    return out


def _write_trace(engine, records: list, run_dir: Path, *, title: str) -> None:
    """trace.json (Chrome trace, one row per component) and trace.png (Gantt) in the run directory.

    Each process saves its own records; the main process merges and draws them.
    """
    from ..measure.trace import chrome_trace, gantt_png

    folder = run_dir / "trace_records"
    folder.mkdir(parents=True, exist_ok=True)
    records = resolve_times(records)
    for k in engine.local_components:
        torch.save([r for r in records if r.component == k], folder / f"component_{k + 1}.pt")
    engine.barrier()
    if engine.is_main:
        merged = [r for k in range(engine.num_components) for r in torch.load(folder / f"component_{k + 1}.pt", weights_only=False)]
        chrome_trace(merged, run_dir / "trace.json")
        gantt_png(merged, run_dir / "trace.png", title=title)
    engine.barrier()


def engine_lr(engine) -> float:
    """The current learning rate of this process's first component."""
    return float(engine.optimizers[engine.local_components[0]].param_groups[0]["lr"])


# Options a resumed run may change: its length, how it is watched and where it runs. Every
# other option shaped the steps already taken (weights, data order, LR), so changing it on
# resume would leave config.json describing a run that never happened.
RESUMABLE_OPTIONS = (
    "steps", "epochs", "eval_every", "log_every", "checkpoint_every", "trace_steps", "engine", "dist_timeout_s",
    "divergence_ratio", "device", "dist_backend", "threads", "run_dir", "data.root", "data.eval_batch_size", "data.eval_batches",
    "data.eval_chunk", "profile_steps", "track.memory", "track.tensorboard", "track.wandb", "track.wandb_project",
)


def resume_config(run_dir: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """The config saved in ``run_dir``, with ``overrides`` (e.g. a longer steps=...) applied.

    Only :data:`RESUMABLE_OPTIONS` may change; any other override is refused with a message
    (a silently dropped or half-applied override is worse than none). ``run_dir`` is the
    folder given here, wherever the run was first started.
    """
    from .runs import config_differences

    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: {run_dir} is not a run directory")
    saved = json.loads(path.read_text())
    config = load_config(path, list(overrides or []) + [f"run_dir={run_dir}"])
    changed = [d for d in config_differences(saved, config) if d.split(":")[0] not in RESUMABLE_OPTIONS]
    if changed:
        raise ValueError(
            f"--resume continues the run in {run_dir} as it was configured; these overrides would change the steps "
            f"already taken: {'; '.join(changed)}. Start a new run (another --run-dir) to change them; on resume only "
            f"{', '.join(RESUMABLE_OPTIONS)} may change"
        )
    return config
