"""Predicted parallel time: the paper's closed-form model and a critical-path simulation.

Two answers to "how long would K devices need for b steps?":

- the closed forms of Gomez et al. 2022 (Fig. 2), in units where one component's
  forward and one component's backward each take 1: :func:`paper_time_units`;
- a discrete-event (list-schedule) simulation of the actual schedules: every component
  runs its own actions in order, an action starts when its device is free and, for a
  receive, when the matching message has arrived. There is no barrier between steps, so
  step s+1 starts on a device as soon as that device finished step s: local learning
  pipelines across steps exactly as it would on K devices. :func:`critical_path`.

Durations come either from a cost model applied to the schedules (:class:`ComputeCosts`,
the accounting that :mod:`interlock.timemodel.emulate` sleeps by, or any ``action -> seconds``
callable) or from measured :class:`~interlock.core.worker.ActionRecord` lists.
"""

from __future__ import annotations

import logging
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, Union

from ..core import schedule as S
from ..core.strategies import GradientPlan
from ..core.worker import ActionRecord
from ..checks import count, number

__all__ = [
    "paper_time_units",
    "end_to_end_time_units",
    "local_time_units",
    "ComputeCosts",
    "Makespan",
    "critical_path",
    "work_from_costs",
    "work_from_records",
    "predict",
    "step_bound",
]

logger = logging.getLogger(__name__)

# One component's work: its actions in execution order (all steps, one after the other),
# each with the seconds it occupies the component's device.
Work = list[list[tuple[S.Action, float]]]


# -- the paper's closed forms -------------------------------------------------------------


def paper_time_units(*, components: int, steps: int, n: int) -> int:
    """Gomez et al. 2022, Fig. 2: n-wise interlocking takes 2bn + a - n units.

    a = ``components`` (accelerators), b = ``steps``; one component's forward is 1 unit
    and its backward 1 unit. n = 1 is local learning (2b + a - 1), n = a end-to-end (2ab).
    """
    a, b = _positive_int("components", components), _positive_int("steps", steps)
    n = _positive_int("n", n)
    if n > a:
        raise ValueError(f"n={n} exceeds the {a} components; use n <= {a}")
    return 2 * b * n + a - n


def end_to_end_time_units(*, components: int, steps: int) -> int:
    """Backprop across ``components`` accelerators: 2ab units (one device busy at a time)."""
    return paper_time_units(components=components, steps=steps, n=components)


def local_time_units(*, components: int, steps: int) -> int:
    """Local (1-wise) learning: 2b + a - 1 units (a pipeline that fills once)."""
    return paper_time_units(components=components, steps=steps, n=1)


def _positive_int(name: str, value) -> int:
    count(value, f"{name}={value!r}: must be an integer >= 1")
    return value


# -- cost model ---------------------------------------------------------------------------


def _seconds(name: str, value) -> float:
    number(value, f"{name}={value!r}: must be a finite number of seconds >= 0", low=0)
    return float(value)


@dataclass(frozen=True)
class ComputeCosts:
    """Seconds per action, with the backward-pass accounting of emulated blocks.

    A backward pass through a block is charged by what it computes:

    - ``InputGrad`` (input gradient only): ``input_grad_s``. A batched InputGrad of several
      streams is one call and is charged once (an emulated block cannot see the batch).
    - ``FullGrad`` (input and weight gradients in one pass): ``input_grad_s + weight_grad_s``.
    - ``WeightGrad`` (weight gradient only): ``weight_grad_s`` when it reuses the input passes
      (``reuse``: it starts from the gradients those passes kept where the parameters enter,
      :mod:`interlock.core.backward`), else ``input_grad_s + weight_grad_s`` (a backward pass from the
      block's output: it must still propagate through the block's internal layers to reach
      their weights). Under n-wise "furthest" a component forwards its own loss's stream but
      trains on the one from above, so its weight pass is a full one; with the whole backward
      in the input part (split=1) n-wise then takes the paper's 2bn + a - n units exactly
      (tests/test_clock.py).

    With ``forward_s=1`` and ``input_grad_s + weight_grad_s = 1`` every component's plain
    backward (FullGrad, a split InputGrad + WeightGrad, or a lone WeightGrad) is 1 unit: the
    paper's accounting, under which end-to-end and local schedules reproduce 2ab and 2b + a - 1
    exactly. ``head_s`` (HeadLoss), ``message_s`` (the local cost of each send and receive; the
    wait for a message is simulated, its flight time is ``latency_s`` of :func:`critical_path`)
    and ``update_s`` default to 0. Costs are per action: price a schedule of m micro-batches
    with :meth:`per_microbatch`.
    """

    forward_s: float
    input_grad_s: float
    weight_grad_s: float
    head_s: float = 0.0
    message_s: float = 0.0
    update_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("forward_s", "input_grad_s", "weight_grad_s", "head_s", "message_s", "update_s"):
            object.__setattr__(self, name, _seconds(name, getattr(self, name)))

    @classmethod
    def units(cls, *, split: float = 0.5) -> "ComputeCosts":
        """The paper's units: forward 1, backward 1, of which ``split`` is the input-gradient part."""
        if not 0.0 <= split <= 1.0:
            raise ValueError(f"split={split!r}: the input-gradient share of a backward pass must be in [0, 1]")
        return cls(forward_s=1.0, input_grad_s=split, weight_grad_s=1.0 - split)

    def per_microbatch(self, microbatches: int) -> "ComputeCosts":
        """The costs of one of ``microbatches`` equal micro-batches: compute (forward, backward,
        head) divided by m; a message's local cost and the update stay as they are."""
        m = S.check_microbatches(microbatches)
        return ComputeCosts(
            forward_s=self.forward_s / m, input_grad_s=self.input_grad_s / m, weight_grad_s=self.weight_grad_s / m,
            head_s=self.head_s / m, message_s=self.message_s, update_s=self.update_s,
        )

    def durations(self, schedule: Sequence[S.Action]) -> tuple[float, ...]:
        """Seconds of each action of one step's ``schedule`` (one component), by its ``category``."""
        return tuple(self.charge(action) for action in schedule)

    def charge(self, action: S.Action) -> float:
        """Seconds of one action, by its cost category (:data:`interlock.core.schedule.CATEGORIES`)."""
        category = action.category
        if category == "weight gradient":
            # A weight pass that cannot start from kept gradients walks the block's internal layers too.
            return self.weight_grad_s + (0.0 if action.reuse else self.input_grad_s)
        charges = {
            "forward": self.forward_s,
            "head": self.head_s,
            "input gradient": self.input_grad_s,
            "full backward": self.input_grad_s + self.weight_grad_s,
            "communication": self.message_s,
            "update": self.update_s,
        }
        if category not in charges:
            raise ValueError(
                f"ComputeCosts has no charge for action {action!r} (category {category!r}); give the action one of "
                f"interlock.core.schedule.CATEGORIES, or extend ComputeCosts.charge"
            )
        return charges[category]


# Anything with .durations(schedule) (ComputeCosts), or a context-free action -> seconds.
class _Durations(Protocol):
    def durations(self, schedule: Sequence[S.Action]) -> Sequence[float]: ...


Costs = Union[_Durations, Callable[[S.Action], float]]


# -- the critical-path simulation --------------------------------------------------------


@dataclass(frozen=True)
class Makespan:
    """A simulated parallel run: one device per component.

    ``makespan_s``: when the last action ends (the run starts at 0). ``busy_s[k]``: time
    component k+1 spent running actions; ``idle_s[k] = makespan_s - busy_s[k]`` (waiting
    for messages, and done early). ``records``: every action's simulated start and end, in
    the order they were placed, ready for :mod:`interlock.measure.trace`.
    """

    makespan_s: float
    busy_s: tuple[float, ...]
    idle_s: tuple[float, ...]
    records: tuple[ActionRecord, ...]

    @property
    def num_components(self) -> int:
        return len(self.busy_s)


def critical_path(work: Sequence[Sequence[tuple[S.Action, float]]], *, latency_s: float = 0.0,
                  store_and_forward: bool = False) -> Makespan:
    """Simulate ``work`` on one device per component and return when it finishes.

    ``work[k]``: component k's (action, seconds) pairs in execution order, all steps one
    after the other (see :func:`work_from_costs`, :func:`work_from_records`). A receive
    starts when its device is free and the matching send has ended plus ``latency_s``;
    messages match per channel in FIFO order and must carry the tag the receive expects.
    ``store_and_forward``: each channel (one per ordered pair of components) holds one message
    at a time for ``latency_s``, so a message also waits for the one before it on its channel
    (the slow link of :mod:`interlock.runtime.links`); otherwise any number are in flight at once.
    Every other action starts when its device is free. Raises ValueError if the work
    deadlocks or a message goes to a component that does not exist.
    """
    latency_s = _seconds("latency_s", latency_s)
    K = len(work)
    if K < 1:
        raise ValueError("critical_path needs the work of at least one component")
    for k, actions in enumerate(work):
        for i, (action, d) in enumerate(actions):
            if not isinstance(action, S.Action):
                raise ValueError(f"work[{k}][{i}] holds {action!r}, not an interlock.core.schedule action")
            _seconds(f"work[{k}][{i}] duration", d)
            for other, _ in filter(None, (action.incoming(k), action.outgoing(k))):
                if not 0 <= other < K:
                    raise ValueError(
                        f"component {k + 1}'s {action.kind} talks to component {other + 1}, "
                        f"but the work covers components 1..{K}"
                    )

    channels: dict[tuple[int, int], deque[tuple[tuple, float]]] = defaultdict(deque)  # (src, dst) -> (tag, arrival)
    link_free: dict[tuple[int, int], float] = defaultdict(float)  # (src, dst) -> when its link is free (store and forward)
    pcs, free, busy = [0] * K, [0.0] * K, [0.0] * K
    placed: list[ActionRecord] = []
    remaining = sum(len(a) for a in work)
    # The start times are the earliest-start solution of a DAG (each device's order is
    # fixed), so the order in which devices are advanced here does not change them.
    while remaining:
        progressed = False
        for k in range(K):
            actions = work[k]
            while pcs[k] < len(actions):
                action, d = actions[pcs[k]]
                start = free[k]
                need = action.incoming(k)
                if need is not None:
                    src, tag = need
                    queue = channels[(src, k)]
                    if not queue:
                        break  # the message is not sent yet; advance other devices first
                    got, arrival = queue.popleft()
                    if got != tag:
                        raise ValueError(
                            f"component {k + 1}'s {action.kind} expects {tag} from component {src + 1}, "
                            f"but the next message on that channel is {got}: the schedules disagree"
                        )
                    start = max(start, arrival)
                end = start + float(d)
                out = action.outgoing(k)
                if out is not None:
                    dst, tag = out
                    arrival = (max(end, link_free[(k, dst)]) if store_and_forward else end) + latency_s
                    link_free[(k, dst)] = arrival
                    channels[(k, dst)].append((tag, arrival))
                placed.append(ActionRecord(k, action, start, end))
                free[k] = end
                busy[k] += float(d)
                pcs[k] += 1
                remaining -= 1
                progressed = True
        if not progressed:
            waiting = {k + 1: work[k][pcs[k]][0] for k in range(K) if pcs[k] < len(work[k])}
            raise ValueError(f"the work deadlocks: components wait for messages never sent: {waiting}")

    unreceived = {ch: len(q) for ch, q in channels.items() if q}
    if unreceived:
        # Not fatal (a truncated run), but a sign the work does not match the schedules.
        logger.warning("critical_path: messages sent but never received, per (src, dst) channel (0-based): %s", unreceived)
    makespan = max(free)
    return Makespan(
        makespan_s=makespan,
        busy_s=tuple(busy),
        idle_s=tuple(makespan - b for b in busy),
        records=tuple(placed),
    )


# -- building the work -------------------------------------------------------------------


def work_from_costs(schedules: Sequence[Sequence[S.Action]], costs: Costs, *, steps: int) -> Work:
    """``steps`` repetitions of each component's one-step schedule, priced by ``costs``.

    ``costs``: a :class:`ComputeCosts` (or anything with ``durations(schedule)``), or a
    callable ``action -> seconds`` for context-free prices.
    """
    steps = _positive_int("steps", steps)
    work: Work = []
    for k, schedule in enumerate(schedules):
        schedule = tuple(schedule)
        if hasattr(costs, "durations"):
            durations = tuple(costs.durations(schedule))
        elif callable(costs):
            durations = tuple(costs(a) for a in schedule)
        else:
            raise ValueError(f"costs must be a ComputeCosts or a callable action -> seconds, got {costs!r}")
        if len(durations) != len(schedule):
            raise ValueError(f"costs gave {len(durations)} durations for component {k + 1}'s {len(schedule)} actions")
        one_step = [(a, _seconds(f"cost of {a!r}", d)) for a, d in zip(schedule, durations)]
        work.append(one_step * steps)
    return work


def work_from_records(
    records: Sequence[ActionRecord], *, mode: Literal["replay", "mean"] = "replay", steps: int | None = None
) -> Work:
    """The work measured in ``records`` (one or more whole steps of every component).

    ``mode="replay"``: every measured step with its own durations, in order (``steps``
    must be None). ``mode="mean"``: each action's mean duration over the measured steps,
    repeated ``steps`` times (default: as many as were measured).

    A measured receive lasts as long as it waited for its sender, which is exactly what
    the simulation decides anew, so receives are charged 0 (model the flight time with
    ``latency_s``). Sends keep their measured durations.
    """
    if mode not in ("replay", "mean"):
        raise ValueError(f"mode={mode!r}: use 'replay' (measured steps in order) or 'mean' (per-action means)")
    if mode == "replay" and steps is not None:
        raise ValueError("replay reuses the measured steps as they are; pass steps only with mode='mean'")
    if not records:
        raise ValueError("no records: run some steps with record=True and pass their .records")
    by_component: dict[int, list[ActionRecord]] = defaultdict(list)
    for r in records:
        by_component[r.component].append(r)
    K = max(by_component) + 1
    missing = sorted(set(range(K)) - set(by_component))
    if missing:
        raise ValueError(f"the records lack components {[k + 1 for k in missing]}; pass every component's records")

    work: Work = []
    for k in range(K):
        measured = _split_steps(k, sorted(by_component[k], key=lambda r: r.start_s))
        priced = [[(r.action, 0.0 if r.action.comm == "recv" else max(r.duration_s, 0.0)) for r in step] for step in measured]
        if mode == "replay":
            work.append([pair for step in priced for pair in step])
        else:
            count = len(priced) if steps is None else _positive_int("steps", steps)
            mean = [(a, sum(step[i][1] for step in priced) / len(priced)) for i, (a, _) in enumerate(priced[0])]
            work.append(mean * count)
    return work


def _split_steps(k: int, records: list[ActionRecord]) -> list[list[ActionRecord]]:
    # Every schedule ends with its Update, so Updates mark the step boundaries.
    steps, current = [], []
    for r in records:
        current.append(r)
        if r.action.category == "update":
            steps.append(current)
            current = []
    if current or not steps:
        raise ValueError(
            f"component {k + 1}'s records do not end with an Update: pass whole steps "
            f"(every record of each step, e.g. all of StepResult.records)"
        )
    first = [r.action for r in steps[0]]
    for s, step in enumerate(steps[1:], start=2):
        if [r.action for r in step] != first:
            raise ValueError(f"component {k + 1} ran different actions in step {s} than in step 1; the records must repeat one schedule")
    return steps


def predict(
    schedules: Sequence[Sequence[S.Action]], costs: Costs, *, steps: int, latency_s: float = 0.0,
    store_and_forward: bool = False,
) -> Makespan:
    """Critical-path makespan of ``steps`` steps of ``schedules`` priced by ``costs`` (links: :func:`critical_path`)."""
    return critical_path(work_from_costs(schedules, costs, steps=steps), latency_s=latency_s,
                         store_and_forward=store_and_forward)


# -- a lower bound on any schedule ---------------------------------------------------------


def step_bound(plan: GradientPlan, costs: "ComputeCosts", *, latency_s: float = 0.0) -> float:
    """Seconds per step that no schedule of ``plan`` can beat in the long run, on one device per component.

    Synchronous training fixes a cycle per component k and loss j that trains it: the forward
    of step t+1 on k needs theta_k updated with dL_j/dtheta_k of step t, which needs the
    forwards of components k..j, head j, the input gradients of components j..k+1, and then a
    backward through block k: its internal layers (``input_grad_s``) and its weights
    (``weight_grad_s``), whether the stream goes on below (input pass, then the weight pass
    reusing it) or stops at k (a weight-only pass from the block's output, which still walks the
    internal layers). Each of the 2(j-k) boundary crossings costs a send, a receive
    (``message_s`` each) and ``latency_s``. Steps overlap however a schedule likes, so the
    longest of these cycles bounds the time per step from below; so does each component's
    least work per step (forward, head, one backward through its block if it trains on or
    forwards any stream, and its sends and receives).

    With the accounting of :class:`ComputeCosts`, so with emulated blocks, the default schedules
    (:func:`interlock.core.schedule.build_schedule`, one micro-batch) reach this bound for every
    n-wise plan (tests/test_clock.py). It also shows what no schedule can change, e.g. that
    2-wise takes at least half of end-to-end's step on 4 components whatever the costs
    (docs/results.md).
    """
    if not isinstance(plan, GradientPlan):
        raise ValueError(f"plan={plan!r}: give a GradientPlan (strategy.plan(K))")
    if not isinstance(costs, ComputeCosts):
        raise ValueError(f"costs={costs!r}: step_bound needs a ComputeCosts (the bound uses its backward accounting)")
    latency_s = _seconds("latency_s", latency_s)
    c, K = costs, plan.num_components
    crossing = 2 * c.message_s + latency_s
    bound = 0.0
    for k in range(K):
        for j in plan.trains[k]:
            hops = j - k  # forwards and input passes on k..j, the weight part on k, each crossing twice
            cycle = ((hops + 1) * (c.forward_s + c.input_grad_s) + c.head_s + c.weight_grad_s
                     + 2 * hops * crossing + c.update_s)
            bound = max(bound, cycle)
        backward = c.input_grad_s + c.weight_grad_s if plan.streams_at(k) else 0.0
        head = c.head_s if plan.needs_head(k) else 0.0
        messages = (k > 0) + (k < K - 1) + len(plan.continuing(k)) + sum(j > k for j in plan.streams_at(k))
        bound = max(bound, c.forward_s + head + backward + messages * c.message_s + c.update_s)
    return bound
