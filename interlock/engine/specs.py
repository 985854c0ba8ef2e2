"""The strategy registry: every strategy is a registered spec (torchtitan's ``TrainSpec`` pattern).

A :class:`StrategySpec` says everything the rest of interlock needs to know about a strategy:
its name, how a config string parses into it, the policy that runs its steps, the runtimes
it supports, whether it cuts batches into micro-batches, and its config section. The config's
and the CLI's name lists, every compatibility check and the engine's choice of policy read it;
nothing else names strategies.

Each policy module registers the strategies it runs (``interlock/engine/policies/*.py``, at
the bottom; importing ``interlock.engine`` imports them all); :func:`spec_for` finds the spec of a strategy object, :func:`parse_strategy` the
strategy of a config string.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from ..core.strategies import Strategy
from ..registry import Registry

__all__ = ["StrategySpec", "STRATEGIES", "register_strategy", "spec_for", "parse_strategy", "strategy_names", "RUNTIMES"]

RUNTIMES = ("local", "ranks")  # interlock.runtime.local, interlock.runtime.ranks


@dataclass(frozen=True)
class StrategySpec:
    """One strategy as the registry knows it.

    ``name``: how the strategy prints (``pattern`` given: a family of names, e.g. ``<n>-wise``);
    ``strategy``: its class; ``policy``: the :class:`~interlock.engine.policies.base.Policy` class
    that runs its steps, or a dict runtime name -> class where a runtime needs a policy of its own
    (async DGL's asynchrony is drawn in one process and real on ranks); ``build``: ``build(match, **context) -> Strategy`` from a parsed name
    (``context``: the config's ``replay`` section and the run's ``seed``); ``aliases``: other names
    accepted; ``pattern``: a regular expression of the accepted names instead of one name;
    ``runtimes``: where it runs (:data:`RUNTIMES`); ``microbatches``: whether it cuts a step's batch
    into micro-batches; ``section``: its config section, if it has one; ``summary``: one line for
    the CLI's help.
    """

    name: str
    strategy: type[Strategy]
    policy: type | dict
    build: Callable[..., Strategy]
    runtimes: tuple[str, ...] = RUNTIMES
    aliases: tuple[str, ...] = ()
    pattern: str | None = None
    microbatches: bool = False
    section: str | None = None
    summary: str = ""
    example: Callable[[], Strategy] | None = None
    _regex: re.Pattern | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        bad = [r for r in self.runtimes if r not in RUNTIMES]
        if bad or not self.runtimes:
            raise ValueError(f"strategy {self.name!r}: runtimes {self.runtimes} must be a non-empty subset of {RUNTIMES}")
        if isinstance(self.policy, dict) and set(self.policy) != set(self.runtimes):
            raise ValueError(f"strategy {self.name!r}: give one policy per runtime {self.runtimes}, got {sorted(self.policy)}")
        if self.pattern is not None:
            object.__setattr__(self, "_regex", re.compile(self.pattern))

    def __call__(self, text: str, **context) -> Strategy | None:
        """The strategy ``text`` names, or None if it is not one of this spec's names."""
        if self._regex is not None:
            m = self._regex.fullmatch(text)
            return None if m is None else self.build(m, **context)
        return self.build(None, **context) if text == self.name or text in self.aliases else None

    def policy_for(self, runtime: str) -> type:
        """The policy class that runs this strategy on ``runtime``."""
        return self.policy[runtime] if isinstance(self.policy, dict) else self.policy

    def supports(self, runtime: str) -> bool:
        return runtime in self.runtimes

    def check_runtime(self, runtime: str) -> None:
        """A ValueError saying where this strategy runs, unless it runs on ``runtime``."""
        if runtime not in self.runtimes:
            if self.runtimes == ("local",):
                raise ValueError(f"{self.name} runs in one process only for now: use runtime='local' "
                                 f"(engine=simulated in a config)")
            raise ValueError(f"{self.name} runs on runtime={self.runtimes[0]!r} only, not {runtime!r} "
                             f"(engine={_ENGINE_OF[self.runtimes[0]]} in a config)")

    def check_microbatches(self, microbatches: int) -> None:
        """A ValueError unless this strategy cuts batches (or ``microbatches`` is 1)."""
        if microbatches != 1 and not self.microbatches:
            raise ValueError(f"{self.name} does not cut batches into micro-batches (its steps are its own); "
                             f"leave microbatches=1")


_ENGINE_OF = {"local": "simulated", "ranks": "distributed"}  # the config's engine names of the runtimes

STRATEGIES: Registry[StrategySpec] = Registry("strategy", "strategies")


def register_strategy(spec: StrategySpec) -> StrategySpec:
    """Add ``spec`` to :data:`STRATEGIES` (a second spec of one name or one class is refused)."""
    if any(s.strategy is spec.strategy for s in _specs()):
        raise ValueError(f"strategy class {spec.strategy.__name__} is registered twice")
    return STRATEGIES.register(spec.name)(spec)


def _specs() -> list[StrategySpec]:
    return [STRATEGIES.get(n) for n in STRATEGIES._entries]  # (registration order: the parser's order)


def spec_for(strategy: Strategy) -> StrategySpec:
    """The spec of ``strategy``'s class (a ValueError if it is not an interlock strategy)."""
    if not isinstance(strategy, Strategy):
        raise ValueError(f"strategy must be an interlock strategy (EndToEnd(), Interlocking(n), Local(), ...), got {strategy!r}")
    for s in _specs():
        if type(strategy) is s.strategy:
            return s
    for s in _specs():  # a user's subclass of a registered strategy runs as its parent
        if isinstance(strategy, s.strategy):
            return s
    raise ValueError(f"{type(strategy).__name__} is not a registered strategy; register it with "
                     f"interlock.engine.specs.register_strategy(StrategySpec(...))")


def strategy_names() -> list[str]:
    """The strategies' names as a config accepts them, in registration order."""
    return [s.name for s in _specs()]


def parse_strategy(text: str, **context) -> Strategy:
    """The strategy a config string names (``context``: ``replay=`` the config's replay section, ``seed=``)."""
    s = text.strip().lower().replace("_", "-")
    for spec in _specs():
        got = spec(s, **context)
        if got is not None:
            return got
    raise ValueError(f"unknown strategy {text!r}; use {', '.join(strategy_names()[:-1])} or {strategy_names()[-1]}")
