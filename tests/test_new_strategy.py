"""The worked example of docs/design.md, "Adding a strategy": a new strategy in one file, and its test.

``Alternating`` trains with local learning on even steps and end to end on odd ones. It needs
a gradient plan (which loss trains which block: local learning's, for the checks that every
head it uses exists), a policy (what a step is: the workers run one of two sets of schedules),
and one registration. Nothing else in interlock changes: the engine, the config's parser, the
CLI and both runtimes find it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import interlock as il
import pair_helpers as P
from interlock.core.schedule import build_schedule
from interlock.core.strategies import EndToEnd, GradientPlan, Local, Strategy
from interlock.engine.options import Losses, StepResult
from interlock.engine.policies.base import Policy
from interlock.engine.specs import STRATEGIES, StrategySpec, register_strategy
from interlock.runtime.launch import run_local
from interlock.training.config import load_config


# -- the strategy's own file (here, inside its test) -----------------------------------------------

@dataclass(frozen=True)
class Alternating(Strategy):
    """Local learning on even steps, end to end on odd ones."""

    def plan(self, num_components: int) -> GradientPlan:
        return Local().plan(num_components)  # every head trains (even steps)

    @property
    def name(self) -> str:
        return "alternating"


class AlternatingPolicy(Policy):
    sums_ties = True

    def setup(self) -> None:
        e = self.engine
        e2e = EndToEnd().plan(e.num_components)
        self.schedules = {k: (w.schedule, build_schedule(e2e, k, has_head=w.head is not None,
                                                         split_backward=e.options.split_backward))
                          for k, w in e._workers.items()}

    def step(self, x, y, step: int) -> StepResult:
        e = self.engine
        for k, w in e._workers.items():
            w.schedule = self.schedules[k][step % 2]
            w.begin_step(x if k == 0 else None, y, step)
        e.runtime.run(e._workers)
        losses = {k: w.end_step() for k, w in e._workers.items()}
        return StepResult(step=step, losses=Losses.of([losses.get(j) for j in range(e.num_components)]),
                          records=e.runtime.records([r for w in e.workers for r in w.records]))


if "alternating" not in STRATEGIES:  # (pytest may import this module twice)
    register_strategy(StrategySpec("alternating", Alternating, AlternatingPolicy, lambda m, **_: Alternating(),
                                   runtimes=("local", "ranks"), example=Alternating,
                                   summary="local learning on even steps, end to end on odd ones"))


# -- its test ----------------------------------------------------------------------------------------

def test_alternating_is_local_then_end_to_end_step_by_step():
    data = P.batches(P.K, seed=1)[:2]
    got = P.make("alternating", "local", net_seed=0)
    for x, y in data:
        got.step(x, y)
    # The reference: one Local() step, then one EndToEnd() step, on the same weights and optimizers.
    ref_local = P.make("local", "local", net_seed=0)
    ref_local.step(*data[0])
    ref_e2e = P.make("end-to-end", "local", net_seed=0)
    for k in range(ref_e2e.num_components):
        ref_e2e.load_component_state(k, ref_local.component_state(k))
    ref_e2e.step(*data[1])
    want, have = P.held_state(ref_e2e), P.held_state(got)
    assert all(torch.equal(want[k], have[k]) for k in want)
    assert any(not torch.equal(want[k], P.held_state(ref_local)[k]) for k in want)  # the second step moved them


def test_alternating_is_found_by_the_config_and_runs_on_both_runtimes():
    assert load_config(None, ["steps=2", "strategy=alternating", "engine=distributed"]).strategy_obj == Alternating()
    local = P.train("alternating", "local", resume=False)
    assert P.same_losses(P.train("alternating", "local", resume=True)["losses"], local["losses"])
    # The same test the registry generates for every ranks pair (this module registered it after collection).
    ranks = run_local(_rank_main, P.K, timeout_s=120)
    for r, got in enumerate(ranks):
        for key, t in got.items():
            assert torch.equal(t, local["state"][key]), (r, key)


def _rank_main():
    import torch.distributed as dist

    dist.init_process_group("gloo")
    try:
        return P.train("alternating", "ranks", resume=False)["state"]
    finally:
        dist.destroy_process_group()


def test_a_second_spec_of_one_name_or_class_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        register_strategy(StrategySpec("alternating-again", Alternating, AlternatingPolicy, lambda m, **_: Alternating()))
