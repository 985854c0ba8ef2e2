"""The distributed engine: one process per component, over torch.distributed.

Rank k holds component k+1 only and runs the same ``ComponentWorker`` as the simulated
engine, over a :class:`~interlock.transport.TorchDistributedTransport`. Same schedules,
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
CPU). Without torchrun, :func:`interlock.launch.run_local` starts K local processes.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from ..net import ComponentNet
from ..strategies import Strategy
from ..transport import TorchDistributedTransport
from ..worker import ActionRecord
from .common import EngineOptions, LossFn, StepResult, check_heads, load_component, make_worker, pack_component_state

__all__ = ["DistributedEngine", "RankGroup", "keep_component"]

logger = logging.getLogger(__name__)

# Evaluation activations travel on the same channels as training messages; their own tag
# makes a training/evaluation mix-up between ranks a loud TransportError.
EVAL_TAG = ("eval_activation",)
_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
_EVAL_SENDS_IN_FLIGHT = 1


@dataclass
class RankGroup:
    """This process's place in the process group, and the collectives the engines need.

    ``control_group`` is a gloo group for CPU-side traffic (message headers, losses, the
    epoch barrier): the world group itself under gloo, a gloo side group under NCCL.
    """

    rank: int
    world_size: int
    device: torch.device
    backend: str
    created: bool  # this process group was initialised here, so close() destroys it
    control_group: dist.ProcessGroup | None

    @classmethod
    def join(cls, *, device: torch.device | str | None, timeout_s: float) -> "RankGroup":
        """Initialise the default process group from the torchrun environment, unless it already is."""
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not timeout_s > 0:
            raise ValueError(f"timeout_s={timeout_s!r}: give the process-group timeout as a positive number of seconds")
        if not dist.is_available():
            raise RuntimeError("this PyTorch build has no torch.distributed; install one that does")
        dev = _resolve_device(device)
        created = False
        if not dist.is_initialized():
            missing = [v for v in _ENV if v not in os.environ]
            if missing:
                raise RuntimeError(
                    f"the distributed engine needs {', '.join(missing)} in the environment: start one process per "
                    f"component with `torchrun --nproc-per-node=K script.py` or interlock.launch.run_local(fn, K)"
                )
            backend = "nccl" if dev.type == "cuda" else "gloo"
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
            created = True
        backend = str(dist.get_backend())
        if dev.type == "cuda" and "nccl" not in backend:
            raise ValueError(f"device={dev} needs the NCCL backend, but the process group uses {backend!r}")
        if dev.type == "cpu" and "gloo" not in backend:
            raise ValueError(f"device=cpu needs the gloo backend, but the process group uses {backend!r}; pass device='cuda'")
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        # Under NCCL, CPU tensors (headers, losses) go over a gloo side group. Every rank
        # creates it at the same point (new_group is collective).
        control = None if backend == "gloo" else dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s))
        return cls(
            rank=dist.get_rank(), world_size=dist.get_world_size(), device=dev, backend=backend,
            created=created, control_group=control,
        )

    def require_world_size(self, num_components: int) -> None:
        if self.world_size != num_components:
            if self.created:
                dist.destroy_process_group()
            raise ValueError(
                f"the network has {num_components} components but {self.world_size} processes were started; "
                f"start one process per component (torchrun --nproc-per-node={num_components}, or "
                f"run_local(fn, {num_components}))"
            )

    def barrier(self) -> None:
        dist.barrier(group=self.control_group)

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """The sum of ``t`` over the ranks (a new tensor; ``t`` is left alone)."""
        if t.device.type == "cpu":
            out, group = t.detach().clone(), self.control_group
        else:
            out, group = t.detach().to(self.device, copy=True), None
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out.to(t.device)

    def gather_losses(self, losses: Sequence[float]) -> list[float]:
        """Fill in every rank's entry of ``losses`` (each rank knows its own) with one collective."""
        if len(losses) != self.world_size:
            raise ValueError(f"losses has {len(losses)} entries; pass a step's losses, one per component ({self.world_size})")
        # Zeros elsewhere: the sum over ranks is each rank's own value, NaN included, exactly.
        mine = torch.zeros(self.world_size, dtype=torch.float64)
        mine[self.rank] = float(losses[self.rank])
        dist.all_reduce(mine, op=dist.ReduceOp.SUM, group=self.control_group)
        return mine.tolist()

    def epoch(self) -> float:
        """A common time origin: ``time.perf_counter()`` just after a barrier that every rank leaves together."""
        self.barrier()
        return time.perf_counter()

    def close(self, *, wait: bool = True) -> None:
        if self.created and dist.is_initialized():
            if wait:
                self.barrier()  # no rank tears down the group while another still uses it
            dist.destroy_process_group()
            self.created = False


def _resolve_device(device: torch.device | str | None) -> torch.device:
    if device is None:
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        # torchrun gives each process on a node its LOCAL_RANK: one GPU per process.
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device={device!r}: the distributed engines run on 'cpu' (gloo) or 'cuda' (NCCL)")
    return dev


def keep_component(net: ComponentNet, k: int) -> None:
    """Drop every component but k from ``net`` in place: other blocks and heads become None.

    The rank then holds (and moves to its device) only its own modules; ``net.state_dict()``
    holds only component k's entries, and ``net(x)`` no longer runs on this rank.
    """
    for j in range(net.num_components):
        if j != k:
            net.blocks[j] = None
            net.heads[j] = None


def chain_heads_forward(
    transport: TorchDistributedTransport,
    *,
    rank: int,
    num_components: int,
    block: nn.Module,
    head: nn.Module | None,
    x: torch.Tensor | None,
    device: torch.device,
) -> list[torch.Tensor | None]:
    """Evaluation forward across the ranks: activations flow up rank by rank; this rank's head's prediction."""
    with torch.no_grad():
        if rank == 0:
            if x is None:
                raise ValueError("heads_forward needs the inputs x on rank 0")
            a = x.to(device)
        else:
            a = transport.recv(src=rank - 1, dst=rank, tag=EVAL_TAG)
        a = block(a)
        if rank < num_components - 1:
            transport.send(a, src=rank, dst=rank + 1, tag=EVAL_TAG)
            # Evaluation sends no gradients back, so nothing else would stop this rank from
            # running far ahead of the next, holding up to max_pending_sends activations. One
            # in flight still overlaps the ranks (k computes chunk i+1 while k+1 takes chunk i)
            # and keeps each rank's memory at a few chunk-sized activations.
            transport.flush(keep=_EVAL_SENDS_IN_FLIGHT)
        out = None if head is None else head(a)
    return [out if j == rank else None for j in range(num_components)]


class RankEngine:
    """What every one-component-per-rank engine offers the training program, from its ``group``."""

    group: RankGroup
    transport: TorchDistributedTransport
    _num_components: int

    @property
    def rank(self) -> int:
        return self.group.rank

    @property
    def is_main(self) -> bool:
        return self.group.rank == 0

    @property
    def num_components(self) -> int:
        return self._num_components

    @property
    def local_components(self) -> list[int]:
        return [self.group.rank]

    def gather_losses(self, losses: list[float]) -> list[float]:
        """Every component's loss from a step's ``losses`` (one collective: call it on every rank, at log intervals)."""
        return self.group.gather_losses(losses)

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """The sum of ``t`` over the ranks (call on every rank)."""
        return self.group.all_reduce_sum(t)

    def barrier(self) -> None:
        self.group.barrier()

    def _join(self, net: ComponentNet, *, device, timeout_s: float) -> int:
        """Join the process group (one rank per component) and keep only this rank's component of ``net``."""
        K = net.num_components
        self.group = RankGroup.join(device=device, timeout_s=timeout_s)
        self.group.require_world_size(K)
        self._num_components = K
        self.device = self.group.device
        keep_component(net, self.group.rank)
        return self.group.rank

    def _setup(self, net: ComponentNet, strategy: Strategy, options: EngineOptions, *, device, timeout_s: float,
               sample_input: torch.Tensor | None) -> int:
        """What every rank engine does first: validate (alike on every rank, before any joins), join the
        process group, keep this rank's component and move it to the device. Returns the rank."""
        if not isinstance(net, ComponentNet):
            raise ValueError(f"net must be an interlock.ComponentNet, got {type(net).__name__}")
        if not isinstance(strategy, Strategy):
            raise ValueError(f"strategy must be an interlock strategy (EndToEnd(), Interlocking(n), Local()), got {strategy!r}")
        if not strategy.distributed:
            raise ValueError(f"{strategy.name} runs in one process only for now; use the simulated engine (engine=simulated)")
        self.strategy = strategy
        self.plan = strategy.plan(net.num_components)
        check_heads(net, strategy, self.plan)
        options.validate(net.num_components)
        if sample_input is not None:
            net.check(sample_input)  # every rank still holds the whole network here
        k = self._join(net, device=device, timeout_s=timeout_s)
        net.blocks[k].to(self.device)
        if net.heads[k] is not None:
            net.heads[k].to(self.device)
        self.net = net
        return k

    def log_sum(self, table: torch.Tensor) -> torch.Tensor:
        """A log row's values summed over the ranks (each fills its own component's row, zeros elsewhere): one collective."""
        return self.group.all_reduce_sum(table)

    def _check_local(self, k: int) -> None:
        if k != self.rank:
            raise ValueError(f"rank {self.rank} holds component {self.rank + 1} only; component {k + 1} lives on rank {k}")

    def close(self, *, wait: bool = True) -> None:
        """Wait for this rank's sends to be received, then destroy the process group if this engine created it.

        ``wait=False`` (after an error): skip the waiting, only tear down.
        """
        if wait:
            self.transport.flush()
        self.group.close(wait=wait)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_) -> None:
        self.close(wait=exc_type is None)


class DistributedEngine(RankEngine):
    """Train component ``rank`` of ``net`` with ``strategy``, one process per component.

    Options as :class:`~interlock.engines.simulated.SimulatedEngine` (``optimizer``,
    ``loss_fn``, ``lr_scheduler``, ``loss_weights``, ``batch_streams``, ``rng_seed``,
    ``record``), plus: ``timeout_s``, the process-group timeout (a rank that waits longer
    for a message fails); ``device``: None (CPU, gloo) or "cuda" (GPU LOCAL_RANK, NCCL);
    ``max_pending_sends``: sends a rank may have outstanding before it waits for the
    oldest (bounds how far a component runs ahead under local learning);
    ``sample_input``: dry-run the whole network's shapes on every rank first.

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
        split_backward: bool = False,
        rng_seed: int | None = None,
        record: bool = True,
        timeout_s: float = 300.0,
        device: torch.device | str | None = None,
        max_pending_sends: int = 32,
        sample_input: torch.Tensor | None = None,
    ) -> None:
        if isinstance(strategy, Strategy) and strategy.own_engine:
            raise ValueError(
                f"{strategy.name} has an engine of its own; make it with interlock.engines.create_distributed(net, strategy, ...)"
            )
        options = EngineOptions(
            optimizer=optimizer, loss_fn=loss_fn, lr_scheduler=lr_scheduler, loss_weights=loss_weights,
            batch_streams=batch_streams, split_backward=split_backward, rng_seed=rng_seed, record=record,
        )
        k = self._setup(net, strategy, options, device=device, timeout_s=timeout_s, sample_input=sample_input)
        self.options = options
        self.transport = TorchDistributedTransport(
            group=None, header_group=self.group.control_group, device=self.device,
            max_pending_sends=max_pending_sends, timeout_s=timeout_s,
        )
        self.worker = make_worker(net, k, self.plan, self.options, self.transport)
        self.step_count = 0
        self.epoch_s = self.group.epoch()
        logger.info(
            "rank %d of %d: component %d (%s), %s over %s", k, self.num_components, k + 1, strategy.name, self.device, self.group.backend
        )

    # -- what the training program uses ---------------------------------------------------

    @property
    def optimizers(self) -> list[torch.optim.Optimizer | None]:
        """Indexed by component: this rank's optimizer at ``rank``, None elsewhere."""
        return [self.worker.optimizer if j == self.rank else None for j in range(self.num_components)]

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
        loss = self.worker.run_step(x if self.rank == 0 else None, y, step)
        self.step_count += 1
        losses = [math.nan] * self.num_components
        if loss is not None:
            losses[self.rank] = float(loss)  # the one device sync of the step
        return StepResult(step=step, losses=losses, records=self._records())

    def _records(self) -> list[ActionRecord]:
        e = self.epoch_s
        return [replace(r, start_s=r.start_s - e, end_s=r.end_s - e) for r in self.worker.records]

    def heads_forward(self, x: torch.Tensor | None) -> list[torch.Tensor | None]:
        """Evaluation forward (no grad; modules in whatever mode the caller set). Call on every rank.

        ``x`` is used on rank 0 only. Entry ``rank`` holds this component's head prediction
        (None without a head); the other entries are None.
        """
        return chain_heads_forward(
            self.transport, rank=self.rank, num_components=self.num_components,
            block=self.net.blocks[self.rank], head=self.net.heads[self.rank], x=x, device=self.device,
        )

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
