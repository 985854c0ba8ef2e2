"""The synchronous policy: one pass of a gradient plan over every component per step.

End-to-end, local (DGL), n-wise interlocking (furthest or sum), local-double: each component's
worker runs its schedule (:func:`interlock.core.schedule.build_schedule`), micro-batched or
not, and the runtime moves the messages. On the local runtime the workers are stepped
cooperatively; on ranks each rank runs its own schedule over blocking receives, sends never
wait for the receiver and no step ends in a barrier (under ``Local()`` component 1 runs ahead
of component 2). Same schedules, same arithmetic: the two runtimes give the same parameters bit
for bit (one thread per process).
"""

from __future__ import annotations

from ...core.strategies import EndToEnd, Interlocking, Local, LocalDouble
from ..options import Losses, StepResult
from ..specs import StrategySpec, register_strategy
from .base import Policy

__all__ = ["PlanPolicy"]


class PlanPolicy(Policy):
    """A step is every local worker's schedule, run to its end by the runtime."""

    one_gradient_per_step = True

    sums_ties = True
    static_shapes = True

    def step(self, x, y, step: int) -> StepResult:
        e = self.engine
        runtime = e.runtime
        if runtime.name != "local":
            self.require_batch(x, y)
        follows = e.total_steps is not None and step + 1 < e.total_steps
        for k, w in e._workers.items():
            # Another step follows: this one may post that one's first receives (interlock.core.prepost).
            w.next_step_follows = follows
            w.begin_step(x if k == 0 else None, y, step)
        runtime.run(e._workers)
        losses = {k: w.end_step() for k, w in e._workers.items()}
        records = runtime.records([r for w in e.workers for r in w.records])
        # The losses held here, NaN elsewhere, left on the device until read (no host sync per step).
        return StepResult(step=step, losses=Losses.of([losses.get(j) for j in range(e.num_components)]), records=records)

    def predicted_time(self, records, *, latency_s: float = 0.0):
        """The makespan K devices would need for the steps in ``records``: their measured action durations
        replayed on the schedules' dependencies (critical path, no barrier between steps)."""
        if self.engine.runtime.name != "local":
            return None  # (each rank measured its own actions; the training program asks the local runtime only)
        from ...timemodel.clock import critical_path, work_from_records

        return critical_path(work_from_records(records, mode="replay"), latency_s=latency_s)


def _interlocking(m, **_):
    return Interlocking(int(m.group(1)), "sum" if m.group(2) == "-sum" else "furthest")


register_strategy(StrategySpec(
    "end-to-end", EndToEnd, PlanPolicy, lambda m, **_: EndToEnd(), aliases=("e2e", "endtoend", "backprop"),
    microbatches=True, summary="ordinary backprop; auxiliary heads only watch", example=EndToEnd))
register_strategy(StrategySpec(
    "local", Local, PlanPolicy, lambda m, **_: Local(), aliases=("1-wise", "greedy", "dgl"),
    microbatches=True, summary="each component learns from its own head (DGL, 1-wise)", example=Local))
register_strategy(StrategySpec(
    "<n>-wise", Interlocking, PlanPolicy, _interlocking, pattern=r"(\d+)-wise(-sum|-furthest)?",
    microbatches=True, summary="interlocking backprop: a loss's gradient crosses at most n-1 boundaries (-sum: every loss)", example=lambda: Interlocking(2)))
register_strategy(StrategySpec(
    "local-double", LocalDouble, PlanPolicy, lambda m, **_: LocalDouble(), aliases=("1-wise-double", "double"),
    runtimes=("local",), microbatches=True, summary="local learning on components of two blocks (the paper's Table 1 row)", example=LocalDouble))
