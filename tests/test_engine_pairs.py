"""Every (policy, runtime) pair the strategy registry declares, generated from the registry.

A strategy registered with its runtimes is tested here on each of them without new test code:
the engine's interface works, a run resumed from component checkpoints equals the uninterrupted
run bit for bit, and on the ranks runtime (one process per component over gloo) each component
ends exactly where the local runtime's does.
"""

from __future__ import annotations

import pytest
import torch

import interlock as il
import pair_helpers as P
from interlock.engine.specs import STRATEGIES
from interlock.runtime.launch import run_local

NAMES = P.builtin_names()  # (not a strategy a test registers: spawned ranks do not know it)
LOCAL = [n for n in NAMES if STRATEGIES.get(n).supports("local")]
RANKS = [n for n in NAMES if STRATEGIES.get(n).supports("ranks")]


def test_every_registered_strategy_has_a_deterministic_example_and_a_runtime():
    assert set(NAMES) >= {"end-to-end", "local", "<n>-wise", "async-local", "sequential", "local-double", "hogwild",
                          "hogwild-stashed"}
    for name in NAMES:
        spec = STRATEGIES.get(name)
        assert spec.example is not None and type(spec.example()) is spec.strategy, name
        assert spec.runtimes and all(r in ("local", "ranks") for r in spec.runtimes)


@pytest.mark.parametrize("name", LOCAL)
def test_local_pair_offers_the_interface_and_resumes_exactly(name):
    full = P.train(name, "local", resume=False)
    resumed = P.train(name, "local", resume=True)
    assert full["step_count"] == resumed["step_count"] == P.STEPS and full["wants_more"] is False
    assert P.same_losses(full["losses"], resumed["losses"])
    assert full["state"].keys() == resumed["state"].keys()
    assert all(torch.equal(full["state"][k], resumed["state"][k]) for k in full["state"]), name
    engine = P.make(name, "local", net_seed=0)
    assert engine.local_components == list(range(engine.num_components)) and engine.is_main
    table = torch.arange(2.0 * engine.num_components).reshape(engine.num_components, 2)
    assert torch.equal(engine.log_sum(table), table) and engine.gather_losses([1.0] * engine.num_components) == [1.0] * engine.num_components
    preds = engine.heads_forward(P.batches(P.K, seed=1)[0][0])
    assert len(preds) == engine.num_components and preds[-1] is not None
    assert isinstance(engine.counters(), dict) and len(engine.optimizers) == engine.num_components


def test_ranks_pairs_match_the_local_runtime_and_resume_exactly():
    ranks = run_local(P.rank_main, P.K, RANKS, timeout_s=300)
    for name in RANKS:
        local = P.train(name, "local", resume=False)
        for r, got in enumerate(ranks):
            full, resumed = got[name, False], got[name, True]
            assert full["state"].keys() == {k for k in local["state"] if k.startswith(f"{r}.")}, name
            for key, t in full["state"].items():
                assert torch.equal(t, local["state"][key]), (name, r, key)  # ranks == local, bit for bit
                assert torch.equal(resumed["state"][key], t), (name, r, key)  # resumed == uninterrupted
            mine = [[row[r]] for row in full["losses"]]
            assert P.same_losses(mine, [[row[r]] for row in local["losses"]]), (name, r)


def test_a_strategy_on_a_runtime_it_does_not_declare_is_refused_with_where_it_runs():
    for name in NAMES:
        spec = STRATEGIES.get(name)
        if not spec.supports("ranks"):
            with pytest.raises(ValueError, match="runs in one process only"):
                P.make(name, "ranks", net_seed=0)
