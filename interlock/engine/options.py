"""The engine's options, its step result, worker construction and the one checkpoint format of a component."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..network.net import ComponentNet
from ..core.schedule import build_schedule, check_microbatches
from ..core.strategies import GradientPlan, Strategy
from ..core.channel import Transport
from ..core.worker import ActionRecord, ComponentWorker, LossFn
from ..core.clipping import CLIP_MODES
from ..checks import count

__all__ = ["StepResult", "Losses", "EngineOptions", "make_worker", "check_heads", "validate_engine", "pack_component_state",
           "load_component", "check_total_steps"]

# A factory gets the component's trainable parameters as a plain list; one that sets the attribute
# ``takes_names = True`` gets ``(name, parameter)`` pairs instead (names ``block.<...>`` / ``head.<...>``),
# which torch optimizers accept as they are (and keep in their state dict) and which parameter groups need.
OptimizerFactory = Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], object]


class Losses(Sequence):
    """A step's losses, one per component (NaN where none), left where they were computed until read.

    Engines build it from the workers' loss tensors without copying them to the host: on a GPU
    that copy would wait for the step's kernels (a host sync per step, which drains the
    pipeline). Reading it (indexing, iterating, comparing) copies all K values at once;
    :meth:`tensor` gives them without a copy, which is what the training program stacks over a
    log window and reads once per log row.
    """

    def __init__(self, values: "torch.Tensor | Sequence[float]") -> None:
        self._tensor = values if isinstance(values, torch.Tensor) else None
        self._floats = None if self._tensor is not None else [float(v) for v in values]

    @classmethod
    def of(cls, losses: "Sequence[torch.Tensor | None]") -> "Losses":
        """From per-component detached scalar losses (None: NaN), on the device of the first present one."""
        present = [l for l in losses if l is not None]
        if not present:
            return cls([math.nan] * len(losses))
        device = present[0].device
        out = torch.full((len(losses),), math.nan, dtype=torch.float32, device=device)
        for k, l in enumerate(losses):
            if l is not None:
                out[k] = l.detach().float().reshape(()).to(device)
        return cls(out)

    def tensor(self) -> torch.Tensor:
        """The K losses as a float32 tensor on their device (no host copy)."""
        if self._tensor is None:
            self._tensor = torch.tensor(self._floats, dtype=torch.float32)
        return self._tensor

    def _values(self) -> list[float]:
        if self._floats is None:
            self._floats = self._tensor.tolist()
        return self._floats

    def __getitem__(self, i):
        return self._values()[i]

    def __len__(self) -> int:
        return len(self._floats) if self._floats is not None else int(self._tensor.shape[0])

    def __iter__(self):
        return iter(self._values())

    def __eq__(self, other) -> bool:
        return list(self) == list(other) if isinstance(other, (Sequence, Losses)) else NotImplemented

    def __repr__(self) -> str:
        return repr(self._values())  # prints as the list of floats it stands for

    def __getstate__(self):
        return {"floats": self._values()}  # pickled as plain floats (results sent between processes)

    def __setstate__(self, state) -> None:
        self._tensor, self._floats = None, list(state["floats"])


@dataclass(frozen=True)
class StepResult:
    """What one training step returns. ``losses[k]`` is L_{k+1} (unweighted; NaN where component k+1 has no head).

    ``updated[k]``: whether component k+1 trained in this step (None: every component did). Engines
    whose components train at their own pace (async DGL, sequential greedy) report NaN losses for
    components that did not train; the training loop checks only the losses of those that did.
    ``losses`` is always a :class:`Losses` (a list of floats given is wrapped).
    """

    step: int
    losses: Losses
    records: list[ActionRecord] = field(default_factory=list)  # every action's timing, all components
    updated: list[bool] | None = None
    grad_norms: Losses | None = None  # with clipping on: each component's pre-clip gradient norm (NaN: none here)

    def __post_init__(self) -> None:
        if not isinstance(self.losses, Losses):
            object.__setattr__(self, "losses", Losses(self.losses))


@dataclass(frozen=True)
class EngineOptions:
    """Validated engine options; the engines take these as keyword arguments."""

    optimizer: OptimizerFactory | Sequence[OptimizerFactory]
    loss_fn: LossFn
    lr_scheduler: SchedulerFactory | Sequence[SchedulerFactory | None] | None = None
    loss_weights: Sequence[float] | None = None
    batch_streams: bool = False
    split_backward: bool | None = None  # None: the schedule builder's rule (split every lone stream)
    rng_seed: int | None = None
    record: bool = True
    microbatches: int = 1
    clip_norm: float = 0.0  # > 0: clip each update's gradient to this norm
    clip_mode: str = "component"  # component: each its own norm | global: one norm over every component
    ema_decay: float = 0.0  # in (0, 1): keep an EMA of each component's weights; 0: off
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast per component and head; fp16: a gradient scaler per component)
    compile: bool = False  # torch.compile each component's block and head
    compile_mode: str | None = None  # torch.compile's mode (None: its default)

    def validate(self, num_components: int) -> None:
        K = num_components
        if not (isinstance(self.clip_norm, (int, float)) and math.isfinite(self.clip_norm) and self.clip_norm >= 0):
            raise ValueError(f"clip_norm={self.clip_norm!r}: use a norm > 0 to clip gradients, or 0 for none")
        if self.clip_mode not in CLIP_MODES:
            raise ValueError(f"clip_mode={self.clip_mode!r}: use one of {', '.join(CLIP_MODES)}")
        if not (isinstance(self.ema_decay, (int, float)) and 0 <= self.ema_decay < 1):
            raise ValueError(f"ema_decay={self.ema_decay!r}: use a decay in (0, 1) (e.g. 0.999), or 0 for no EMA")
        _per_component("optimizer", self.optimizer, K, allow_none=False)
        if self.lr_scheduler is not None:
            _per_component("lr_scheduler", self.lr_scheduler, K, allow_none=True)
        check_microbatches(self.microbatches)
        check_precision(self.precision)
        if self.compile not in (True, False):
            raise ValueError(f"compile={self.compile!r}: use true (torch.compile blocks and heads) or false")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode={self.compile_mode!r}: use one of {', '.join(map(str, COMPILE_MODES))}")
        if self.split_backward not in (None, True, False):
            raise ValueError(f"split_backward={self.split_backward!r}: use None (the schedule builder decides), True or False")
        if not callable(self.loss_fn):
            raise ValueError("loss_fn must be callable as loss_fn(prediction, target) -> scalar tensor")
        if self.loss_weights is not None:
            w = list(self.loss_weights)
            if len(w) != K:
                raise ValueError(f"loss_weights has {len(w)} entries; give one per component ({K})")
            if any(not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0) for v in w):
                raise ValueError(f"loss_weights {w} must be finite and >= 0")

    def for_component(self, k: int) -> tuple[OptimizerFactory, SchedulerFactory | None, float]:
        opt = self.optimizer if callable(self.optimizer) else self.optimizer[k]
        sched = self.lr_scheduler
        if sched is not None and not callable(sched):
            sched = sched[k]
        weight = 1.0 if self.loss_weights is None else float(self.loss_weights[k])
        return opt, sched, weight


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
def check_precision(precision) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: use 'fp32', 'bf16' or 'fp16'")


def refuse_precision_compile(options: "EngineOptions", who: str, because: str) -> None:
    """For policies that do not honour precision or compile (Policy.honours_precision): fp32 eager only, said plainly."""
    if options.precision != "fp32" or options.compile:
        raise ValueError(f"{who} {because}, so it does not honour precision or compile yet; leave precision='fp32' and "
                         f"compile=false (got precision={options.precision!r}, compile={options.compile})")


def _per_component(name: str, value, K: int, *, allow_none: bool) -> None:
    if callable(value):
        return
    if isinstance(value, Sequence) and len(value) == K and all(callable(v) or (allow_none and v is None) for v in value):
        return
    raise ValueError(f"{name} must be a factory (callable) or a list of {K} factories, one per component")


def check_total_steps(total_steps, what: str = "the run's length in steps") -> None:
    """``total_steps`` must be an integer >= 1 (engines that need to know where a run ends)."""
    count(total_steps, f"total_steps={total_steps!r}: give {what}, an integer >= 1")


def validate_engine(net: ComponentNet, strategy: Strategy, options: EngineOptions) -> GradientPlan:
    """Every engine's checks of its arguments (the same on every rank, before any joins); the plan."""
    if not isinstance(net, ComponentNet):
        raise ValueError(f"net must be an interlock.ComponentNet, got {type(net).__name__}")
    if not isinstance(strategy, Strategy):
        raise ValueError(f"strategy must be an interlock strategy (EndToEnd(), Interlocking(n), Local()), got {strategy!r}")
    plan = strategy.plan(net.num_components)
    check_heads(net, strategy, plan)
    options.validate(net.num_components)
    if options.precision == "fp16" and net.ties:
        # Tied copies' gradients are summed before the update, but under fp16 each carries its own component's
        # loss scale (interlock.core.amp), so the sum would mix scales.
        raise ValueError("precision='fp16' scales each component's gradients by its own factor, and this network ties "
                         "parameters across components (their gradients are summed); use precision='bf16' or 'fp32'")
    return plan


def check_heads(net: ComponentNet, strategy: Strategy, plan: GradientPlan) -> None:
    for j in range(plan.num_components):
        if plan.needs_head(j) and net.heads[j] is None:
            raise ValueError(
                f"{strategy.name} trains blocks with the loss of component {j + 1}, but component {j + 1} "
                f"has no head; give it one (heads[{j}]) or use a strategy that does not need it"
            )


def make_worker(
    net: ComponentNet, k: int, plan: GradientPlan, options: EngineOptions, transport: Transport
) -> ComponentWorker:
    """Component k's worker: its optimizer over its block and head parameters, and its schedule."""
    opt_factory, sched_factory, weight = options.for_component(k)
    params = net.component_parameters(k)
    if not params:
        raise ValueError(f"component {k + 1} has no trainable parameters; merge it into a neighbouring component")
    optimizer = opt_factory(named_component_parameters(net, k) if getattr(opt_factory, "takes_names", False) else params)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError(f"the optimizer factory returned a {type(optimizer).__name__}, not a torch.optim.Optimizer")
    head = net.heads[k]
    return ComponentWorker(
        index=k,
        block=net.blocks[k],
        head=head,
        params=params,
        optimizer=optimizer,
        lr_scheduler=None if sched_factory is None else sched_factory(optimizer),
        loss_fn=options.loss_fn,
        loss_weight=weight,
        schedule=build_schedule(
            plan, k, has_head=head is not None, batch_streams=options.batch_streams, split_backward=options.split_backward,
            microbatches=options.microbatches,
        ),
        transport=transport,
        microbatches=options.microbatches,
        rng_seed=options.rng_seed,
        record=options.record,
        clip_norm=float(options.clip_norm),
        ema_decay=float(options.ema_decay),
        precision=options.precision,
        compile=options.compile,
        compile_mode=options.compile_mode,
    )


def named_component_parameters(net: ComponentNet, k: int) -> list[tuple[str, torch.nn.Parameter]]:
    """``net.component_parameters(k)`` as ``(name, parameter)`` pairs, in the same order."""
    names = {}
    for prefix, module in (("block", net.blocks[k]), ("head", net.heads[k])):
        if module is not None:
            for n, p in module.named_parameters():
                names.setdefault(id(p), f"{prefix}.{n}")
    return [(names[id(p)], p) for p in net.component_parameters(k)]


def pack_component_state(
    *, k: int, num_components: int, strategy: str, step_count: int, block, head, optimizer, lr_scheduler,
    loss_scaling=None,
) -> dict:
    """Everything needed to resume component k: weights and buffers, optimizer, LR scheduler, step, and under
    fp16 the gradient scaler with its count of skipped updates (``loss_scaling``, None otherwise).

    One format for every engine, so a checkpoint written by one engine loads into another.
    The tensors are the live ones: save or copy the dict before training on.
    """
    return {
        "component": k,
        "num_components": num_components,
        "strategy": strategy,
        "step_count": step_count,
        "block": block.state_dict(),
        "head": None if head is None else head.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": None if lr_scheduler is None else lr_scheduler.state_dict(),
        "loss_scaling": None if loss_scaling is None else loss_scaling.state_dict(),
    }


def load_component(state: dict, *, k: int, num_components: int, block, head, optimizer, lr_scheduler,
                   loss_scaling=None) -> None:
    """Load a component checkpoint into the given modules, optimizer and scheduler, checking it fits.

    fp16's scaler state loads where both the checkpoint and this engine have one; a checkpoint without it
    (written at fp32 or bf16) starts a fresh scaler, and one with it loads into an fp32/bf16 engine without."""
    got, of = state.get("component"), state.get("num_components")
    if got != k or of != num_components:
        held = "no component" if got is None else f"component {got + 1} of {of}"
        raise ValueError(f"this checkpoint holds {held}; load the file of component {k + 1} of {num_components}")
    if (state["head"] is None) != (head is None):
        raise ValueError(f"the checkpoint and this network disagree on whether component {k + 1} has a head")
    if (state["lr_scheduler"] is None) != (lr_scheduler is None):
        raise ValueError("the checkpoint and this engine disagree on whether an LR scheduler is used")
    block.load_state_dict(state["block"])
    if head is not None:
        head.load_state_dict(state["head"])
    optimizer.load_state_dict(state["optimizer"])
    if lr_scheduler is not None:
        lr_scheduler.load_state_dict(state["lr_scheduler"])
    if loss_scaling is not None and state.get("loss_scaling") is not None:
        loss_scaling.load_state_dict(state["loss_scaling"])
