"""Engines say where components run: one process (simulated) or one process per component.

Most strategies are gradient plans that :class:`SimulatedEngine` and :class:`DistributedEngine`
run alike. Three need an engine of their own, in one process for now: async DGL with replay
buffers (:class:`ReplayEngine`), sequential greedy training (:class:`SequentialEngine`) and
stale end-to-end gradients (:class:`StaleEngine`). :func:`create` picks the single-process engine
for a strategy, so the training program has no per-strategy code.
"""

from ..strategies import AsyncLocal, Hogwild, Sequential, Strategy
from .common import StepResult
from .distributed import DistributedEngine
from .pipeline import PipelineEngine
from .replay import ReplayEngine
from .sequential import SequentialEngine
from .simulated import SimulatedEngine
from .stale import StaleEngine

__all__ = [
    "SimulatedEngine", "DistributedEngine", "PipelineEngine", "ReplayEngine", "SequentialEngine", "StaleEngine",
    "StepResult", "create",
]

# Strategies whose steps are not one pass of a gradient plan over every component.
_OWN_ENGINE = {AsyncLocal: ReplayEngine, Sequential: SequentialEngine, Hogwild: StaleEngine}


def create(net, strategy: Strategy, *, total_steps: int | None = None, **options):
    """The single-process engine that runs ``strategy`` on ``net``.

    ``total_steps``: the run's length in steps, which the engines of their own need (async DGL's
    quotas, sequential greedy's stages, Hogwild's final flush); ``options``: SimulatedEngine's.
    """
    cls = _OWN_ENGINE.get(type(strategy))
    if cls is None:
        return SimulatedEngine(net, strategy, **options)
    return cls(net, strategy, total_steps=total_steps, **options)
