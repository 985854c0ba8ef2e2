"""Typed run configuration: a file (JSON, or TOML on Python >= 3.11) plus command-line overrides.

Every section is a dataclass validated at construction, so a bad value fails before any
data is read, with a message naming the option and what to set instead.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..checks import is_count, is_number
from ..core.strategies import AsyncLocal, EndToEnd, Hogwild, HogwildStashed, Interlocking, Local, LocalDouble, Sequential, Strategy, check_async_local
from ..measure.profiling import parse_profile_steps
from .tracking import TrackConfig

__all__ = [
    "ModelConfig",
    "DataConfig",
    "OptimConfig",
    "LRConfig",
    "ReplayConfig",
    "LossConfig",
    "SearchConfig",
    "TrainConfig",
    "parse_strategy",
    "load_config",
    "apply_overrides",
    "describe_options",
]


def parse_strategy(spec: str, *, replay: "ReplayConfig | None" = None, seed: int = 0) -> Strategy:
    """The strategy a config string names (the registry's names: :func:`interlock.engine.specs.strategy_names`).

    ``replay``: the options of async-local (default ``ReplayConfig()``); its draws are seeded by
    ``replay.seed``, or by ``seed`` (the run's) when that is None.
    """
    from ..engine.specs import parse_strategy as parse

    return parse(spec, replay=replay, seed=seed)


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


@dataclass
class ModelConfig:
    name: str = "toy_cnn"  # a registered model (interlock heads lists them; e.g. toy_cnn, resnet20, gpt)
    components: int = 6  # K: how many components the network is cut into
    heads: str | list[str] = "linear"  # auxiliary head for every non-final component, or a list of K-1 names (see interlock.heads)
    partition: str | list[int] = "uniform"  # uniform | params | flops | time (your model), a list of K-1 block indices to cut before (the search writes one), or K-1 module paths (your model)
    kwargs: dict = field(default_factory=dict)  # passed to the model builder (width=..., n_layer=...)
    head_kw: dict = field(default_factory=dict)  # options for every auxiliary head (e.g. width=0.25 for aux1..aux4)
    factory: str = ""  # module:function returning your model (nn.Module, block list or ComponentNet), called with model.kwargs; "" uses model.name

    def __post_init__(self) -> None:
        _check(is_count(self.components), f"model.components={self.components!r}: use an integer >= 1")
        K1 = self.components - 1
        if is_count(self.partition, minimum=None):  # model.partition=3 with K = 2
            self.partition = [self.partition]
        if isinstance(self.partition, (list, tuple)) and self.partition and all(isinstance(p, str) for p in self.partition):
            _check(len(self.partition) == K1,
                   f"model.partition={self.partition!r}: give {K1} module paths (split points), one per boundary of "
                   f"model.components={self.components}")
            self.partition = list(self.partition)  # split points: module paths starting components 2..K (interlock.network.split)
        elif isinstance(self.partition, str):
            _check(self.partition in ("uniform", "params", "flops", "time"),
                   f"model.partition={self.partition!r}: use uniform, params, flops, time (your own model) or a list of {K1} cut indices")
        else:
            cuts = list(self.partition) if isinstance(self.partition, (list, tuple)) else None
            _check(cuts is not None and len(cuts) == K1 and all(is_count(c, minimum=None) for c in cuts)
                   and all(a < b for a, b in zip([0, *cuts], cuts)),
                   f"model.partition={self.partition!r}: give {K1} strictly increasing positive block indices "
                   f"(component k starts at block cuts[k-1]), one per boundary of model.components={self.components}")
            self.partition = cuts
        if not isinstance(self.heads, str):
            names = list(self.heads) if isinstance(self.heads, (list, tuple)) else None
            _check(names is not None and len(names) == K1 and all(isinstance(h, str) for h in names),
                   f"model.heads={self.heads!r}: give one head name for every auxiliary component, or a list of {K1} names "
                   f"(one per component 1..{K1})")
            self.heads = names
        _check(isinstance(self.head_kw, dict), f"model.head_kw={self.head_kw!r}: give a dict of head options, e.g. {{\"width\": 0.25}}")

    @property
    def head_names(self) -> list[str]:
        """The distinct auxiliary head names this model uses."""
        return [self.heads] if isinstance(self.heads, str) else sorted(set(self.heads))


@dataclass
class DataConfig:
    name: str = "cifar10"  # cifar10 | cifar100 | mnist | digits | shakespeare (ignored with data.factory)
    root: str | None = None  # folder holding the data sets; default $INTERLOCK_DATA or ../shared/data
    val_size: int = 0  # images (or characters for text) held out of training for validation
    augment: bool = True  # random crop (4-pixel padding) + horizontal flip, images only
    batch_size: int = 128  # training examples per step
    eval_batch_size: int = 500  # examples per evaluation batch
    eval_chunk: int = 0  # examples per evaluation forward pass (0: 32 distributed, 128 in one process); equal chunks, equal numbers
    block_size: int = 64  # context length for language models
    eval_batches: int = 50  # text only: batches of the validation corpus per evaluation
    train_limit: int = 0  # use only the first N training examples (0: all); for quick runs
    fallback: str = ""  # cifar10 not found: train on this set instead (digits or mnist), recorded as such; "" fails
    substitute_for: str = ""  # set by the fallback: the data set this run stands in for (never set it by hand)
    eval_text: str = ""  # text only: also score an evaluation corpus, e.g. wikitext2
    factory: str = ""  # module:function returning your data (Dataset, DataLoader, batches, or a dict of train/val/test), called with data.kwargs
    kwargs: dict = field(default_factory=dict)  # passed to data.factory

    def __post_init__(self) -> None:
        _check(self.batch_size >= 1, f"data.batch_size={self.batch_size}: use >= 1")
        _check(self.eval_batch_size >= 1, f"data.eval_batch_size={self.eval_batch_size}: use >= 1")
        _check(self.eval_chunk >= 0, f"data.eval_chunk={self.eval_chunk}: use >= 1, or 0 for the engine's default")
        _check(self.val_size >= 0, f"data.val_size={self.val_size}: use >= 0")
        _check(self.block_size >= 1, f"data.block_size={self.block_size}: use >= 1")
        _check(self.train_limit >= 0, f"data.train_limit={self.train_limit}: use >= 0 (0 means all)")
        names = ("cifar10", "cifar100", "mnist", "digits", "shakespeare", "tinyshakespeare")
        _check(self.name in names, f"data.name={self.name!r}: use one of {', '.join(names)}")
        _check(self.fallback in ("", "digits", "mnist"), f"data.fallback={self.fallback!r}: use digits, mnist or an empty string")
        _check(self.eval_text in ("", "wikitext2"), f"data.eval_text={self.eval_text!r}: use wikitext2 or leave it empty")
        _check(self.substitute_for in ("", "cifar10"), f"data.substitute_for={self.substitute_for!r}: the fallback sets it; leave it empty")

    @property
    def label(self) -> str:
        """The data set's name for titles and tables, saying when it stands in for a missing one."""
        if self.factory:
            return self.factory
        return f"{self.name} (fallback: {self.substitute_for} not found)" if self.substitute_for else self.name

    @property
    def is_text(self) -> bool:
        return self.name in ("shakespeare", "tinyshakespeare")


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.05  # base learning rate of every component's optimizer
    momentum: float = 0.9  # sgd only
    weight_decay: float = 5e-4  # L2 penalty (sgd, adam) or decoupled decay (adamw)
    nesterov: bool = False  # sgd only
    betas: tuple[float, float] = (0.9, 0.999)  # adam, adamw
    eps: float = 1e-8  # adam, adamw: the denominator's epsilon (interlocking B.3 uses 1e-9)
    no_decay: bool = False  # weight decay 0 for norms' weights, biases and embeddings (as nanoGPT, torchtitan)

    def __post_init__(self) -> None:
        _check(self.name in ("sgd", "adam", "adamw"), f"optim.name={self.name!r}: use sgd, adam or adamw")
        _check(self.lr > 0 and math.isfinite(self.lr), f"optim.lr={self.lr}: use a positive learning rate")
        _check(0 <= self.momentum < 1, f"optim.momentum={self.momentum}: use 0 <= momentum < 1")
        _check(self.weight_decay >= 0, f"optim.weight_decay={self.weight_decay}: use >= 0")
        self.betas = tuple(self.betas)
        _check(isinstance(self.no_decay, bool), f"optim.no_decay={self.no_decay!r}: use true or false")
        _check(self.eps > 0 and math.isfinite(self.eps), f"optim.eps={self.eps}: use a small positive number (e.g. 1e-8)")


@dataclass
class ClipConfig:
    norm: float = 0.0  # > 0: clip each update's gradient to this norm (torch's clip_grad_norm_ rule); 0: off
    mode: str = "component"  # component: each component its own norm (no communication) | global: one norm over all components (end-to-end, n-wise n >= 2)

    def __post_init__(self) -> None:
        _check(math.isfinite(self.norm) and self.norm >= 0, f"clip.norm={self.norm}: use a norm > 0, or 0 for no clipping")
        _check(self.mode in ("component", "global"), f"clip.mode={self.mode!r}: use component or global")


@dataclass
class EMAConfig:
    decay: float = 0.0  # in (0, 1): keep an EMA of each component's weights (saved in checkpoints; evaluation uses it); 0: off

    def __post_init__(self) -> None:
        _check(0 <= self.decay < 1, f"ema.decay={self.decay}: use a decay in (0, 1) (e.g. 0.999), or 0 for no EMA")


@dataclass
class LRConfig:
    name: str = "none"  # none | multistep | cosine | inverse_sqrt
    milestones: tuple[float, ...] = (0.5, 0.75)  # multistep: fractions of the run's steps
    gamma: float = 0.1  # multistep decay factor
    warmup_steps: int = 0  # linear warm-up (cosine, inverse_sqrt)
    min_lr_ratio: float = 0.0  # cosine floor, as a fraction of optim.lr

    def __post_init__(self) -> None:
        _check(self.name in ("none", "multistep", "cosine", "inverse_sqrt"), f"lr.name={self.name!r}: use none, multistep, cosine or inverse_sqrt")
        if isinstance(self.milestones, (int, float)):  # lr.milestones=0.5 on the command line: one milestone
            self.milestones = (self.milestones,)
        self.milestones = tuple(float(m) for m in self.milestones)
        _check(all(0 < m < 1 for m in self.milestones), f"lr.milestones={self.milestones}: give fractions of the run in (0, 1)")
        _check(0 < self.gamma <= 1, f"lr.gamma={self.gamma}: use 0 < gamma <= 1")
        _check(self.warmup_steps >= 0, f"lr.warmup_steps={self.warmup_steps}: use >= 0")
        _check(self.name != "inverse_sqrt" or self.warmup_steps > 0, "lr.name=inverse_sqrt needs lr.warmup_steps > 0")


@dataclass
class ReplayConfig:
    """async-local (asynchronous DGL with replay buffers): see interlock/engine/policies/replay.py."""

    buffer_size: int = 1  # M: batches each replay buffer holds (the reference code's default is 1)
    slowdown: float = 1.0  # S: the slow component is drawn S times less often (1: all equally often)
    slow_component: int = 1  # which component is slow, 1..K
    schedule: str = "random"  # random (draws from the pmf) | round_robin (1, 2, ..., K in turn)
    seed: int | None = None  # seeds the draws; None: the run's seed
    max_reuse: int = 0  # reads of one buffer entry at most; 0: no bound (the reference code's default); see engine/policies/replay.py

    def __post_init__(self) -> None:
        check_async_local(buffer_size=self.buffer_size, slowdown=self.slowdown, slow_component=self.slow_component,
                          schedule=self.schedule, seed=0 if self.seed is None else self.seed, max_reuse=self.max_reuse,
                          prefix="replay.")

    def strategy(self, run_seed: int = 0) -> AsyncLocal:
        return AsyncLocal(buffer_size=self.buffer_size, slowdown=float(self.slowdown), slow_component=self.slow_component,
                          schedule=self.schedule, seed=run_seed if self.seed is None else self.seed, max_reuse=self.max_reuse)


@dataclass
class LossConfig:
    """Local losses beyond the task's own (the task loss is cross-entropy, with label_smoothing)."""

    sim_weight: float = 0.99  # PredSim heads (model.heads=predsim): weight of similarity matching; 1 - it on prediction

    def __post_init__(self) -> None:
        _check(is_number(self.sim_weight, low=0, high=1),
               f"loss.sim_weight={self.sim_weight!r}: use a weight in [0, 1] (Nøkland & Eidnes use 0.99)")


@dataclass
class PipelineConfig:
    """engine=pipeline: end-to-end training through torch.distributed.pipelining (interlock/engine/policies/pipeline.py)."""

    schedule: str = "1f1b"  # gpipe | 1f1b | interleaved-1f1b | zb1p (PyTorch's zero-bubble schedule, one stage per rank)
    microbatches: int = 4  # micro-batches per step; must divide data.batch_size (1f1b/zb1p: >= K; zb1p: a multiple of K)

    def __post_init__(self) -> None:
        from ..engine.policies.pipeline import PIPELINE_SCHEDULES

        _check(self.schedule in PIPELINE_SCHEDULES, f"pipeline.schedule={self.schedule!r}: use one of {', '.join(PIPELINE_SCHEDULES)}")
        _check(is_count(self.microbatches),
               f"pipeline.microbatches={self.microbatches!r}: use an integer >= 1")


@dataclass
class SearchConfig:
    """SEDONA's search (``interlock search``; see interlock/search/). The inner weight updates use
    optim (SGD only) and lr, their schedule spanning pretrain_steps; the loss uses label_smoothing."""

    heads: tuple[str, ...] = ("aux1", "aux2", "aux3", "aux4")  # candidate auxiliary heads (beta has one entry per name)
    inner_steps: int = 5  # T: differentiable weight updates per meta step
    memory_size: int = 50  # N: snapshots in the weight memory
    pretrain_steps: int = 40000  # weight updates with alpha = beta = 0 before the search; also the inner LR schedule's length
    snapshot_every: int = 0  # pretraining steps between snapshot candidates (0: pretrain_steps // 500, as the authors' code)
    meta_steps: int = 2000  # outer (alpha, beta) updates
    meta_lr: float = 0.01  # Adam's learning rate for alpha and beta
    meta_betas: tuple[float, float] = (0.5, 0.999)  # Adam's betas (the authors' code)
    meta_weight_decay: float = 1e-6  # Adam's L2 penalty on alpha and beta
    val_fraction: float = 0.4  # of the training split held out for the meta-loss and the snapshots' ranking
    val_batch_size: int = 1024  # validation examples per meta-loss batch
    val_batches: int = 1  # validation batches per meta-loss (snapshots are ranked on the whole validation split)
    log_every: int = 10  # meta steps between progress rows
    checkpoint_every: int = 100  # meta (and pretraining) steps between checkpoints (0: only at the end of each phase)
    train_preset: str = ""  # a preset whose training values (data, optim, lr, steps...) the discretised configs take ("": the search's own)

    def __post_init__(self) -> None:
        from .presets import PRESETS

        _check(not self.train_preset or self.train_preset in PRESETS,
               f"search.train_preset={self.train_preset!r}: use one of {', '.join(sorted(PRESETS))}, or empty for the search's own values")
        self.heads = tuple(self.heads) if isinstance(self.heads, (list, tuple)) else (self.heads,)
        _check(len(self.heads) >= 1 and all(isinstance(h, str) for h in self.heads) and len(set(self.heads)) == len(self.heads),
               f"search.heads={self.heads!r}: give distinct registered head names, e.g. aux1,aux2,aux3,aux4")
        for name in ("inner_steps", "memory_size", "pretrain_steps", "meta_steps", "val_batch_size", "val_batches", "log_every"):
            v = getattr(self, name)
            _check(is_count(v), f"search.{name}={v!r}: use an integer >= 1")
        for name in ("snapshot_every", "checkpoint_every"):
            v = getattr(self, name)
            _check(is_count(v, minimum=0), f"search.{name}={v!r}: use an integer >= 0")
        _check(self.meta_lr > 0 and math.isfinite(self.meta_lr), f"search.meta_lr={self.meta_lr}: use a positive learning rate")
        self.meta_betas = tuple(self.meta_betas)
        _check(len(self.meta_betas) == 2 and all(0 <= b < 1 for b in self.meta_betas), f"search.meta_betas={self.meta_betas}: use two numbers in [0, 1)")
        _check(self.meta_weight_decay >= 0, f"search.meta_weight_decay={self.meta_weight_decay}: use >= 0")
        _check(0 < self.val_fraction < 1, f"search.val_fraction={self.val_fraction}: use a fraction in (0, 1) of the training split")

    @property
    def snapshot_interval(self) -> int:
        return self.snapshot_every or max(1, self.pretrain_steps // 500)


@dataclass
class TrainConfig:
    preset: str = ""  # a paper's training settings laid under this config (see interlock/training/presets.py)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    lr: LRConfig = field(default_factory=LRConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)  # gradient clipping by norm
    ema: EMAConfig = field(default_factory=EMAConfig)  # EMA of the weights, for evaluation
    replay: ReplayConfig = field(default_factory=ReplayConfig)  # async-local's options
    loss: LossConfig = field(default_factory=LossConfig)  # how a head's loss is formed (PredSim's mix)
    search: SearchConfig = field(default_factory=SearchConfig)  # SEDONA's search (interlock search only)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)  # engine=pipeline's schedule
    track: TrackConfig = field(default_factory=TrackConfig)  # TensorBoard / Weights & Biases, fed from the metrics rows
    strategy: str = "2-wise"  # end-to-end, local, <n>-wise, <n>-wise-sum, async-local, sequential, local-double, hogwild, hogwild-stashed
    loss_weights: tuple[float, ...] | None = None  # w_k scaling each component's loss, one per component
    microbatches: int = 1  # cut each step's batch into m micro-batches that pipeline through the components
    split_backward: bool | None = None  # None: the engine's default (distributed: split a lone stream's backward, input gradient sent first, for a shorter K-device critical path; simulated: one pass, as it runs components one after another); true: split; false: one pass
    label_smoothing: float = 0.0  # of the cross-entropy of every head
    precision: str = "fp32"  # fp32 | bf16 (autocast per component and head, fp32 master weights, activations and streams sent in bf16) | fp16 (the same with a gradient scaler per component: skipped updates reported as fp16_skipped_steps_<k>); not with hogwild, hogwild-stashed, engine=pipeline
    compile: bool = False  # torch.compile each component's block and head (compiled at the first step; evaluation runs eager); not with hogwild, hogwild-stashed, engine=pipeline
    compile_mode: str | None = None  # torch.compile's mode: null (its default) | default | reduce-overhead | max-autotune | max-autotune-no-cudagraphs
    epochs: float = 0.0  # run length in epochs (fractions allowed); set this or steps
    steps: int = 0  # run length in steps; set this or epochs
    seed: int = 0  # weights, data order, augmentation and dropout all follow from it
    eval_every: int = 0  # steps between evaluations (0: only at the end)
    log_every: int = 20  # steps between train-metric rows
    checkpoint_every: int = 0  # steps between checkpoints (0: only at the end)
    trace_steps: int = 0  # write trace.json (Chrome trace) and trace.png (Gantt) of this many steps after the first
    profile_steps: str = ""  # a:b records torch.profiler traces of training steps a..b, one per process, under <run_dir>/profile
    engine: str = "simulated"  # simulated (one process) | distributed (one process per component) | pipeline (end-to-end, torch pipelining)
    dist_timeout_s: float = 300.0  # distributed: a rank waiting this long for a peer ends the run (not a limit on its length)
    dist_backend: str | None = None  # distributed: null (NCCL on GPUs, gloo on the CPU) | nccl | gloo (with device=cuda: ranks share GPUs, messages staged through the CPU)
    divergence_ratio: float = 100.0  # a finite loss this many times its first-step value stops the run (0: only NaN/inf do)
    device: str = "cpu"  # cpu, or cuda (distributed: one GPU per rank)
    run_dir: str = "runs/default"  # where config.json, metrics, checkpoints and log.txt go
    threads: int = 0  # torch threads per process (0: leave PyTorch's default)

    def __post_init__(self) -> None:
        for name, cls in _SECTIONS.items():
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, _build(cls, value, prefix=name))
        strategy = self.strategy_obj  # validates the name and the strategy's options ...
        try:  # ... and that they fit K (n <= K, the slow component in 1..K)
            strategy.plan(self.model.components)
        except ValueError as err:  # (the strategy's own message knows neither option's name)
            raise ValueError(f"strategy={self.strategy} does not fit model.components={self.model.components}: {err}; "
                             f"choose another strategy or more components") from None
        from ..engine.specs import spec_for

        spec = spec_for(strategy)
        _check(self.engine == "simulated" or spec.supports("ranks"),
               f"strategy {self.strategy} runs in one process only for now; use engine=simulated")
        _check(self.engine != "pipeline" or self.strategy == "end-to-end",
               f"engine=pipeline trains end to end through torch.distributed.pipelining; use strategy=end-to-end "
               f"(now {self.strategy}), or engine=distributed for {self.strategy}")
        _check((self.epochs > 0) != (self.steps > 0), f"set exactly one of epochs (now {self.epochs}) or steps (now {self.steps}) to a positive value")
        _check(0 <= self.label_smoothing < 1, f"label_smoothing={self.label_smoothing}: use 0 <= label_smoothing < 1")
        _check(self.engine in ENGINES, f"engine={self.engine!r}: use one of {', '.join(ENGINES)}")
        _check(not (self.clip.mode == "global" and self.clip.norm > 0)
               or self.strategy == "end-to-end" or (self.strategy.endswith("-wise") and self.strategy != "1-wise")
               or (self.strategy.endswith("-wise-sum") and not self.strategy.startswith("1-")),
               f"clip.mode=global needs one gradient over every component per step (end-to-end or n-wise with n >= 2); "
               f"strategy {self.strategy} has none: set clip.mode=component")
        _check(self.engine != "pipeline" or (self.clip.norm == 0 and self.ema.decay == 0),
               "engine=pipeline updates through torch's pipeline schedules: set clip.norm=0 and ema.decay=0, "
               "or use engine=distributed")
        _check(self.split_backward in (None, True, False), f"split_backward={self.split_backward!r}: use true, false or null (the default)")
        self._check_precision_compile()
        _check(is_count(self.microbatches),
               f"microbatches={self.microbatches!r}: use an integer m >= 1 (1: the whole batch at once)")
        _check(self.microbatches == 1 or self.data.batch_size % self.microbatches == 0,
               f"microbatches={self.microbatches} does not divide data.batch_size={self.data.batch_size}; use a divisor of it")
        _check(self.microbatches == 1 or spec.microbatches,
               f"strategy {self.strategy} trains without micro-batches; leave microbatches=1")
        _check(self.microbatches == 1 or self.engine != "pipeline",
               "engine=pipeline cuts batches with pipeline.microbatches; leave microbatches=1")
        if self.engine == "pipeline":
            K, b, m = self.model.components, self.data.batch_size, self.pipeline.microbatches
            _check(b % m == 0, f"pipeline.microbatches={m} does not divide data.batch_size={b}; use a divisor of {b}")
            _check(self.pipeline.schedule == "gpipe" or m >= K,
                   f"pipeline.schedule={self.pipeline.schedule} needs pipeline.microbatches >= model.components={K}")
            _check(self.pipeline.schedule not in ("interleaved-1f1b", "zb1p") or m % K == 0,
                   f"pipeline.schedule={self.pipeline.schedule} needs pipeline.microbatches a multiple of model.components={K}")
        parse_profile_steps(self.profile_steps)  # a:b or "" (its error names the option)
        _check(self.dist_timeout_s > 0, f"dist_timeout_s={self.dist_timeout_s}: use a positive number of seconds")
        from ..runtime.ranks import BACKENDS  # (the runtime's own list; lazy: torch.distributed loads with it)

        _check(self.dist_backend is None or self.dist_backend in BACKENDS,
               f"dist_backend={self.dist_backend!r}: use {', '.join(BACKENDS)} or null (NCCL on GPUs, gloo on the CPU)")
        _check(self.dist_backend is None or self.engine == "distributed",
               f"dist_backend={self.dist_backend} applies to engine=distributed; leave it null")
        _check(self.divergence_ratio == 0 or self.divergence_ratio > 1,
               f"divergence_ratio={self.divergence_ratio}: use a ratio > 1 (e.g. 100), or 0 to stop only on NaN/inf")
        _check(self.threads >= 0, f"threads={self.threads}: use >= 0 (0 leaves PyTorch's default)")
        _check(self.eval_every >= 0 and self.log_every >= 1 and self.checkpoint_every >= 0 and self.trace_steps >= 0,
               "eval_every, checkpoint_every and trace_steps must be >= 0, log_every >= 1")
        if self.loss_weights is not None:
            self.loss_weights = tuple(float(w) for w in self.loss_weights)
            _check(len(self.loss_weights) == self.model.components,
                   f"loss_weights has {len(self.loss_weights)} entries; give one per component ({self.model.components})")

    def _check_precision_compile(self) -> None:
        from ..engine.options import COMPILE_MODES, check_precision
        from ..engine.policies.pipeline import TorchPipeline
        from ..engine.specs import spec_for

        try:
            check_precision(self.precision)
        except ValueError as err:
            raise ValueError(f"precision: {err}") from None
        _check(self.compile in (True, False), f"compile={self.compile!r}: use true or false")
        _check(self.compile_mode in COMPILE_MODES,
               f"compile_mode={self.compile_mode!r}: use null or one of {', '.join(m for m in COMPILE_MODES if m)}")
        _check(self.compile_mode is None or self.compile, f"compile_mode={self.compile_mode} applies with compile=true; set it, or leave compile_mode null")
        if self.precision != "fp32" or self.compile:
            # The policy that would run the strategy says whether its passes honour them (Policy.honours_precision).
            if self.engine == "pipeline":
                policy, who = TorchPipeline, "engine=pipeline"
            else:
                runtime = "local" if self.engine == "simulated" else "ranks"
                spec = spec_for(self.strategy_obj)
                policy = spec.policy_for(runtime) if spec.supports(runtime) else None
                who = f"strategy={self.strategy}"
            _check(policy is None or policy.honours_precision,
                   f"{who} {getattr(policy, 'fp32_only_because', '')}, so it does not honour precision or compile yet; "
                   f"leave precision=fp32 and compile=false (now precision={self.precision}, compile={str(self.compile).lower()})")

    @property
    def strategy_obj(self) -> Strategy:
        return parse_strategy(self.strategy, replay=self.replay, seed=self.seed)

    def to_dict(self) -> dict:
        return asdict(self)


def _build(cls, values: dict, *, prefix: str = ""):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        qualify = lambda n: f"{prefix}.{n}" if prefix else n
        raise ValueError(f"unknown option(s) {sorted(map(qualify, unknown))}; known: {sorted(map(qualify, names))}")
    return cls(**values)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """A TrainConfig from a JSON/TOML file (optional) and ``key=value`` overrides (dotted keys)."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        text = path.read_text()
        if path.suffix == ".toml":
            import tomllib  # Python >= 3.11

            try:
                values = tomllib.loads(text)
            except tomllib.TOMLDecodeError as err:
                raise ValueError(f"config file {path} is not valid TOML: {err}") from None
        else:
            try:
                values = json.loads(text)
            except json.JSONDecodeError as err:
                raise ValueError(f"config file {path} is not valid JSON: {err}") from None
    values = apply_overrides(values, overrides or [])
    from .presets import expand

    return _build(TrainConfig, expand(values))


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "lr": LRConfig, "replay": ReplayConfig,
             "loss": LossConfig, "search": SearchConfig, "pipeline": PipelineConfig,
             "track": TrackConfig, "clip": ClipConfig, "ema": EMAConfig}
ENGINES = ("simulated", "distributed", "pipeline")


def describe_options() -> list[tuple[str, str, str, str]]:
    """Every option as (dotted key, type, default, help): what ``interlock train --list-options`` prints.

    The help is the comment beside each field in this file, so the listing cannot drift from the code.
    """
    import inspect

    def comments(cls) -> dict[str, str]:
        out = {}
        for line in inspect.getsource(cls).splitlines():
            m = re.match(r"\s+(\w+): [^=]+=.*?#\s*(.*)$", line)
            if m:
                out[m.group(1)] = m.group(2).strip()
        return out

    def rows(cls, prefix: str) -> list[tuple[str, str, str, str]]:
        notes, hints = comments(cls), typing.get_type_hints(cls)
        out = []
        for f in dataclasses.fields(cls):
            if f.name in _SECTIONS and cls is TrainConfig:
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            hint = hints[f.name]
            kind = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
            out.append((prefix + f.name, kind, json.dumps(default), notes.get(f.name, "")))
        return out

    table = rows(TrainConfig, "")
    for name, cls in _SECTIONS.items():
        table += rows(cls, name + ".")
    return table


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    """Apply ``section.key=value`` strings; values are parsed with the field's type."""
    values = json.loads(json.dumps(values))  # deep copy of plain data
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value (e.g. optim.lr=0.1)")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if parts[0] in _SECTIONS and len(parts) >= 2:
            cls, section = _SECTIONS[parts[0]], values.setdefault(parts[0], {})
            if parts[1] == "kwargs" and len(parts) == 3:  # model.kwargs.width=64, data.kwargs.n=100
                section.setdefault("kwargs", {})[parts[2]] = _parse_any(raw)
                continue
            if len(parts) != 2:
                raise ValueError(f"override {key!r}: use section.option=value")
            section[parts[1]] = _parse_typed(cls, parts[1], raw, key)
        elif len(parts) == 1:
            values[parts[0]] = _parse_typed(TrainConfig, parts[0], raw, key)
        else:
            raise ValueError(f"override {key!r}: unknown section {parts[0]!r}; sections are {sorted(_SECTIONS)}")
    return values


def _parse_typed(cls, name: str, raw: str, key: str):
    hints = typing.get_type_hints(cls)
    if name not in hints:
        raise ValueError(f"unknown option {key!r}; known: {sorted(hints)}")
    hint = hints[name]
    raw = raw.strip()
    try:
        if hint is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if hint is int:
            return int(raw)
        if hint is float:
            return float(raw)
        if hint is str:
            return raw
        if raw.lower() in ("none", "null") and type(None) in typing.get_args(hint):
            return None
        if hint == str | None:
            return raw
        return _parse_any(raw, split=True)
    except ValueError as err:
        raise ValueError(f"override {key}={raw!r}: {err}") from None


def _parse_any(raw: str, split: bool = False):
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        if split and raw[:1] == "[" and raw[-1:] == "]":  # [linear,mlp]: a list of bare words, as 5,2 or [5,2] is
            return [_parse_any(p.strip()) for p in raw[1:-1].split(",") if p.strip()]
        if split and "," in raw:
            return [_parse_any(p) for p in raw.split(",")]
        return raw
