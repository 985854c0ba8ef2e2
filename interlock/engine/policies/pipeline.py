"""End-to-end training through torch.distributed.pipelining: micro-batched GPipe or 1F1B.

The baseline that local learning competes with on wall-clock time: ordinary backprop,
with the batch cut into ``microbatches`` so that the K ranks overlap (GPipe: all
forwards then all backwards; 1F1B: one forward, one backward in the steady state, less
activation memory). Each rank holds one component (the ranks runtime), wrapped in a PyTorch
``PipelineStage``; the last rank's stage ends with the final head.

The loss of a step is the mean of the micro-batches' mean losses, and the schedule
scales the gradients by 1/microbatches, so with equal micro-batches a step follows the
full-batch gradient up to float rounding, except where a module mixes samples within a
batch: BatchNorm normalises each micro-batch with its own statistics (and moves its
running statistics once per micro-batch).

Auxiliary heads are not trained here (this is plain end-to-end backprop): they are
dropped from the rank with a warning. Use ``Engine(net, EndToEnd(), runtime="ranks")`` to train
watching heads. Select it with ``Engine(net, EndToEnd(), runtime="ranks", pipeline=schedule, microbatches=m)``.
"""

from __future__ import annotations

import copy
import logging
import time

import torch
import torch.distributed as dist
from torch import nn

from ...core.worker import optimizer_update
from ...measure import memstats
from ..options import Losses, StepResult
from .base import Policy

__all__ = ["TorchPipeline", "PIPELINE_SCHEDULES", "check_pipeline"]

logger = logging.getLogger(__name__)

# name -> torch.distributed.pipelining schedule class. "zb1p" is PyTorch's interleaved zero-bubble
# schedule (ScheduleInterleavedZeroBubble) with one stage per rank: each backward is split into an
# input-gradient pass, sent on at once, and a weight-gradient pass that fills the bubbles. ZBV
# (ScheduleZBVZeroBubble) needs two stages per rank in a V placement, i.e. the network cut into 2K
# pieces rather than interlock's K components, so it is not offered here.
PIPELINE_SCHEDULES = ("gpipe", "1f1b", "interleaved-1f1b", "zb1p")
_MULTI_STAGE = ("interleaved-1f1b", "zb1p")  # schedule classes that take a list of this rank's stages


def _pipelining():
    # Imported on first use: torch.distributed.pipelining pulls in dynamo and DTensor (a
    # second or more per process), which the other engines never need.
    from torch.distributed import pipelining

    return pipelining


def check_pipeline(schedule: str, microbatches: int, num_components: int) -> None:
    """A ValueError saying what to set, unless ``schedule`` runs ``microbatches`` micro-batches over K components."""
    K = num_components
    if schedule not in PIPELINE_SCHEDULES:
        raise ValueError(f"schedule={schedule!r}: use one of {list(PIPELINE_SCHEDULES)}")
    if schedule in ("1f1b", "interleaved-1f1b", "zb1p") and microbatches < K:
        raise ValueError(f"the {schedule} schedule needs microbatches >= the {K} components; use microbatches >= {K} or 'gpipe'")
    if schedule in _MULTI_STAGE and microbatches % K:
        raise ValueError(f"the {schedule} schedule needs microbatches divisible by the {K} components (whole rounds); "
                         f"use microbatches={K * max(1, microbatches // K)}")


class TorchPipeline(Policy):
    """End-to-end through a micro-batched pipeline of PyTorch's, one process per component.

    The engine's ``pipeline``: one of :data:`PIPELINE_SCHEDULES` ("gpipe", "1f1b",
    "interleaved-1f1b", or "zb1p", PyTorch's zero-bubble schedule with one stage per rank);
    ``microbatches``: micro-batches per step (must divide the batch size; 1F1B needs at least
    K, the interleaved schedules a multiple of K). The stages are given their micro-batch shapes
    up front (found with a meta-device dry run passed up the ranks at the first step, and again
    whenever the target shape changes), so PyTorch does not run a shape-inference forward that
    would move BatchNorm statistics. Inputs whose targets have the same shape must have the same shape.
    """

    honours_precision = False
    fp32_only_because = "runs its own forward and backward passes (torch.distributed.pipelining's)"
    updates_in_worker = False  # (and its own optimizer steps)

    def check(self) -> None:
        e = self.engine
        check_pipeline(e.pipeline, e.options.microbatches, e.plan.num_components)

    def make_workers(self) -> dict:
        return {}  # PyTorch's schedule runs the stage

    def setup(self) -> None:
        e = self.engine
        net, k, K = e.net, e.rank, e.num_components
        self.rank, self.num_components, self.device = k, K, e.device
        self.microbatches = e.options.microbatches
        self.schedule_name = e.pipeline
        if k < K - 1 and net.heads[k] is not None:
            logger.warning(
                "the pipeline trains end to end and does not train auxiliary heads: head %d is dropped on rank %d", k + 1, k,
            )
            net.heads[k] = None
        self.block: nn.Module = net.blocks[k]
        self.head: nn.Module | None = net.heads[k]
        # The stage's module: the block, and on the last rank the final head after it.
        # A middle stage's output is sent as it is: make it contiguous (gloo sends only contiguous
        # tensors, and PyTorch's multi-stage schedules do not copy it), a no-op for most blocks.
        self.stage_module = nn.Sequential(self.block, self.head) if self.head is not None else (
            self.block if k == K - 1 else nn.Sequential(self.block, _Contiguous()))
        opt_factory, sched_factory, _ = e.options.for_component(k)
        params = [p for p in self.stage_module.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"component {k + 1} has no trainable parameters; merge it into a neighbouring component")
        self.optimizer = opt_factory(params)
        if not isinstance(self.optimizer, torch.optim.Optimizer):
            raise ValueError(f"the optimizer factory returned a {type(self.optimizer).__name__}, not a torch.optim.Optimizer")
        self.lr_scheduler = None if sched_factory is None else sched_factory(self.optimizer)
        self.optimizer.zero_grad(set_to_none=True)
        self.loss_fn = e.options.loss_fn
        self.group = e.runtime.group
        self._schedule = None
        self._shape_key: tuple | None = None
        logger.info("rank %d of %d: pipeline stage %d (%s, %d micro-batches)", k, K, k + 1, self.schedule_name, self.microbatches)

    @property
    def is_last(self) -> bool:
        return self.rank == self.num_components - 1

    def parts(self, k: int) -> dict:
        return {"block": self.block, "head": self.head, "optimizer": self.optimizer, "lr_scheduler": self.lr_scheduler}

    def step(self, x: torch.Tensor | None, y: torch.Tensor, step: int) -> StepResult:
        """One end-to-end step on the batch (x on rank 0, y on every rank).

        ``losses[K-1]`` on the last rank is the step's loss (mean over micro-batches); NaN
        elsewhere. No action records (the pipeline's actions are PyTorch's, not interlock's).
        """
        if y is None:
            raise ValueError("every rank needs the targets y: they fix the micro-batch shapes; pass the same batch on every rank")
        if self.rank == 0 and x is None:
            raise ValueError("rank 0 runs the first stage: pass the batch inputs x")
        batch = y.shape[0]
        if batch % self.microbatches:
            raise ValueError(
                f"the batch of {batch} does not split into {self.microbatches} equal micro-batches; use a batch size "
                f"divisible by {self.microbatches} (unequal micro-batches would weight samples unequally)"
            )
        key = tuple(y.shape)
        if key != self._shape_key:
            self._schedule = self._make_schedule(x, batch // self.microbatches)
            self._shape_key = key
        args = (x.to(self.device),) if self.rank == 0 else ()
        kwargs = {}
        mb_losses: list[torch.Tensor] = []
        if self.is_last:
            kwargs = {"target": y.to(self.device), "losses": mb_losses}
        if memstats.enabled():  # track.memory: this rank holds one stage, so all it saves is that component's
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            with memstats.meter(self.rank, params).hooks():
                self._schedule.step(*args, return_outputs=False, **kwargs)
        else:
            self._schedule.step(*args, return_outputs=False, **kwargs)
        optimizer_update(self.optimizer, self.lr_scheduler)
        mean = torch.stack([l.detach() for l in mb_losses]).mean() if self.is_last else None
        # The last rank's loss, NaN elsewhere, left on the device (no host sync per step).
        losses = Losses.of([mean if j == self.num_components - 1 else None for j in range(self.num_components)])
        return StepResult(step=step, losses=losses, records=[])

    def heads_forward(self, x: torch.Tensor | None) -> list[torch.Tensor | None]:
        """Evaluation forward (no grad): the final head's prediction on the last rank, None elsewhere."""
        return self.engine.runtime.heads_forward(x, block=self.block, head=self.head)

    # -- stage construction ----------------------------------------------------------------

    def _make_schedule(self, x: torch.Tensor | None, microbatch: int):
        """A PipelineStage with static micro-batch shapes, and the schedule over it."""
        start = time.perf_counter()
        K, k = self.num_components, self.rank
        if k == 0:
            spec = ((microbatch, *x.shape[1:]), x.dtype)
        else:
            got: list = [None]
            dist.recv_object_list(got, src=k - 1, group=self.group.control_group)
            spec = got[0]
        shape, dtype = spec
        inp = torch.empty(shape, dtype=dtype, device="meta")
        out = _output_meta(self.stage_module, inp)
        if k < K - 1:
            dist.send_object_list([(tuple(out.shape), out.dtype)], dst=k + 1, group=self.group.control_group)
        # Static shapes (meta tensors carry shape, strides and dtype): no inference forward.
        pp = _pipelining()
        stage = pp.PipelineStage(
            self.stage_module, k, K, self.device,
            input_args=inp.requires_grad_(k > 0 and inp.is_floating_point()),
            output_args=_as_meta(out).requires_grad_(out.is_floating_point()),
        )
        schedule_class = {"gpipe": pp.ScheduleGPipe, "1f1b": pp.Schedule1F1B, "interleaved-1f1b": pp.ScheduleInterleaved1F1B,
                          "zb1p": pp.ScheduleInterleavedZeroBubble}[self.schedule_name]
        schedule = schedule_class(
            [stage] if self.schedule_name in _MULTI_STAGE else stage, self.microbatches,
            loss_fn=self.loss_fn if self.is_last else _unused_loss, scale_grads=True,
        )
        logger.debug("rank %d: pipeline stage for micro-batches of %s built in %.3f s", k, shape, time.perf_counter() - start)
        return schedule


class _Contiguous(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous()


def _unused_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # The schedule runs backward only if it has a loss function; only the last stage calls it.
    raise AssertionError("only the last pipeline stage computes the loss")


def _as_meta(t: torch.Tensor) -> torch.Tensor:
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")


def _output_meta(module: nn.Module, inp: torch.Tensor) -> torch.Tensor:
    """The stage's output for input ``inp`` on the meta device (no compute, no state change).

    Modules with an op that has no meta kernel get a real dry run on a copy instead.
    """
    state = {name: torch.empty_like(t, device="meta") for name, t in [*module.named_parameters(), *module.named_buffers()]}
    try:
        with torch.no_grad():
            return torch.func.functional_call(module, state, (inp,))
    except Exception:  # no meta kernel: run a copy for real, on zeros
        with torch.no_grad():
            dev = next((p.device for p in module.parameters()), torch.device("cpu"))
            return copy.deepcopy(module)(torch.zeros(inp.shape, dtype=inp.dtype, device=dev))
