"""The ranks runtime: one process per component, over torch.distributed (gloo or NCCL).

Rank k holds component k+1 only. :class:`RankGroup` joins (or finds) the process group and
offers the collectives; :class:`RanksRuntime` keeps this rank's component, opens the channels
(training messages on their own point-to-point tags, evaluation's chain on another), sums tied
copies' gradients among the ranks holding them, and runs the worker's schedule over blocking
receives. :func:`chain_heads_forward` is the evaluation forward across the ranks.

Running it: every rank runs the same script, builds the same network from the same seed, makes
the engine with ``runtime="ranks"`` and feeds every rank the same batches (only rank 0 uses the
inputs ``x``; every rank needs the targets ``y``). Start one process per component with
``torchrun --nproc-per-node=K script.py`` (it sets RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT and
LOCAL_RANK), across machines with ``--nnodes``/``--node-rank`` or a c10d rendezvous (component
k+1 lives on rank k = node_rank * nproc_per_node + local_rank), or without torchrun with
:func:`interlock.runtime.launch.run_local`. ``device=None`` runs on the CPU over gloo;
``device="cuda"`` runs each rank on GPU ``LOCAL_RANK`` over NCCL (headers and losses over a gloo
side group); ``device="cuda", backend="gloo"`` shares GPUs among ranks and stages every message
through the CPU (a way to run K components on fewer GPUs, not a fast one).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from ..checks import number
from ..network.net import ComponentNet
from ..network.ties import check_engine_supports_ties, local_sum, set_grads, sum_in_order, tie_groups
from .transport import TorchDistributedTransport

__all__ = ["RanksRuntime", "RankGroup", "keep_component", "chain_heads_forward", "check_backend", "BACKENDS", "EVAL_TAG"]

# Evaluation activations travel on the same channels as training messages; their own tag
# makes a training/evaluation mix-up between ranks a loud TransportError.
EVAL_TAG = ("eval_activation",)
_TRAIN_P2P_TAGS = (7303, 7304)  # training messages' own point-to-point tags
_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
_EVAL_SENDS_IN_FLIGHT = 1


@dataclass
class RankGroup:
    """This process's place in the process group, and the collectives the engines need.

    ``control_group`` is a gloo group for CPU-side traffic (message headers, losses, the
    epoch barrier): the world group itself under gloo, a gloo side group under NCCL.
    ``staged``: the ranks compute on GPUs but talk over gloo (``backend="gloo"``, so that several
    ranks can share one GPU, which NCCL refuses): messages and reductions go through the CPU.
    """

    rank: int
    world_size: int
    device: torch.device
    backend: str
    created: bool  # this process group was initialised here, so close() destroys it
    control_group: dist.ProcessGroup | None
    staged: bool = False

    @classmethod
    def join(cls, *, device: torch.device | str | None, timeout_s: float, backend: str | None = None) -> "RankGroup":
        """Initialise the default process group from the torchrun environment, unless it already is.

        ``backend``: None picks NCCL on GPUs (one GPU per rank: ``cuda:LOCAL_RANK``) and gloo on the
        CPU; "gloo" with ``device="cuda"`` puts the ranks on the GPUs in turn (``LOCAL_RANK`` modulo
        the GPUs, so K ranks may share one) and stages every message through the CPU.
        """
        number(timeout_s, f"timeout_s={timeout_s!r}: give the process-group timeout as a positive number of seconds",
               low=0, low_open=True, finite=False)
        check_backend(backend)
        if not dist.is_available():
            raise RuntimeError("this PyTorch build has no torch.distributed; install one that does")
        dev = _resolve_device(device, shared=backend == "gloo")
        if backend == "nccl" and dev.type != "cuda":
            raise ValueError("backend='nccl' needs device='cuda' (NCCL talks between GPUs); on the CPU use gloo")
        created = False
        if not dist.is_initialized():
            missing = [v for v in _ENV if v not in os.environ]
            if missing:
                raise RuntimeError(
                    f"the distributed engine needs {', '.join(missing)} in the environment: start one process per "
                    f"component with `torchrun --nproc-per-node=K script.py` or interlock.runtime.launch.run_local(fn, K)"
                )
            wanted = backend or ("nccl" if dev.type == "cuda" else "gloo")
            dist.init_process_group(wanted, timeout=timedelta(seconds=timeout_s))
            created = True
        actual = str(dist.get_backend())
        if backend is not None and backend not in actual:
            raise ValueError(f"backend={backend!r}, but the process group was initialised with {actual!r}")
        if dev.type == "cuda" and "nccl" not in actual and backend != "gloo":
            raise ValueError(f"device={dev} needs the NCCL backend, but the process group uses {actual!r} "
                             f"(pass backend='gloo' to run on GPUs with messages staged through the CPU)")
        if dev.type == "cpu" and "gloo" not in actual:
            raise ValueError(f"device=cpu needs the gloo backend, but the process group uses {actual!r}; pass device='cuda'")
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        # Under NCCL, CPU tensors (headers, losses) go over a gloo side group. Every rank
        # creates it at the same point (new_group is collective).
        control = None if actual == "gloo" else dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s))
        return cls(
            rank=dist.get_rank(), world_size=dist.get_world_size(), device=dev, backend=actual,
            created=created, control_group=control, staged=dev.type == "cuda" and actual == "gloo",
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
        if t.device.type == "cpu" or self.staged:  # (gloo reduces CPU tensors)
            out, group = t.detach().to("cpu", copy=True), self.control_group
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


BACKENDS = ("nccl", "gloo")


def check_backend(backend) -> None:
    """A ValueError saying what to pass, unless ``backend`` is None, "nccl" or "gloo"."""
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}: use 'nccl' (one GPU per rank), 'gloo' (the CPU, or ranks sharing GPUs "
                         f"with messages staged through the CPU), or None (NCCL on GPUs, gloo on the CPU)")


def _resolve_device(device: torch.device | str | None, *, shared: bool = False) -> torch.device:
    if device is None:
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device={device!r}: the distributed engines run on 'cpu' (gloo) or 'cuda' (NCCL, or gloo)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}, but this process sees no CUDA device; run on 'cpu' or on a machine with a GPU")
    if dev.type == "cuda" and dev.index is None:
        # torchrun gives each process on a node its LOCAL_RANK: one GPU per process, or under gloo
        # the GPUs in turn (several ranks per GPU when there are more ranks than GPUs).
        local, count = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
        if not shared and local >= count:
            raise ValueError(f"device='cuda' over NCCL puts each rank on its own GPU, but this is local rank {local} "
                             f"and the node has {count} GPU(s): start at most {count} ranks per node, or pass "
                             f"backend='gloo' (config dist_backend=gloo) to share GPUs")
        dev = torch.device("cuda", local % count if shared else local)
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


class RanksRuntime:
    """This rank's component, its channels and collectives; see the module docstring.

    ``timeout_s``: the process-group timeout (a rank that waits longer for a message fails);
    ``device``: None (CPU, gloo) or "cuda" (GPU LOCAL_RANK, NCCL); ``backend``: None (NCCL on
    GPUs, gloo on the CPU) or "gloo" with ``device="cuda"``; ``max_pending_sends``: sends a rank
    may have outstanding before it waits for the oldest (bounds how far a component runs ahead
    under local learning); ``static_shapes``: every batch has one shape, so each message tag's
    layout is sent once and receives are posted ahead (the policy says whether its messages
    allow it). Initialises the default process group from the torchrun environment if it is not
    initialised (and ``close()`` then destroys it).
    """

    name = "ranks"

    def __init__(self, *, timeout_s: float = 300.0, device: torch.device | str | None = None, backend: str | None = None,
                 max_pending_sends: int = 32, static_shapes: bool = False) -> None:
        number(timeout_s, f"timeout_s={timeout_s!r}: give the process-group timeout as a positive number of seconds",
               low=0, low_open=True, finite=False)
        check_backend(backend)
        self.timeout_s, self.requested_device, self.backend = timeout_s, device, backend
        self.max_pending_sends, self.static_shapes = max_pending_sends, static_shapes
        self.channel: TorchDistributedTransport | None = None
        self.transport: TorchDistributedTransport | None = None
        self._ties: list = []
        self.epoch_s = 0.0

    # -- placing the network --------------------------------------------------------------

    def place(self, net: ComponentNet, *, sums_ties: bool, engine_name: str, sample_input=None) -> list[int]:
        """Join the process group (one rank per component), keep this rank's component of ``net`` (moved to
        the device) and open the channels; the components this process holds ([rank])."""
        if not sums_ties:
            check_engine_supports_ties(net, engine_name)  # (before joining: alike on every rank)
        if sample_input is not None:
            net.check(sample_input)  # every rank still holds the whole network here
        ties = tie_groups(net)  # (while every rank holds the whole network)
        K = net.num_components
        self.group = RankGroup.join(device=self.requested_device, timeout_s=self.timeout_s, backend=self.backend)
        self.group.require_world_size(K)
        self.num_components = K
        self.device = self.group.device
        k = self.group.rank
        keep_component(net, k)
        net.blocks[k].to(self.device)
        if net.heads[k] is not None:
            net.heads[k].to(self.device)
        self.net = net
        self._setup_ties(net, ties, k)
        common = dict(header_group=self.group.control_group, device=self.device, max_pending_sends=self.max_pending_sends,
                      timeout_s=self.timeout_s, wire_device="cpu" if self.group.staged else None)
        # Training messages on their own p2p tags, so receives posted ahead for training never meet an
        # evaluation message; evaluation's chain on the default tags.
        self.transport = TorchDistributedTransport(**common)
        self.channel = TorchDistributedTransport(**common, p2p_tags=_TRAIN_P2P_TAGS, static_shapes=self.static_shapes)
        return [k]

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

    def connect(self, workers: dict) -> None:
        """Hook the tied copies' gradient sum into this rank's updates; line the ranks' clocks up (``epoch_s``)."""
        for w in workers.values():
            if self._ties:
                w.before_update = self._sum_ties
        self.epoch_s = self.group.epoch()

    def connect_global_clip(self, workers: dict) -> None:
        """Global clipping: the squared norms summed over the ranks (one scalar all-reduce per update)."""
        for w in workers.values():
            w.sum_squares = self.all_reduce_sum

    def _sum_ties(self) -> None:
        for group, ranks, params in self._ties:
            mine = local_sum(params)
            wire = mine.cpu() if self.group.staged else mine
            parts = [torch.empty_like(wire) for _ in ranks]
            dist.all_gather(parts, wire.contiguous(), group=group)
            set_grads(params, sum_in_order([p.to(mine.device) for p in parts]))

    # -- running schedules ------------------------------------------------------------------

    def run(self, workers: dict) -> None:
        """Run this rank's begun step to its end (receives block until their message arrives)."""
        for w in workers.values():
            for action in w.schedule:
                w.run(action)

    def records(self, records: list) -> list:
        """Action records on the ranks' common time origin (seconds since ``epoch_s``)."""
        e = self.epoch_s
        return [replace(r, start_s=r.start_s - e, end_s=r.end_s - e) for r in records]

    # -- collectives -------------------------------------------------------------------------

    @property
    def rank(self) -> int:
        return self.group.rank

    @property
    def is_main(self) -> bool:
        return self.group.rank == 0

    def gather_losses(self, losses: list[float]) -> list[float]:
        """Every component's loss from a step's ``losses`` (one collective: call it on every rank)."""
        return self.group.gather_losses(losses)

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        return self.group.all_reduce_sum(t)

    def log_sum(self, table: torch.Tensor) -> torch.Tensor:
        """A log row's values summed over the ranks (each fills its own component's row): one collective."""
        return self.group.all_reduce_sum(table)

    def barrier(self) -> None:
        self.group.barrier()

    def heads_forward(self, x: torch.Tensor | None, *, block=None, head=None) -> list[torch.Tensor | None]:
        """Evaluation forward across the ranks (no grad; call on every rank; ``x`` used on rank 0 only):
        entry ``rank`` is this component's head prediction, the others None."""
        k = self.rank
        return chain_heads_forward(
            self.transport, rank=k, num_components=self.num_components,
            block=self.net.blocks[k] if block is None else block, head=self.net.heads[k] if head is None else head,
            x=x, device=self.device,
        )

    def check_local(self, k: int) -> None:
        if k != self.rank:
            raise ValueError(f"rank {self.rank} holds component {self.rank + 1} only; component {k + 1} lives on rank {k}")

    def close(self, *, wait: bool = True) -> None:
        """Wait for this rank's sends to be received, then destroy the process group if it was created here.

        ``wait=False`` (after an error): skip the waiting, only tear down.
        """
        if not hasattr(self, "group"):
            return
        if wait:
            for t in (self.channel, self.transport):
                if t is not None:
                    t.flush()
        self.group.close(wait=wait)
