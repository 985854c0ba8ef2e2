"""Engines say where components run: one process (simulated) or one process per component.

Most strategies are gradient plans that :class:`SimulatedEngine` and :class:`DistributedEngine`
run alike. Three need engines of their own: async DGL with replay buffers (:class:`ReplayEngine`
in one process, :class:`ReplayRankEngine` with one process per component), stale end-to-end
gradients (:class:`StaleEngine`, :class:`StaleRankEngine`) and sequential greedy training
(:class:`SequentialEngine`, one process only). :func:`create` and :func:`create_distributed`
pick the engine for a strategy, so the training program has no per-strategy code.
"""

from ..core.strategies import AsyncLocal, Hogwild, HogwildStashed, Sequential, Strategy
from ..network.ties import check_engine_supports_ties
from .common import StepResult
from .distributed import DistributedEngine
from .pipeline import PipelineEngine
from .replay import ReplayEngine
from .replay_ranks import ReplayRankEngine
from .sequential import SequentialEngine
from .simulated import SimulatedEngine
from .stale import HogwildEngine, StaleEngine
from .stale_ranks import StaleRankEngine

__all__ = [
    "SimulatedEngine", "DistributedEngine", "PipelineEngine", "ReplayEngine", "SequentialEngine", "StaleEngine", "HogwildEngine",
    "ReplayRankEngine", "StaleRankEngine", "StepResult", "create", "create_distributed",
]

# Strategies whose steps are not one pass of a gradient plan over every component (Strategy.own_engine).
_OWN_ENGINE = {AsyncLocal: ReplayEngine, Sequential: SequentialEngine, Hogwild: HogwildEngine, HogwildStashed: StaleEngine}
_OWN_RANK_ENGINE = {AsyncLocal: ReplayRankEngine, HogwildStashed: StaleRankEngine}


def create(net, strategy: Strategy, *, total_steps: int | None = None, flush_every: int = 0, **options):
    """The single-process engine that runs ``strategy`` on ``net``.

    ``total_steps``: the run's length in steps, which the engines of their own need (async DGL's
    quotas, sequential greedy's stages, Hogwild's final drain); ``flush_every``: Hogwild's drains
    between (0: none); ``options``: SimulatedEngine's.
    """
    cls = _OWN_ENGINE.get(type(strategy))
    if cls is None:
        return SimulatedEngine(net, strategy, **options)
    check_engine_supports_ties(net, cls.__name__)
    if cls in (StaleEngine, HogwildEngine):
        options["flush_every"] = flush_every
    return cls(net, strategy, total_steps=total_steps, **options)


def create_distributed(net, strategy: Strategy, *, total_steps: int | None = None, flush_every: int = 0,
                       static_shapes: bool = False, **options):
    """The engine that runs ``strategy`` on this rank's component of ``net``, one process per component.

    Same arguments as :func:`create`; ``static_shapes``: every batch has one shape (DistributedEngine
    then sends each tag's layout once and posts receives ahead; the engines of their own keep a
    header per message); ``options``: DistributedEngine's (``device``, ``timeout_s``, ...).
    """
    if not strategy.distributed:
        raise ValueError(f"{strategy.name} runs in one process only for now; use the simulated engine (engine=simulated)")
    cls = _OWN_RANK_ENGINE.get(type(strategy))
    if cls is None:
        return DistributedEngine(net, strategy, total_steps=total_steps, static_shapes=static_shapes, **options)
    if cls is StaleRankEngine:
        options["flush_every"] = flush_every
    return cls(net, strategy, total_steps=total_steps, **options)
