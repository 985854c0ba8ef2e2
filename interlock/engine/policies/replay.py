"""Asynchronous DGL with replay buffers (Belilovsky et al. 2020, Alg. 2), simulated in one process.

Each *iteration* draws one component j (``AsyncLocal.pmf``: uniform, the slow component's
weight divided by S; or 1, 2, ..., K in turn with ``schedule="round_robin"``). Component 1
reads a fresh batch; component j > 1 reads from the replay buffer B_{j-1}
(:mod:`interlock.engine.policies.buffer`: overwrite the oldest, read the least reused, newest first).
The component runs its ordinary local-learning schedule (forward, head loss, update: the same
worker as ``Local()``), and (j < K) writes its detached output and the labels into B_j.

Quotas (the paper's fair-comparison rule): with ``total_steps`` = Q every component stops
updating once it has made Q updates (Q batches' worth, E epochs for an E-epoch run), and the
run ends when all have. Draws that cannot train are *skipped* (they cost nothing and change
nothing but the draw count):

- a component j > 1 whose input buffer is still empty (nothing was written below it yet), or
  whose every entry was read ``max_reuse`` times already (``replay.max_reuse`` r > 0; the
  reference code's ``--max-buffer-reuse``, whose default is no bound);
- a component that made its quota, when no component above it still trains (nobody needs
  its output).

At its quota a component that someone above still needs keeps running *forward only*
(:meth:`~interlock.core.worker.ComponentWorker.forward_frozen`: eval mode, no autograd) and
keeps writing its output into its buffer, as the reference code does: the components above
keep getting new inputs from fixed weights. Component 1 then still reads fresh batches, so a
run can read more than Q batches (``wants_more``). This is the one rule of both runtimes
(on ranks the forward-only outputs flow at their real pace, see below).

A training *step* (``step(x, y)``) is one fresh batch: component 1's iteration on (x, y) and
every iteration drawn after it, up to the next draw of component 1 (which opens the next step)
or the end of the run. ``step_count`` therefore counts fresh batches, as in every engine.

With M = 1 and the round-robin schedule, step t runs components 1, 2, ..., K once each, every
component reading exactly what its neighbour wrote in this step: synchronous ``Local()``
training, bit for bit (tests/test_replay.py).

Checkpoints add to each component's file its update count, its *input* buffer B_{k-1}
(activations included) and, in one process, the draw state (the generator, counters), so a
resumed run continues the same draws on the same buffers: resumed equals uninterrupted. The
format is the same on both runtimes; a checkpoint loads into the other runtime where the two
agree step for step, the round-robin schedule (every component makes one update per step, the
draw state follows from the step), and is refused with the reason otherwise.

With one process per component (the ranks runtime, :class:`ReplayRanks`), the pace is real:

Rank k holds component k+1 and loops over its own steps. Rank 0 trains on fresh batches.
Rank k > 0 trains on what rank k-1 produced: rank k-1 sends each output (with its labels)
up without waiting (``isend``); a :class:`~interlock.runtime.mailbox.Mailbox` thread on rank k
takes the messages as they arrive, and at each step rank k writes everything that arrived into
its replay buffer B_k (:class:`~interlock.engine.policies.buffer.ReplayBuffer`, the policy of
:class:`ReplayDrawn`: overwrite the oldest, read the least
reused, newest first) and reads one entry to train on. It waits for rank k-1 only while its
buffer is empty (at the very start), so a slow rank slows nobody but itself: the ranks above
it reuse entries, the ranks below it run on.

Each rank makes ``total_steps`` updates (the quota, one per step) and sends one output per
step. At its quota a rank that someone above still needs runs forward only, as in one process:
its steps past the quota are frozen forwards (rank 0 on fresh batches, the training loop's
``wants_more``), sent up as before, until the rank above says that it and every rank above it
made their quotas (a ``replay_done`` message down: rank K-1 sends it at its quota, rank k once it
has made its own and heard it from rank k+1). So no rank ever waits for an output that will not
come, and a slow rank's neighbours above train on new inputs to the end. At the end of the
training (:meth:`ReplayRanks.finish`) each rank takes every output that was sent to it and the
ranks agree on the run's step count, rank 0's (the fresh batches read, as in one process), so the
final checkpoint is one folder. Log rows hold the steps up to the quota (past it no rank has a
loss to report).

``slowdown`` S on ``slow_component`` slows that rank for real: after each step it sleeps
(S - 1) times the step's compute time, so it trains S times slower (the paper's delays on
real processes). ``schedule="round_robin"`` forces the interleaving of the simulated engine's
round-robin draws: rank k waits for rank k-1's output of the same step before each step, so
every rank reads the entry just written. With any M that is synchronous ``Local()``, bit
for bit (and equals the simulated engine with the same schedule, tests/test_distributed_async.py).

``max_reuse`` r (``replay.max_reuse``; 0: no bound, the default, as the reference code's
``--max-buffer-reuse`` of infinity) bounds how often rank k may read one entry: when every
entry of its buffer has been read r times, rank k waits for rank k-1's next output (the
reference code skips such a draw; a real worker can only wait; rank k-1 keeps sending until
rank k has made its quota, so the wait always ends). Without a bound, a fast rank above a slow
one reads the same few entries many times over.

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

import torch

from ...core.strategies import AsyncLocal
from ...runtime.mailbox import END_TAG, Mailbox
from ...timemodel.clock import Makespan
from ..options import Losses, StepResult
from ..specs import StrategySpec, register_strategy
from .base import Policy
from .buffer import ReplayBuffer

__all__ = ["ReplayDrawn", "ReplayRanks", "ComponentSampler", "no_wait_makespan"]

# Training messages of the ranks driver (on the runtime's training channel).
_ACTIVATION = ("replay_activation",)
_LABELS = ("replay_labels",)
_REPORT = ("report",)
_DONE = ("replay_done",)  # down: "I and every rank above me made our quotas"


class ComponentSampler:
    """Which component runs each iteration: j ~ ``strategy.pmf(K)`` from a generator seeded with
    ``strategy.seed``, or 0, 1, ..., K-1 in turn (``schedule="round_robin"``). 0-based."""

    def __init__(self, strategy: AsyncLocal, num_components: int) -> None:
        self.num_components = num_components
        self.round_robin = strategy.schedule == "round_robin"
        self.pmf = torch.tensor(strategy.pmf(num_components), dtype=torch.float64)
        self._generator = torch.Generator().manual_seed(strategy.seed)
        self.draws = 0

    def draw(self) -> int:
        self.draws += 1
        if self.round_robin:
            return (self.draws - 1) % self.num_components
        return int(torch.multinomial(self.pmf, 1, generator=self._generator))

    def state_dict(self) -> dict:
        return {"generator": self._generator.get_state(), "draws": self.draws}

    def load_state_dict(self, state: dict) -> None:
        self._generator.set_state(state["generator"])
        self.draws = int(state["draws"])


class ReplayDrawn(Policy):
    """Async DGL in one process: each step is component 1's draw on a fresh batch and every draw after it.

    ``total_steps`` (the engine's): the quota Q of updates per component (None: no quota,
    components never finish).
    """

    uses_channel = False  # the policy hands inputs and outputs between components through the buffers
    has_state = True
    holds = "replay state"

    def setup(self) -> None:
        e = self.engine
        K = e.num_components
        strategy: AsyncLocal = e.strategy
        self.strategy = strategy
        self.quota = e.total_steps
        self.workers = e._workers
        self.buffers = [ReplayBuffer(strategy.buffer_size) for _ in range(K - 1)]  # buffers[k] is B_{k+1}
        self.updates = [0] * K  # updates made by each component
        self.sampler = ComponentSampler(strategy, K)
        self.skipped = 0  # draws that could not train (see the module docstring)
        self.frozen = [0] * K  # forward-only iterations of each component past its quota
        self._pending = False  # component 1's next iteration was drawn already (it opens the next step)

    # -- the schedule of draws ----------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """Every component made its quota."""
        return self.quota is not None and all(u >= self.quota for u in self.updates)

    @property
    def wants_more(self) -> bool:
        """More fresh batches are needed: some component has not made its quota yet."""
        return self.quota is not None and not self.finished

    def _done(self, k: int) -> bool:
        return self.quota is not None and self.updates[k] >= self.quota

    def step(self, x: torch.Tensor, y: torch.Tensor, step: int) -> StepResult:
        """One fresh batch: component 1 on (x, y) and every iteration drawn until component 1's next draw."""
        losses: list[list[torch.Tensor]] = [[] for _ in range(self.engine.num_components)]
        records: list = []
        while not self._pending:  # only before the first batch: draws of starved components
            j = self.sampler.draw()
            if j == 0:
                break
            self._iterate(j, None, None, losses, records)
        self._pending = False
        self._iterate(0, x, y, losses, records)
        while not self.finished:
            j = self.sampler.draw()
            if j == 0:
                self._pending = True
                break
            self._iterate(j, None, None, losses, records)
        return StepResult(step=step, losses=_means(losses), records=records, updated=[bool(l) for l in losses])

    def _iterate(self, j: int, x, y, losses, records) -> None:
        """Component j's iteration: read its input, train (or only forward once finished), write its output."""
        K = self.engine.num_components
        done = self._done(j)
        if done and not any(not self._done(k) for k in range(j + 1, K)):
            self.skipped += 1  # finished, and nobody above needs its output
            return
        if j > 0:
            if not len(self.buffers[j - 1]):
                self.skipped += 1  # starved: nothing was written below yet
                return
            if self.strategy.max_reuse and self.buffers[j - 1].least_reuses() >= self.strategy.max_reuse:
                self.skipped += 1  # every entry read max_reuse times: the reference code's "buffer overuse"
                return
            x, y = self.buffers[j - 1].read()
        worker = self.workers[j]
        if done:
            out = worker.forward_frozen(x)
            self.frozen[j] += 1
        else:
            loss, out = worker.run_alone(x, y, self.updates[j])
            if loss is not None:
                losses[j].append(loss)
            records.extend(worker.records)
            self.updates[j] += 1
        if j < K - 1:
            self.buffers[j].write(out, y)

    # -- reporting ------------------------------------------------------------------------------

    def counters(self) -> dict:
        """Run-level counters for the metrics rows: updates per component, draws, skipped draws."""
        row = {f"updates_{k + 1}": u for k, u in enumerate(self.updates)}
        row.update({f"frozen_forwards_{k + 1}": n for k, n in enumerate(self.frozen)})
        row["draws"] = self.sampler.draws
        row["skipped_draws"] = self.skipped
        return row

    def predicted_time(self, records, *, latency_s: float = 0.0) -> Makespan:
        """K devices, each training its component at its own pace: the buffers decouple them, so the
        window takes as long as its busiest component (see :func:`no_wait_makespan`)."""
        return no_wait_makespan(records, self.engine.num_components)

    # -- checkpoints ------------------------------------------------------------------------------

    def state(self, k: int) -> dict:
        return {
            **_common_state(self.strategy, "local", self.updates[k], self.frozen[k], self.buffers[k - 1] if k > 0 else None),
            # The draw state is the engine's, not the component's; every file holds a copy.
            "draws": {"sampler": self.sampler.state_dict(), "skipped": self.skipped, "pending": self._pending},
        }

    def load_state(self, k: int, state: dict) -> None:
        own = _load_common(state, k, self.strategy, "local", self.engine.step_count)
        self.updates[k], self.frozen[k] = own["updates"], own["frozen_forwards"]
        if "buffer" in state:  # (the format before the input buffer: each file held its output buffer B_k)
            if k < self.engine.num_components - 1:
                self.buffers[k].load_state_dict(state["buffer"])
        elif k > 0:
            self.buffers[k - 1].load_state_dict(state["input_buffer"])
        if "draws" in state:
            draws = state["draws"]
            self.sampler.load_state_dict(draws["sampler"])
            self.skipped, self._pending = int(draws["skipped"]), bool(draws["pending"])
        else:  # written on ranks in round robin: step t drew 1..K once each, and component 1's next draw opened t+1
            t, K = self.engine.step_count, self.engine.num_components
            self._pending = 0 < t and not (self.quota is not None and t >= self.quota)
            self.sampler.draws, self.skipped = t * K + self._pending, 0


def _common_state(strategy: AsyncLocal, runtime: str, updates: int, frozen: int, input_buffer) -> dict:
    """What component k's checkpoint holds on both runtimes: its updates, forward-only iterations and input
    buffer B_{k-1} (None for component 1)."""
    return {"runtime": runtime, "schedule": strategy.schedule, "updates": updates, "frozen_forwards": frozen,
            "input_buffer": None if input_buffer is None else input_buffer.state_dict()}


def _load_common(state: dict, k: int, strategy: AsyncLocal, runtime: str, step_count: int) -> dict:
    """The update and forward-only counts of ``state``, once it is known to load here (see the module docstring)."""
    written = state.get("runtime")
    if written != runtime and not (state.get("schedule") == strategy.schedule == "round_robin"):
        where = {"local": "engine=simulated", "ranks": "engine=distributed"}
        raise ValueError(
            f"the checkpoint of component {k + 1} holds async-local's state of runtime={written!r} with "
            f"schedule={state.get('schedule', 'random')!r}; only round-robin runs agree step for step across runtimes "
            f"(elsewhere the asynchrony is drawn in one process and real on ranks): resume it on runtime={written!r} "
            f"({where.get(written, written)})")
    updates = int(state.get("updates", step_count))  # (absent in rank checkpoints written before it was saved)
    return {"updates": updates, "frozen_forwards": int(state.get("frozen_forwards", 0))}


class ReplayRanks(Policy):
    """Async DGL with one process per component: every rank trains at its own real pace.

    ``total_steps`` (the engine's): the quota Q of updates every rank makes (required: the ranks
    decide on their own when to stop training, so each must know when).
    """

    uses_channel = False  # the worker's input and output are handed over in this process
    has_state = True
    holds = "replay state"

    def check(self) -> None:
        e = self.engine
        if e.total_steps is None:
            raise ValueError("async-local on ranks needs the run's length: pass total_steps (the quota of updates "
                             "every rank makes; the ranks decide on their own when to stop, so each must know when)")

    def setup(self) -> None:
        e = self.engine
        strategy: AsyncLocal = e.strategy
        self.strategy = strategy
        k, K = e.rank, e.num_components
        self.rank, self.num_components, self.device = k, K, e.device
        self.quota = e.total_steps
        self.channel = e.runtime.channel  # training outputs up, reports to rank 0 (evaluation has its own transport)
        self.worker = e.worker(k)
        timeout_s = e.runtime.timeout_s
        self.buffer = ReplayBuffer(strategy.buffer_size) if k > 0 else None
        self.inbox = Mailbox(self.channel, src=k - 1, dst=k, timeout_s=timeout_s) if k > 0 else None
        self.reports = {j: Mailbox(self.channel, src=j, dst=0, timeout_s=timeout_s) for j in range(1, K)} if k == 0 else {}
        self._latest: dict[int, torch.Tensor] = {}  # rank 0: each rank's latest report
        self._rows: dict[int, dict[int, torch.Tensor]] = {j: {} for j in self.reports}  # rank 0: reports by step
        self.max_reuse = int(strategy.max_reuse)
        self.waits_for_reuse = 0  # reads that waited for a new entry because every entry was read max_reuse times
        self.bounded_reads = 0  # the most reads of one entry under the bound
        self.lockstep = strategy.schedule == "round_robin"
        self.sleep_factor = float(strategy.slowdown) - 1.0 if k == strategy.slow_component - 1 else 0.0
        self.updates = 0  # this rank's updates (its steps up to the quota)
        self.frozen = 0  # its forward-only steps past the quota
        # Whether every rank above made its quota (then nobody needs this rank's outputs). In lockstep every
        # rank reads exactly the outputs of its Q steps, so no rank runs past its quota.
        self.above_done = k == K - 1 or self.lockstep
        # (rank k+1's word reaches rank k on a channel of its own; rank 1's shares the reports' channel to rank 0)
        self.down = Mailbox(self.channel, src=k + 1, dst=k, timeout_s=timeout_s) if 0 < k < K - 1 and not self.lockstep else None
        self._said_done = False
        self._start = 0  # the step this engine started at (a resumed run's checkpoint step)
        self._pending_label = None
        self._finished = False
        self._closed = False

    @property
    def step_count(self) -> int:
        return self.engine.step_count

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
        """Take every output rank k-1 sent up to this step (call where all ranks are at the same step, before
        any made its quota: every rank has then sent one output per step)."""
        if self.inbox is not None and not self._finished:
            self._file(self.inbox.wait_for(2 * (self.step_count - self._start)))

    def _read(self) -> tuple[torch.Tensor, torch.Tensor]:
        """An entry of the input buffer to train on (rank k > 0), waiting as the module docstring says."""
        if self.lockstep:  # the output of the same step (the simulated round-robin's interleaving)
            self._file(self.inbox.wait_for(2 * (self.step_count - self._start) + 2))
        else:
            self._file(self.inbox.take())
            # Rank k-1 sends until this rank has made its quota (and, past it, until nobody above needs it),
            # so waiting for its next output always ends.
            while not len(self.buffer) or (self.max_reuse and self.buffer.least_reuses() >= self.max_reuse):
                self.waits_for_reuse += bool(len(self.buffer))
                self._file(self.inbox.wait_for(self.inbox.received + 2 - self.inbox.received % 2))
        inp, labels = self.buffer.read()
        if self.max_reuse:
            self.bounded_reads = max(self.bounded_reads, self.buffer.most_reads)
        return inp, labels

    # -- training ------------------------------------------------------------------------------

    @property
    def wants_more(self) -> bool:
        """Past its quota, this rank runs on (forward only) while some rank above still trains."""
        self._hear_from_above()
        return self.updates >= self.quota and not self.above_done

    def step(self, x: torch.Tensor | None, y: torch.Tensor | None, step: int) -> StepResult:
        """One step of this rank's component: an update up to the quota, a frozen forward past it (while a rank
        above still trains); rank 0 on (x, y), rank k > 0 on an entry of its buffer (x and y are ignored there;
        they may be None)."""
        frozen = self.updates >= self.quota
        if frozen and self.above_done:
            raise ValueError(f"component {self.rank + 1} has made its quota of {self.quota} updates and no component "
                             f"above it still trains; the run is over")
        k, K = self.rank, self.num_components
        if k == 0:
            if x is None or y is None:
                raise ValueError("rank 0 runs the first component: pass the batch inputs x and targets y")
            inp, labels = x, y
        else:
            inp, labels = self._read()
        start = time.perf_counter()
        w = self.worker
        if frozen:
            loss, out, records = None, w.forward_frozen(inp), []
            self.frozen += 1
        else:
            loss, out = w.run_alone(inp, labels, self.updates)
            records = self.engine.runtime.records(w.records)
            self.updates += 1
        if k < K - 1:
            self.channel.send(out, src=k, dst=k + 1, tag=_ACTIVATION)
            self.channel.send(labels, src=k, dst=k + 1, tag=_LABELS)
        if self.sleep_factor > 0:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)  # the update's compute, not its launch
            time.sleep(self.sleep_factor * (time.perf_counter() - start))
        self._hear_from_above()
        losses = Losses.of([loss if j == k else None for j in range(K)])
        return StepResult(step=step, losses=losses, records=records, updated=[j == k and not frozen for j in range(K)])

    def _hear_from_above(self) -> None:
        """Take rank k+1's word that it and every rank above made their quotas; pass it down once this rank has too."""
        if not self.above_done:
            if self.down is not None:
                self.above_done = any(tag == _DONE for tag, _ in self.down.take())
            elif self.rank == 0:
                self._file_reports(1, self.reports[1].take())
        if self.above_done and self.updates >= self.quota and self.rank > 0 and not self._said_done and not self.lockstep:
            self._said_done = True
            self.channel.send(torch.empty(0), src=self.rank, dst=self.rank - 1, tag=_DONE)
            if self.rank > 1:  # nothing else goes down this channel
                self.channel.send(torch.empty(0), src=self.rank, dst=self.rank - 1, tag=END_TAG)

    def counters(self) -> dict:
        """This rank's updates and forward-only steps (rank 0 writes the rows: its own)."""
        return {f"updates_{self.rank + 1}": self.updates, f"frozen_forwards_{self.rank + 1}": self.frozen}

    def _end_channel_up(self) -> None:
        """Take every output rank k-1 sent (up to its END, which comes after its last output), then end ours."""
        if self.inbox is not None:
            self._file(self.inbox.join())
        if self.rank < self.num_components - 1:
            self.channel.send(torch.empty(0), src=self.rank, dst=self.rank + 1, tag=END_TAG)
        self._finished = True

    def finish(self, step: int) -> int:
        """The end of the training (every rank made its quota): take every output sent to this rank, end the
        channel up, and agree on the run's step count, rank 0's (the fresh batches read)."""
        self._end_channel_up()
        mine = torch.tensor([float(step if self.rank == 0 else 0)], dtype=torch.float64)
        return int(self.engine.runtime.all_reduce_sum(mine).item())

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

    def logs(self, step: int) -> bool:
        """Log rows hold the steps up to the quota: past it a rank only forwards (no loss to report)."""
        return step <= self.quota

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
        for tag, msg in messages:
            if tag == _DONE:  # (rank 1's word that every rank above rank 0 made its quota)
                self.above_done = True
                continue
            table = msg[:-1].view(self.num_components, -1)
            self._latest[j] = table
            if int(msg[-1]) >= 0:
                self._rows[j][int(msg[-1])] = table

    # -- sync points -----------------------------------------------------------------------------

    def before_sync(self) -> None:
        """Evaluation and checkpoints: take every output rank k-1 sent up to this step first."""
        self._settle()

    def state(self, k: int) -> dict:
        return {**_common_state(self.strategy, "ranks", self.updates, self.frozen, self.buffer),
                "bounded_reads": self.bounded_reads, "waits_for_reuse": self.waits_for_reuse}

    def load_state(self, k: int, state: dict) -> None:
        own = _load_common(state, k, self.strategy, "ranks", self.engine.step_count)
        if own["updates"] != min(self.engine.step_count, self.quota):
            raise ValueError(f"the checkpoint of component {k + 1} holds {own['updates']} updates at step "
                             f"{self.engine.step_count}; on ranks every component makes one update per step: resume it "
                             f"on the runtime that wrote it")
        self.updates, self.frozen = own["updates"], own["frozen_forwards"]
        self._start = self.engine.step_count
        if self.buffer is not None:
            self.buffer.load_state_dict(state["input_buffer"])
        self.bounded_reads = int(state.get("bounded_reads", 0))
        self.waits_for_reuse = int(state.get("waits_for_reuse", 0))

    def close(self, *, wait: bool = True) -> None:
        """End this rank's channels (every output and report received)."""
        if wait and not self._closed:
            self._closed = True
            k = self.rank
            if not self._finished:  # (stopped before the end of the training: a stop_after, a test)
                self._end_channel_up()
            if k > 1 and not self.lockstep and not self._said_done:
                self.channel.send(torch.empty(0), src=k, dst=k - 1, tag=END_TAG)
            if k > 0:
                self.channel.send(torch.empty(0), src=k, dst=0, tag=END_TAG)
            if self.down is not None:
                self.down.join()
            for box in self.reports.values():
                box.join()
            self.channel.flush()


def no_wait_makespan(records, num_components: int) -> Makespan:
    """The time K devices need when no component ever waits for another: the busiest one's time."""
    busy = [0.0] * num_components
    for r in records:
        busy[r.component] += r.duration_s
    span = max(busy, default=0.0)
    return Makespan(makespan_s=span, busy_s=tuple(busy), idle_s=tuple(span - b for b in busy), records=())


def _means(losses: list[list[torch.Tensor]]) -> list[float]:
    """Each component's mean loss over its updates in the step (NaN where it made none); one device sync."""
    flat = [l.float().reshape(()) for ls in losses for l in ls]
    if not flat:
        return [math.nan] * len(losses)
    values = iter(torch.stack([l.to(flat[0].device) for l in flat]).tolist())
    out = []
    for ls in losses:
        got = [next(values) for _ in ls]
        out.append(sum(got) / len(got) if got else math.nan)
    return out


register_strategy(StrategySpec(
    "async-local", AsyncLocal, {"local": ReplayDrawn, "ranks": ReplayRanks},
    lambda m, replay=None, seed=0, **_: _async_local(replay, seed), aliases=("async-dgl", "async"), section="replay",
    summary="asynchronous DGL with replay buffers (section replay)", example=lambda: AsyncLocal(schedule="round_robin")))


def _async_local(replay, seed: int) -> AsyncLocal:
    """From the config's replay section (any object with its fields and a ``strategy(seed)``), or the defaults."""
    return AsyncLocal(seed=seed) if replay is None else replay.strategy(seed)
