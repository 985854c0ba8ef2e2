"""The clock for torch.distributed.pipelining's schedules: their per-rank orders and critical path.

So that the schedule benchmark can set a prediction beside every measured makespan, not only
interlock's strategies. Each rank runs its stage's operations in its schedule's order, one at a
time: F (forward of a micro-batch), B (its whole backward), I and W (the zero-bubble split of B
into the input-gradient and the weight-gradient pass). Dependencies: F of micro-batch i on rank r
needs F of i on rank r-1 (plus ``latency_s``); B or I of i on rank r needs B or I of i on rank r+1
(plus ``latency_s``; with ``store_and_forward`` a message also queues behind the one before it on
its link) and F of i on r; W of i needs I of i on the same rank. A step ends with
every rank's optimizer step, so steps do not overlap: ``steps`` steps take ``steps`` times one.

Orders, as PyTorch runs them (torch 2.13): GPipe, every forward then every backward, in
micro-batch order; 1F1B, ``min(m, K - r)`` forwards on rank r, then one backward and one forward
in turn, then the remaining backwards; ``zb1p``, the order PyTorch's
``ScheduleInterleavedZeroBubble`` computes for one stage per rank (read from its private
``_calculate_single_rank_operations`` through ``interlock._torch_compat``). Sends are taken as free and never blocking (PyTorch's
schedules wait for some of them), so measured times may run a little over the prediction.
"""

from __future__ import annotations

from collections.abc import Sequence

from .._torch_compat import zero_bubble_rank_actions
from .clock import ComputeCosts

__all__ = ["pipeline_order", "predict_pipeline", "stage_costs_from_records"]


def pipeline_order(schedule: str, num_components: int, microbatches: int) -> list[list[tuple[str, int]]]:
    """Per rank, the operations (kind in "F", "B", "I", "W"; micro-batch index) of one step."""
    K, m = num_components, microbatches
    if schedule == "gpipe":
        return [[("F", i) for i in range(m)] + [("B", i) for i in range(m)] for _ in range(K)]
    if schedule == "1f1b":
        out = []
        for r in range(K):
            warm = min(m, K - r)
            ops = [("F", i) for i in range(warm)]
            f, b = warm, 0
            while b < m:
                ops.append(("B", b))
                b += 1
                if f < m:
                    ops.append(("F", f))
                    f += 1
            out.append(ops)
        return out
    if schedule == "zb1p":
        kinds = {"FORWARD": "F", "BACKWARD_INPUT": "I", "BACKWARD_WEIGHT": "W", "FULL_BACKWARD": "B"}
        return [[(kinds[a.computation_type.name], a.microbatch_index)
                 for a in zero_bubble_rank_actions(K, m, r) if a is not None] for r in range(K)]
    raise ValueError(f"schedule={schedule!r}: the clock knows gpipe, 1f1b and zb1p")


def predict_pipeline(schedule: str, costs: ComputeCosts | Sequence[ComputeCosts], *, num_components: int,
                     microbatches: int, steps: int, latency_s: float = 0.0, store_and_forward: bool = False) -> float:
    """Seconds for ``steps`` steps of ``schedule``; ``costs`` are one whole batch's (divided by m here),
    the same on every rank or one per rank.

    A message (an activation up, a gradient down) arrives ``latency_s`` after the operation that
    made it ends; ``store_and_forward``: each link (one per ordered pair of ranks) holds one message
    at a time, so a message also waits for the one before it (as in :func:`interlock.timemodel.clock.critical_path`).
    """
    K, m = num_components, microbatches
    per_rank = [costs] * K if isinstance(costs, ComputeCosts) else list(costs)
    if len(per_rank) != K or not all(isinstance(c, ComputeCosts) for c in per_rank):
        raise ValueError(f"costs: give one ComputeCosts, or one per rank ({K}); got {costs!r}")
    tables = []
    for c in per_rank:
        mb = c.per_microbatch(m)
        tables.append({"F": mb.forward_s, "I": mb.input_grad_s, "W": mb.weight_grad_s, "B": mb.input_grad_s + mb.weight_grad_s})
    orders = pipeline_order(schedule, K, m)
    done: dict[tuple[str, int, int], float] = {}  # (kind, micro-batch, rank) -> end time
    arrived: dict[tuple[str, int, int], float] = {}  # ("up" | "down", micro-batch, receiving rank) -> arrival
    link_free: dict[tuple[int, int], float] = {}  # (sending rank, receiving rank) -> when its link is free

    def send(direction: str, i: int, src: int, dst: int, at: float) -> None:
        start = max(at, link_free.get((src, dst), 0.0)) if store_and_forward else at
        arrived[(direction, i, dst)] = link_free[(src, dst)] = start + latency_s

    free = [0.0] * K
    pos = [0] * K
    remaining = sum(len(o) for o in orders)
    while remaining:
        progressed = False
        for r in range(K):
            while pos[r] < len(orders[r]):
                kind, i = orders[r][pos[r]]
                needs = []  # ready times this operation waits for
                if kind == "F" and r > 0:
                    needs.append(arrived.get(("up", i, r)))
                if kind in ("B", "I"):
                    needs.append(done.get(("F", i, r)))
                    if r < K - 1:
                        needs.append(arrived.get(("down", i, r)))
                if kind == "W":
                    needs.append(done.get(("I", i, r)))
                if any(t is None for t in needs):
                    break
                end = max([free[r], *needs]) + tables[r][kind]
                free[r] = done[(kind, i, r)] = end
                if kind == "F" and r < K - 1:
                    send("up", i, r, r + 1, end)
                if kind in ("B", "I") and r > 0:
                    send("down", i, r, r - 1, end)
                pos[r] += 1
                remaining -= 1
                progressed = True
        if not progressed:
            raise RuntimeError(f"the {schedule} order deadlocks in the clock's model (K={K}, m={m})")
    return steps * (max(free) + max(c.update_s for c in per_rank))


def stage_costs_from_records(records, *, num_components: int, microbatches: int, steps: int) -> list[ComputeCosts]:
    """Per stage, the costs a pipeline schedule would pay, from an end-to-end run's measured actions.

    ``records``: ``StepResult.records`` (resolved to seconds) of ``steps`` steps of interlock's
    end-to-end strategy with a split backward (``split_backward=True``) and ``microbatches`` m.
    Each component's forward, input-gradient and weight-gradient times per micro-batch, the final
    head's loss counted in the last stage's forward (a pipeline's last stage computes the loss);
    auxiliary heads are left out (a pipeline schedule trains none). Returned as whole-batch costs
    (m times the per-micro-batch times), as :func:`predict_pipeline` takes them.
    """
    K = num_components  # whole-batch costs: the sum over micro-batches needs no m
    # The ComputeCosts field each action category is charged to; a pipeline schedule trains no auxiliary head.
    field_of = {"forward": "forward_s", "input gradient": "input_grad_s", "weight gradient": "weight_grad_s"}
    total: dict[tuple[int, str], float] = {}
    for r in records:
        cat = r.action.category
        if cat == "head":
            if r.component != K - 1:
                continue
            cat = "forward"
        if cat in field_of:
            key = (r.component, field_of[cat])
            total[key] = total.get(key, 0.0) + (r.end_s - r.start_s)
    if not any(k == K - 1 for k, _ in total):
        raise ValueError(f"the records hold no action of component {K}; pass the records of a {K}-component run")
    # Whole-batch cost = m x (per micro-batch) = (sum over steps and micro-batches) / steps.
    return [ComputeCosts(**{name: total.get((k, name), 0.0) / steps for name in field_of.values()}) for k in range(K)]
