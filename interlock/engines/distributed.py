"""The distributed engine: one process per component, over torch.distributed.

Rank k holds component k+1 only and runs the same ``ComponentWorker`` as the simulated
engine, over a :class:`~interlock.runtime.transport.TorchDistributedTransport`. Same schedules,
same arithmetic, so the parameters match the simulated engine's bit for bit (one
thread per process). Sends never wait for the receiver and no step ends in a barrier:
under ``Local()`` component 1 runs ahead of component 2, and under n-wise interlocking
each component sends its own loss's gradient down as soon as it has it.

Running it
----------
Every rank runs the same script: build the same network from the same seed, make the
engine, and feed every rank the same batches (every rank needs the targets ``y``; only
rank 0 uses the inputs ``x``, the others may pass ``None``)::

    net = build_net(seed=0)                      # the whole network, on every rank
    engine = DistributedEngine(net, il.Interlocking(2), optimizer=make_sgd, loss_fn=F.cross_entropy)
    for step, (x, y) in enumerate(batches):
        result = engine.step(x, y)               # result.losses: this rank's loss, NaN elsewhere
        if step % 100 == 0:
            losses = engine.gather_losses(result.losses)   # one collective: every loss
            if engine.is_main:
                logger.info("step %d losses %s", step, losses)
    engine.close()

Start one process per component with ``torchrun`` (it sets RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT and LOCAL_RANK, which the engine reads). On one machine, with
K=4 components::

    torchrun --standalone --nproc-per-node=4 train.py

On several machines, e.g. two with two processes each (components 1-2 on the first,
3-4 on the second; rank = node_rank * nproc_per_node + local_rank, and component k+1
lives on rank k), run on every machine, changing only ``--node-rank``::

    torchrun --nnodes=2 --nproc-per-node=2 --node-rank=0 --master-addr=10.0.0.1 --master-port=29500 train.py

or let the c10d rendezvous assign node ranks::

    torchrun --nnodes=2 --nproc-per-node=2 --rdzv-backend=c10d --rdzv-endpoint=10.0.0.1:29500 --rdzv-id=run1 train.py

``device=None`` runs on the CPU over gloo. ``device="cuda"`` runs each rank on GPU
``LOCAL_RANK`` over NCCL (headers and loss gathering go over a gloo side group, on the
CPU). ``device="cuda", backend="gloo"`` puts the ranks on the GPUs in turn, several per GPU if
need be (NCCL refuses two ranks on one GPU), and stages every message through the CPU: a way to
run K components on fewer GPUs, not a fast one. Without torchrun,
:func:`interlock.runtime.launch.run_local` starts K local processes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

import torch
import torch.distributed as dist

from ..network.net import ComponentNet
from ..core.strategies import Strategy
from ..network.ties import local_sum, set_grads, sum_in_order, tie_groups
from ..core.worker import ActionRecord
from .common import EngineOptions, Losses, LossFn, StepResult, check_total_steps, load_component, make_worker, pack_component_state
from .ranks import RankEngine, RankGroup, keep_component

__all__ = ["DistributedEngine", "RankGroup", "keep_component"]

_TRAIN_P2P_TAGS = (7303, 7304)

logger = logging.getLogger(__name__)

class DistributedEngine(RankEngine):
    sums_ties = True  # tied copies' gradients are gathered among the ranks holding them (interlock.network.ties)

    """Train component ``rank`` of ``net`` with ``strategy``, one process per component.

    Options as :class:`~interlock.engines.simulated.SimulatedEngine` (``optimizer``,
    ``loss_fn``, ``lr_scheduler``, ``loss_weights``, ``batch_streams``, ``split_backward``,
    ``microbatches``, ``rng_seed``, ``record``), plus: ``timeout_s``, the process-group timeout (a rank that waits longer
    for a message fails); ``device``: None (CPU, gloo) or "cuda" (GPU LOCAL_RANK, NCCL);
    ``backend``: None (NCCL on GPUs, gloo on the CPU) or "gloo" with ``device="cuda"`` (ranks
    sharing GPUs, messages staged through the CPU);
    ``max_pending_sends``: sends a rank may have outstanding before it waits for the
    oldest (bounds how far a component runs ahead under local learning);
    ``sample_input``: dry-run the whole network's shapes on every rank first;
    ``static_shapes``: every batch has the same shape, so each message tag's layout is sent
    once and receives are posted ahead of the schedule (:class:`TorchDistributedTransport`;
    the training program turns it on, its batches having one size); ``total_steps``: the
    run's length, if known, so a step may post the next step's first receives.

    ``net`` is modified in place: this rank keeps only its own component (see
    :func:`keep_component`), moved to ``device``. Initialises the default process group
    from the torchrun environment if it is not initialised (and ``close()`` then
    destroys it), and lines the ranks' clocks up with one barrier: ``epoch_s``.
    """

    def __init__(
        self,
        net: ComponentNet,
        strategy: Strategy,
        *,
        optimizer,
        loss_fn: LossFn,
        lr_scheduler=None,
        loss_weights: Sequence[float] | None = None,
        batch_streams: bool = False,
        split_backward: bool | None = None,
        rng_seed: int | None = None,
        record: bool = True,
        microbatches: int = 1,
        timeout_s: float = 300.0,
        device: torch.device | str | None = None,
        max_pending_sends: int = 32,
        sample_input: torch.Tensor | None = None,
        static_shapes: bool = False,
        total_steps: int | None = None,
        backend: str | None = None,
    ) -> None:
        if total_steps is not None:
            check_total_steps(total_steps, "the run's length in steps (or None)")
        if isinstance(strategy, Strategy) and strategy.own_engine:
            raise ValueError(
                f"{strategy.name} has an engine of its own; make it with interlock.engines.create_distributed(net, strategy, ...)"
            )
        options = EngineOptions(
            optimizer=optimizer, loss_fn=loss_fn, lr_scheduler=lr_scheduler, loss_weights=loss_weights,
            batch_streams=batch_streams, split_backward=split_backward, rng_seed=rng_seed, record=record,
            microbatches=microbatches,
        )
        ties = tie_groups(net) if isinstance(net, ComponentNet) else []  # (while every rank holds the whole network)
        k = self._setup(net, strategy, options, device=device, timeout_s=timeout_s, sample_input=sample_input,
                        backend=backend)
        self._setup_ties(net, ties, k)
        self.options = options
        self.total_steps = total_steps
        self._open_channels(max_pending_sends=max_pending_sends, timeout_s=timeout_s, train_tags=_TRAIN_P2P_TAGS,
                            static_shapes=static_shapes)
        self.worker = make_worker(net, k, self.plan, self.options, self.channel)
        if self._ties:
            self.worker.before_update = self._sum_ties
        self.step_count = 0
        self.epoch_s = self.group.epoch()
        logger.info(
            "rank %d of %d: component %d (%s), %s over %s", k, self.num_components, k + 1, strategy.name, self.device, self.group.backend
        )

    def _setup_ties(self, net: ComponentNet, ties, k: int) -> None:
        """A process group per tied tensor among the ranks holding its copies (new_group is collective:
        every rank makes every group, in one order); this rank keeps only its own copies."""
        self._ties = []
        for g in ties:
            ranks = g.components
            group = dist.new_group(ranks=ranks, backend="gloo" if self.group.staged or self.device.type == "cpu" else None)
            if k in ranks:
                self._ties.append((group, ranks, g.local(k)))
        net.ties = [params for _, _, params in self._ties]  # the other ranks' copies are freed with their components

    def _sum_ties(self) -> None:
        for group, ranks, params in self._ties:
            mine = local_sum(params)
            wire = mine.cpu() if self.group.staged else mine
            parts = [torch.empty_like(wire) for _ in ranks]
            dist.all_gather(parts, wire.contiguous(), group=group)
            set_grads(params, sum_in_order([p.to(mine.device) for p in parts]))

    # -- what the training program uses ---------------------------------------------------

    def step(self, x: torch.Tensor | None, y: torch.Tensor) -> StepResult:
        """One training step of this rank's component.

        ``x``: the batch inputs (used on rank 0 only; other ranks may pass None); ``y``:
        the targets (every rank). Returns without waiting for later components unless the
        strategy sends gradients down. ``losses[rank]`` is this component's loss, NaN
        elsewhere (no collective per step: use :meth:`gather_losses` to fill them in).
        ``records``: this rank's action times in seconds since ``epoch_s``.
        """
        if y is None:
            raise ValueError("every rank needs the targets y (the heads' losses); pass the same batch on every rank")
        if self.rank == 0 and x is None:
            raise ValueError("rank 0 runs the first component: pass the batch inputs x")
        step = self.step_count
        self.worker.next_step_follows = self.total_steps is not None and step + 1 < self.total_steps
        loss = self.worker.run_step(x if self.rank == 0 else None, y, step)
        self.step_count += 1
        # This rank's loss, NaN elsewhere, left on the device: no host sync per step.
        losses = Losses.of([loss if j == self.rank else None for j in range(self.num_components)])
        return StepResult(step=step, losses=losses, records=self._records())

    def _records(self) -> list[ActionRecord]:
        e = self.epoch_s
        return [replace(r, start_s=r.start_s - e, end_s=r.end_s - e) for r in self.worker.records]

    # -- checkpoints ---------------------------------------------------------------------

    def component_state(self, k: int) -> dict:
        """Component k's block, head, optimizer and LR-scheduler state, and ``step_count`` (k must be this rank's).

        The tensors are the live ones: save (``torch.save``) or copy the dict before training on.
        """
        self._check_local(k)
        w = self.worker
        return pack_component_state(
            k=k, num_components=self.num_components, strategy=self.strategy.name, step_count=self.step_count,
            block=w.block, head=w.head, optimizer=w.optimizer, lr_scheduler=w.lr_scheduler,
        )

    def load_component_state(self, k: int, state: dict) -> None:
        """Restore what :meth:`component_state` returned (``step_count`` included, so dropout masks continue)."""
        self._check_local(k)
        load_component(state, k=k, num_components=self.num_components, block=self.worker.block, head=self.worker.head,
                       optimizer=self.worker.optimizer, lr_scheduler=self.worker.lr_scheduler)
        self.step_count = int(state["step_count"])
