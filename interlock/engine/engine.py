"""The engine: one step loop, checkpoints and reporting, over a runtime and a policy.

Two independent choices make an engine (docs/design.md, "One engine"):

- the **runtime** says where components live and how tensors move: ``"local"`` (every
  component in this process over an in-memory channel, :class:`~interlock.runtime.local.LocalRuntime`)
  or ``"ranks"`` (one process per component over torch.distributed,
  :class:`~interlock.runtime.ranks.RanksRuntime`);
- the **policy** says what a step is: a synchronous gradient plan, async DGL's replay buffers,
  Hogwild's late updates, sequential greedy stages, or PyTorch's pipeline schedules. The
  strategy picks it (:mod:`interlock.engine.specs`), which also says on which runtimes it runs.

Usage, one process::

    engine = Engine(net, il.Interlocking(2), optimizer=make_sgd, loss_fn=F.cross_entropy)
    result = engine.step(x, y)          # result.losses: L_1..L_K

one process per component (every rank runs the same script; see :mod:`interlock.runtime.ranks`)::

    engine = Engine(net, il.Local(), runtime="ranks", optimizer=make_sgd, loss_fn=F.cross_entropy)
    for x, y in batches:
        result = engine.step(x, y)      # this rank's loss, NaN elsewhere; gather_losses fills them in
    engine.close()

Options: ``optimizer`` (factory ``params -> Optimizer``, or one per component), ``loss_fn``,
``lr_scheduler`` (factory ``optimizer -> scheduler``, stepped once per update, or one per
component), ``loss_weights`` (K non-negative weights of L_1..L_K), ``batch_streams`` (several
streams' input gradients in one batched call), ``split_backward`` (send a lone stream's input
gradient before the weight gradient; None: the runtime's default, one pass on the local runtime
where components run one after another, the schedule builder's rule on ranks), ``rng_seed``
(per-(component, step) random state: dropout masks equal on every runtime), ``record`` (action
timings), ``microbatches`` (cut each step's batch into m micro-batches, one update per step),
``sample_input`` (validate shapes now), ``total_steps`` (the run's length: async DGL's quota,
sequential stages, Hogwild's final drain, posting the next step's receives ahead),
``flush_every`` (Hogwild's drains between), ``pipeline`` (end-to-end through
``torch.distributed.pipelining`` with this schedule, ranks only), ``precision`` (``"fp32"``, ``"bf16"``:
autocast per component and head, fp32 master weights, activations and streams sent in bf16; ``"fp16"``: the
same with a gradient scaler per component, activations sent in fp16 and streams unscaled in fp32, see
:mod:`interlock.core.amp`), ``compile``
and ``compile_mode`` (torch.compile each block and head), and the ranks runtime's
``device``, ``timeout_s``, ``backend``, ``max_pending_sends``, ``static_shapes``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Sequence

import torch

from ..core.strategies import EndToEnd, Interlocking, Strategy
from ..core.worker import ComponentWorker, LossFn
from ..network.net import ComponentNet
from ..runtime.local import LocalRuntime
from ..runtime.transport import InMemoryTransport
from .options import EngineOptions, Losses, refuse_precision_compile, StepResult, check_total_steps, load_component, make_worker, pack_component_state, validate_engine
from .specs import spec_for

__all__ = ["Engine", "make_runtime"]

logger = logging.getLogger(__name__)


def make_runtime(runtime, **options):
    """A runtime from its name (``"local"``, ``"ranks"`` with the ranks runtime's options) or as given."""
    if isinstance(runtime, str):
        if runtime == "local":
            if options:
                raise ValueError(f"runtime='local' takes no options; got {sorted(options)} (they are the ranks runtime's: "
                                 f"pass runtime='ranks')")
            return LocalRuntime()
        if runtime == "ranks":
            from ..runtime.ranks import RanksRuntime  # (torch.distributed loads with it)

            return RanksRuntime(**options)
        raise ValueError(f"runtime={runtime!r}: use 'local' (every component in this process) or 'ranks' "
                         f"(one process per component over torch.distributed)")
    if options:
        raise ValueError(f"options {sorted(options)} are given to a runtime object already built; pass them to its constructor")
    return runtime


def check_policy_options(options: EngineOptions, strategy: Strategy, policy, who: str) -> None:
    """Refuse the options ``policy`` (run for ``who``, in errors) cannot honour, read from its attributes: precision
    and compile act in the worker's actions, clipping and EMA in the worker's update.

    A global norm needs one gradient per step over every component, taken at the same weights: the synchronous
    plan of end-to-end or n-wise (n >= 2) training, whose components are coupled through their streams. Under
    local learning (1-wise) the components' gradients are of unrelated losses, and under the asynchronous and
    stale policies they belong to different steps, so no global norm exists there.
    """
    if not policy.updates_in_worker and (options.clip_norm > 0 or options.ema_decay > 0):
        raise ValueError(f"{who} updates through its own optimizer step: set clip_norm=0 and "
                         "ema_decay=0 (clip.norm, ema.decay), or train with engine distributed")
    if options.clip_norm > 0 and options.clip_mode == "global":
        if not (strategy.couples_components and policy.one_gradient_per_step):
            raise ValueError(
                f"clip_mode='global' needs one gradient over every component per step (end-to-end or n-wise with "
                f"n >= 2); {strategy.name} has none: set clip_mode='component' (clip.mode=component)")
    if not policy.honours_precision:
        refuse_precision_compile(options, who, policy.fp32_only_because)


class Engine:
    """Train ``net`` in place with ``strategy``; see the module docstring for the options."""

    def __init__(
        self,
        net: ComponentNet,
        strategy: Strategy,
        *,
        runtime="local",
        optimizer,
        loss_fn: LossFn,
        lr_scheduler=None,
        loss_weights: Sequence[float] | None = None,
        batch_streams: bool = False,
        split_backward: bool | None = None,
        rng_seed: int | None = None,
        record: bool = True,
        microbatches: int = 1,
        sample_input: torch.Tensor | None = None,
        total_steps: int | None = None,
        flush_every: int = 0,
        pipeline: str | None = None,
        clip_norm: float = 0.0,
        clip_mode: str = "component",
        ema_decay: float = 0.0,
        precision: str = "fp32",
        compile: bool = False,
        compile_mode: str | None = None,
        **runtime_options,
    ) -> None:
        spec = spec_for(strategy)
        if pipeline is not None:
            from .policies.pipeline import TorchPipeline

            if not isinstance(strategy, EndToEnd):
                raise ValueError(f"pipeline={pipeline!r} trains end to end through torch.distributed.pipelining; "
                                 f"use strategy EndToEnd() (got {strategy.name})")
        self.runtime = make_runtime(runtime, **runtime_options)
        if pipeline is None:
            spec.check_runtime(self.runtime.name)
            spec.check_microbatches(microbatches)
            policy_cls = spec.policy_for(self.runtime.name)
        elif self.runtime.name != "ranks":
            raise ValueError(f"pipeline={pipeline!r} runs one process per component: use runtime='ranks'")
        else:
            policy_cls = TorchPipeline
        if total_steps is not None:
            check_total_steps(total_steps, "the run's length in steps (or None)")
        if isinstance(net, ComponentNet):
            net = strategy.prepare(net)  # the network itself, unless the strategy regroups components (LocalDouble)
        if split_backward is None and self.runtime.name == "local":
            # One process runs the components one after another, so a split shortens nothing, and on the CPU it
            # costs time (two kernel calls per layer, BatchNorm's reductions twice: docs/results.md). The numbers
            # are the same either way wherever a component sees one stream.
            split_backward = False
        self.options = EngineOptions(
            optimizer=optimizer, loss_fn=loss_fn, lr_scheduler=lr_scheduler, loss_weights=loss_weights,
            batch_streams=batch_streams, split_backward=split_backward, rng_seed=rng_seed, record=record,
            microbatches=microbatches, clip_norm=clip_norm, clip_mode=clip_mode, ema_decay=ema_decay,
            precision=precision, compile=compile, compile_mode=compile_mode,
        )
        self.strategy = strategy
        self.total_steps = total_steps
        self.flush_every = flush_every
        self.pipeline = pipeline
        self.plan = validate_engine(net, strategy, self.options)
        self.policy = policy_cls(self)
        self.policy.check()
        check_policy_options(self.options, strategy, self.policy, spec.name if pipeline is None else f"pipeline={pipeline!r}")
        if hasattr(self.runtime, "static_shapes"):
            self.runtime.static_shapes = self.runtime.static_shapes and self.policy.static_shapes
        self.local_components = self.runtime.place(net, sums_ties=self.policy.sums_ties, engine_name=self.name,
                                                   sample_input=sample_input)
        self.net = net
        self.device = self.runtime.device
        self.num_components = net.num_components
        self._checked = sample_input is not None or self.runtime.name != "local"
        self._workers: dict[int, ComponentWorker] = self.policy.make_workers()
        self.runtime.connect(self._workers)
        if self.options.clip_norm > 0 and self.options.clip_mode == "global":
            self.runtime.connect_global_clip(self._workers)
        self.step_count = 0
        self.policy.setup()
        if self.runtime.name != "local":
            logger.info("rank %d of %d: component %d (%s), %s", self.rank, self.num_components, self.rank + 1, self.name, self.device)

    @property
    def name(self) -> str:
        """The strategy's name, or ``pipeline-<schedule>`` for PyTorch's pipeline schedules."""
        return self.strategy.name if self.pipeline is None else f"pipeline-{self.pipeline}"

    # -- workers --------------------------------------------------------------------------

    def _default_workers(self) -> dict[int, ComponentWorker]:
        """One worker per local component over the runtime's channel (or a loopback, see Policy.uses_channel)."""
        transport = self.runtime.channel if self.policy.uses_channel else InMemoryTransport()
        return {k: make_worker(self.net, k, self.plan, self.options, transport) for k in self.local_components}

    @property
    def workers(self) -> list[ComponentWorker]:
        """This process's workers, in component order (all K on the local runtime, this rank's on ranks)."""
        return [self._workers[k] for k in sorted(self._workers)]

    def worker(self, k: int) -> ComponentWorker:
        """Component k's worker (it must be held here)."""
        self.runtime.check_local(k)
        return self._workers[k]

    @property
    def rank(self) -> int:
        """This process's rank (the component it holds, 0-based) on the ranks runtime; 0 on the local one."""
        r = self.runtime.rank
        return 0 if r is None else r

    @property
    def is_main(self) -> bool:
        """Whether this process reports and writes run-level files."""
        return self.runtime.is_main

    @property
    def epoch_s(self) -> float:
        """The time origin of this process's action records."""
        return self.runtime.epoch_s

    @property
    def optimizers(self) -> list[torch.optim.Optimizer | None]:
        """Indexed by component; None for components held by other processes."""
        held = set(self.local_components)
        return [self.policy.parts(k)["optimizer"] if k in held else None for k in range(self.num_components)]

    # -- the step -------------------------------------------------------------------------

    def step(self, x: torch.Tensor | None, y: torch.Tensor | None) -> StepResult:
        """One training step on the batch (x, y); see the policy for what a step is.

        On the ranks runtime every rank passes the targets ``y`` and rank 0 the inputs ``x``
        (other ranks may pass None); ``losses`` then holds this rank's loss, NaN elsewhere.
        """
        if not self._checked:
            self.net.check(x)  # a shape misfit fails before any parameter moves
            self._checked = True
        result = self.policy.step(x, y, self.step_count)
        self.step_count += 1
        if self.options.clip_norm > 0:
            norms = [None] * self.num_components
            for k, w in self._workers.items():
                norms[k], w.grad_norm = w.grad_norm, None  # None: no update of k in this step
            result = dataclasses.replace(result, grad_norms=Losses.of(norms))
        return result

    @contextlib.contextmanager
    def ema_weights(self):
        """Within the block the components held here carry their EMA weights (evaluation); the live weights
        come back after it. Without an EMA (``ema_decay=0``) nothing changes."""
        emas = [w.ema for w in self._workers.values() if w.ema is not None]
        self.policy.before_sync()
        for e in emas:
            e.swap()
        try:
            yield bool(emas)
        finally:
            for e in emas:
                e.swap()

    @property
    def wants_more(self) -> bool:
        return self.policy.wants_more

    def counters(self) -> dict:
        return self.policy.counters()

    def end_training(self) -> int:
        """After the last training step, before the final checkpoint and evaluation: the policy settles its
        channels and the processes agree on the run's step count (returned, and the engine's from now on)."""
        self.step_count = self.policy.finish(self.step_count)
        return self.step_count

    def logs(self, step: int) -> bool:
        """Whether the training loop writes a log row at ``step`` (see :meth:`Policy.logs`)."""
        return self.policy.logs(step)

    def skipped_steps(self) -> dict[int, int]:
        """precision='fp16': per component held here, the updates its gradient scaler skipped so far (an inf or
        NaN gradient); empty at fp32 and bf16."""
        out = {}
        for k in self.local_components:
            scaling = self.policy.parts(k).get("loss_scaling")
            if scaling is not None:
                out[k] = scaling.skipped_steps
        return out

    def predicted_time(self, records, *, latency_s: float = 0.0):
        """What K devices would need for the steps in ``records`` (:class:`interlock.timemodel.clock.Makespan`);
        None where the policy cannot say."""
        return self.policy.predicted_time(records, latency_s=latency_s)

    # -- reporting and sync points --------------------------------------------------------------

    def gather_losses(self, losses: list[float]) -> list[float]:
        """Every component's loss from a step's ``losses`` (on ranks: one collective, at log intervals)."""
        return self.policy.gather_losses(losses)

    def log_sum(self, table: torch.Tensor) -> torch.Tensor:
        """A log row's (K, n) table summed over processes (each fills its own components' rows)."""
        return self.policy.log_sum(table)

    def log_row(self, table: torch.Tensor, step: int, *, wait: bool) -> torch.Tensor | None:
        """The log row of ``step`` over processes; None while another process's part is still due."""
        return self.policy.log_row(table, step, wait=wait)

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        return self.runtime.all_reduce_sum(t)

    def barrier(self) -> None:
        self.runtime.barrier()

    def heads_forward(self, x: torch.Tensor | None) -> list[torch.Tensor | None]:
        """Evaluation forward (no grad; modules in whatever mode the caller set): every head's prediction held
        here (on ranks: call on every rank, ``x`` used on rank 0)."""
        self.policy.before_sync()
        return self.policy.heads_forward(x)

    # -- checkpoints ----------------------------------------------------------------------------

    def component_state(self, k: int) -> dict:
        """Component k's block and head weights, optimizer and LR-scheduler state, the step count, and the
        policy's own state (one checkpoint file per component, one format on every runtime). The tensors are
        the live ones: save or copy the dict before training on."""
        self.runtime.check_local(k)
        self.policy.before_sync()
        state = pack_component_state(k=k, num_components=self.num_components, strategy=self.name,
                                     step_count=self.step_count, **self.policy.parts(k))
        own = self.policy.state(k)
        if own is not None:
            state["policy"] = own
        ema = self.worker(k).ema if self.pipeline is None else None
        if ema is not None:
            state["ema"] = ema.state_dict()
        return state

    def load_component_state(self, k: int, state: dict) -> None:
        """Restore what :meth:`component_state` returned (the step count included)."""
        self.runtime.check_local(k)
        needs_own = self.policy.has_state
        if needs_own and "policy" not in state:
            raise ValueError(
                f"the checkpoint of component {k + 1} has no {self.policy.holds}: it was not written by {self.name}; "
                f"resume it with the strategy that wrote it ({state.get('strategy')})"
            )
        ema = self.worker(k).ema if self.pipeline is None else None
        if ema is not None and "ema" not in state:
            raise ValueError(f"the checkpoint of component {k + 1} holds no EMA of its weights; resume it with "
                             f"ema_decay=0 (ema.decay), as it was written")
        load_component(state, k=k, num_components=self.num_components, **self.policy.parts(k))
        if ema is not None:
            ema.load_state_dict(state["ema"])
        self.step_count = int(state["step_count"])
        if needs_own:
            self.policy.load_state(k, state["policy"])

    def close(self, *, wait: bool = True) -> None:
        """End the policy's channels and leave the runtime (``wait=False`` after an error: no waiting)."""
        try:
            self.policy.close(wait=wait)
        finally:
            self.runtime.close(wait=wait)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_) -> None:
        self.close(wait=exc_type is None)
