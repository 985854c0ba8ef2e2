"""The engine: one step loop over a runtime (where components run) and a policy (what a step is).

:class:`Engine` is the one engine; :mod:`interlock.engine.specs` is the strategy registry that
picks each strategy's policy and says on which runtimes it runs; :mod:`interlock.engine.policies`
holds the policies.
"""

from . import policies  # (each policy module registers its strategies: every import of interlock.engine sees them all)
from .engine import Engine, make_runtime
from .options import EngineOptions, Losses, StepResult
from .specs import STRATEGIES, StrategySpec, parse_strategy, register_strategy, spec_for, strategy_names

__all__ = ["Engine", "make_runtime", "EngineOptions", "Losses", "StepResult", "STRATEGIES", "StrategySpec", "parse_strategy",
           "register_strategy", "spec_for", "strategy_names"]
