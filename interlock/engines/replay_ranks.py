"""Asynchronous DGL with one process per component: every rank trains at its own real pace.

Rank k holds component k+1 and loops over its own steps. Rank 0 trains on fresh batches.
Rank k > 0 trains on what rank k-1 produced: rank k-1 sends each output (with its labels)
up without waiting (``isend``); a :class:`~interlock.engines.mailbox.Mailbox` thread on rank k
takes the messages as they arrive, and at each step rank k writes everything that arrived into
its replay buffer B_k (:class:`~interlock.engines.buffer.ReplayBuffer`, the policy of the
simulated :class:`~interlock.engines.ReplayEngine`: overwrite the oldest, read the least
reused, newest first) and reads one entry to train on. It waits for rank k-1 only while its
buffer is empty (at the very start), so a slow rank slows nobody but itself: the ranks above
it reuse entries, the ranks below it run on.

Each rank makes ``total_steps`` updates (the quota, one per step) and sends one output per
step; the run ends when every rank has made its quota. Unlike the simulated engine, a rank
that has made its quota stops: the ranks above train on from their buffers (reusing what is
there) instead of receiving forward-only outputs.

``slowdown`` S on ``slow_component`` slows that rank for real: after each step it sleeps
(S - 1) times the step's compute time, so it trains S times slower (the paper's delays on
real processes). ``schedule="round_robin"`` forces the interleaving of the simulated engine's
round-robin draws: rank k waits for rank k-1's output of the same step before each step, so
every rank reads the entry just written. With any M that is synchronous ``Local()``, bit
for bit (and equals the simulated engine with the same schedule, tests/test_distributed_async.py).

``max_reuse`` r (``replay.max_reuse``; 0: no bound, the default, as the reference code's
``--max-buffer-reuse`` of infinity) bounds how often rank k may read one entry: when every
entry of its buffer has been read r times, rank k waits for rank k-1's next output (the
reference code skips such a draw; a real worker can only wait). Once rank k-1 has sent its
last output nothing more will come, and rank k finishes its quota on what its buffer holds.
Without a bound, a fast rank above a slow one reads the same few entries many times over.

Sync points: evaluation, checkpoints and the end of the run are collective. At each, rank k
first takes every message rank k-1 sent before it (all ranks are at the same step there), so
a checkpoint holds each buffer exactly and resuming continues from it. Log rows are not sync
points: rank k reports its window's values to rank 0 without waiting, tagged with the step
(:meth:`log_row`), and rank 0 writes a row once every rank's report of that step has arrived,
in order (rows wait, the training does not); before a sync point and at the end it waits for
the reports still due, so every component's loss reaches the metrics, whatever the intervals.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import replace

import torch

from ..core import schedule as S
from ..network.net import ComponentNet
from ..core.strategies import AsyncLocal
from ..runtime.transport import InMemoryTransport
from .buffer import ReplayBuffer
from .common import EngineOptions, Losses, LossFn, StepResult, check_total_steps, load_component, make_worker, pack_component_state
from .ranks import RankEngine
from .mailbox import END_TAG, Mailbox

__all__ = ["ReplayRankEngine"]

# Training messages travel on their own point-to-point tags: evaluation (the default tags) and
# training never mix, whatever is in flight when a sync point comes.
_P2P_TAGS = (7311, 7312)
_ACTIVATION = ("replay_activation",)
_LABELS = ("replay_labels",)
_REPORT = ("report",)


class ReplayRankEngine(RankEngine):
    """Train component ``rank`` of ``net`` with :class:`~interlock.core.strategies.AsyncLocal`, one process per component.

    ``total_steps``: the quota Q of updates every rank makes (required: the ranks stop on their
    own, so each must know when). Other options as :class:`~interlock.engines.DistributedEngine`.
    """

    def __init__(
        self,
        net: ComponentNet,
        strategy: AsyncLocal,
        *,
        total_steps: int,
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
        if not isinstance(strategy, AsyncLocal):
            raise ValueError(f"ReplayRankEngine runs AsyncLocal(...) (async-local); got {strategy!r}")
        check_total_steps(total_steps, "the quota of updates per component")
        options = EngineOptions(
            optimizer=optimizer, loss_fn=loss_fn, lr_scheduler=lr_scheduler, loss_weights=loss_weights,
            batch_streams=batch_streams, split_backward=split_backward, rng_seed=rng_seed, record=record,
        )
        strategy.plan(net.num_components)  # the slow component's range, on every rank before any joins
        k = self._setup(net, strategy, options, device=device, timeout_s=timeout_s, sample_input=sample_input)
        K = self.num_components
        self.quota = total_steps
        # channel: training outputs up, reports to rank 0; transport: evaluation's chain.
        self._open_channels(max_pending_sends=max_pending_sends, timeout_s=timeout_s, train_tags=_P2P_TAGS)
        self._loopback = InMemoryTransport()  # the worker's input and output, handed over in this process
        self.worker = make_worker(net, k, self.plan, options, self._loopback)
        self.buffer = ReplayBuffer(strategy.buffer_size) if k > 0 else None
        self.inbox = Mailbox(self.channel, src=k - 1, dst=k, timeout_s=timeout_s) if k > 0 else None
        self.reports = {j: Mailbox(self.channel, src=j, dst=0, timeout_s=timeout_s) for j in range(1, K)} if k == 0 else {}
        self._latest: dict[int, torch.Tensor] = {}  # rank 0: each rank's latest report
        self._rows: dict[int, dict[int, torch.Tensor]] = {j: {} for j in self.reports}  # rank 0: reports by step
        self.max_reuse = int(strategy.max_reuse)
        self.waits_for_reuse = 0  # reads that waited for a new entry because every entry was read max_reuse times
        self.bounded_reads = 0  # the most reads of one entry while the bound applied (rank k-1 still sending)
        self.lockstep = strategy.schedule == "round_robin"
        self.sleep_factor = float(strategy.slowdown) - 1.0 if k == strategy.slow_component - 1 else 0.0
        self.step_count = 0
        self._start = 0  # the step this engine started at (a resumed run's checkpoint step)
        self._pending_label = None
        self._closed = False
        self.epoch_s = self.group.epoch()

    # -- the input buffer ----------------------------------------------------------------------

    def _file(self, messages) -> None:
        """Write arrived (activation, labels) pairs into the buffer, in the order rank k-1 sent them."""
        for tag, tensor in messages:
            if tag == _ACTIVATION:
                self._pending_label = tensor
            elif tag == _LABELS:
                self.buffer.write(self._pending_label, tensor)
                self._pending_label = None
            else:
                raise RuntimeError(f"component {self.rank + 1} received an unexpected {tag} from component {self.rank}")

    def _settle(self) -> None:
        """Take every output rank k-1 sent up to this step (call where all ranks are at the same step)."""
        if self.inbox is not None:
            self._file(self.inbox.wait_for(2 * (self.step_count - self._start)))

    # -- training ------------------------------------------------------------------------------

    def step(self, x: torch.Tensor | None, y: torch.Tensor | None) -> StepResult:
        """One update of this rank's component: rank 0 on (x, y); rank k > 0 on an entry of its buffer
        (x and y are ignored there; they may be None)."""
        if self.step_count >= self.quota:
            raise ValueError(f"component {self.rank + 1} has made its quota of {self.quota} updates; the run is over")
        k, K = self.rank, self.num_components
        if k == 0:
            if x is None or y is None:
                raise ValueError("rank 0 runs the first component: pass the batch inputs x and targets y")
            inp, labels = x, y
        else:
            done = 2 * (self.step_count - self._start)
            if self.lockstep:  # the output of the same step (the simulated round-robin's interleaving)
                self._file(self.inbox.wait_for(done + 2))
            else:
                self._file(self.inbox.take())
                total = 2 * (self.quota - self._start)  # messages rank k-1 sends in all (from this run's start)
                while not len(self.buffer) or (
                        self.max_reuse and self.buffer.least_reuses() >= self.max_reuse and self.inbox.received < total):
                    self.waits_for_reuse += bool(len(self.buffer))
                    self._file(self.inbox.wait_for(self.inbox.received + 2 - self.inbox.received % 2))
            bounded = self.inbox.received < 2 * (self.quota - self._start)
            inp, labels = self.buffer.read()
            if bounded:
                self.bounded_reads = max(self.bounded_reads, self.buffer.most_reads)
        start = time.perf_counter()
        step = self.step_count
        w = self.worker
        w.begin_step(inp if k == 0 else None, labels, step)
        if k > 0:
            self._loopback.send(inp, src=k - 1, dst=k, tag=S.ACTIVATION_TAG)
        for action in w.schedule:
            w.run(action)
        loss = w.end_step()
        if k < K - 1:
            out = self._loopback.recv(src=k, dst=k + 1, tag=S.ACTIVATION_TAG)
            self.channel.send(out, src=k, dst=k + 1, tag=_ACTIVATION)
            self.channel.send(labels, src=k, dst=k + 1, tag=_LABELS)
        if self.sleep_factor > 0:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)  # the update's compute, not its launch
            time.sleep(self.sleep_factor * (time.perf_counter() - start))
        self.step_count += 1
        losses = Losses.of([loss if j == k else None for j in range(K)])
        e = self.epoch_s
        records = [replace(r, start_s=r.start_s - e, end_s=r.end_s - e) for r in w.records]
        return StepResult(step=step, losses=losses, records=records, updated=[j == k for j in range(K)])

    # -- reporting without sync points ----------------------------------------------------------

    def gather_losses(self, losses: list[float]) -> list[float]:
        """This rank's own losses only: no collective (the ranks are not in step)."""
        return list(losses)

    def log_sum(self, table: torch.Tensor) -> torch.Tensor:
        """Rank k > 0 reports its row to rank 0 without waiting; rank 0 returns its own row and the
        latest report of every other rank (NaN rows for a rank that has not reported yet)."""
        k = self.rank
        if k > 0:
            self._report(table, -1)
            return table
        out = table.detach().clone()
        for j, box in self.reports.items():
            self._file_reports(j, box.take())
            out[j] = self._latest[j][j] if j in self._latest else math.nan
        return out

    def log_row(self, table: torch.Tensor, step: int, *, wait: bool) -> torch.Tensor | None:
        """The log row of ``step``: rank k > 0 reports its row (tagged with the step) and goes on; rank 0
        returns its own row with every rank's report of that step once all have arrived, None until then
        (``wait``: waits for them, as before a sync point or at the end)."""
        k = self.rank
        if k > 0:
            self._report(table, step)
            return table
        for j, box in self.reports.items():
            self._file_reports(j, box.take())
            while wait and step not in self._rows[j]:
                self._file_reports(j, box.wait_for(box.received + 1))
        if any(step not in rows for rows in self._rows.values()):
            return None
        out = table.detach().clone()
        for j, rows in self._rows.items():
            out[j] = rows.pop(step)[j]
        return out

    def _report(self, table: torch.Tensor, step: int) -> None:
        flat = table.detach().to("cpu", torch.float64).flatten()
        self.channel.send(torch.cat([flat, torch.tensor([float(step)], dtype=torch.float64)]), src=self.rank, dst=0, tag=_REPORT)

    def _file_reports(self, j: int, messages) -> None:
        for _, msg in messages:
            table = msg[:-1].view(self.num_components, -1)
            self._latest[j] = table
            if int(msg[-1]) >= 0:
                self._rows[j][int(msg[-1])] = table

    # -- sync points -----------------------------------------------------------------------------

    def heads_forward(self, x: torch.Tensor | None) -> list[torch.Tensor | None]:
        """Evaluation forward across the ranks (a sync point; see :meth:`DistributedEngine.heads_forward`)."""
        self._settle()
        return super().heads_forward(x)

    def component_state(self, k: int) -> dict:
        """Component k's state (see DistributedEngine) plus its input buffer; a sync point."""
        self._check_local(k)
        self._settle()
        w = self.worker
        state = pack_component_state(
            k=k, num_components=self.num_components, strategy=self.strategy.name, step_count=self.step_count,
            block=w.block, head=w.head, optimizer=w.optimizer, lr_scheduler=w.lr_scheduler,
        )
        state["replay_rank"] = {"input_buffer": None if self.buffer is None else self.buffer.state_dict(),
                                "bounded_reads": self.bounded_reads, "waits_for_reuse": self.waits_for_reuse}
        return state

    def load_component_state(self, k: int, state: dict) -> None:
        self._check_local(k)
        if "replay_rank" not in state:
            raise ValueError(
                f"the checkpoint of component {k + 1} has no replay buffer of this engine: it was written by "
                f"{state.get('strategy')} on another engine; resume it with the engine and strategy that wrote it"
            )
        w = self.worker
        load_component(state, k=k, num_components=self.num_components, block=w.block, head=w.head,
                       optimizer=w.optimizer, lr_scheduler=w.lr_scheduler)
        self.step_count = self._start = int(state["step_count"])
        if self.buffer is not None:
            self.buffer.load_state_dict(state["replay_rank"]["input_buffer"])
        self.bounded_reads = int(state["replay_rank"].get("bounded_reads", 0))
        self.waits_for_reuse = int(state["replay_rank"].get("waits_for_reuse", 0))

    def close(self, *, wait: bool = True) -> None:
        """End this rank's channels (every output and report received), then leave the group."""
        if wait and not self._closed:
            self._closed = True
            k, K = self.rank, self.num_components
            if self.inbox is not None:
                self._file(self.inbox.join())  # rank k-1 has sent everything (END comes after its last output)
            if k < K - 1:
                self.channel.send(torch.empty(0), src=k, dst=k + 1, tag=END_TAG)
            if k > 0:
                self.channel.send(torch.empty(0), src=k, dst=0, tag=END_TAG)
            for box in self.reports.values():
                box.join()
            self.channel.flush()
        super().close(wait=wait)
