"""Policies: what a training step is. Each module registers the strategies it runs (interlock.engine.specs).

``plan`` (the synchronous gradient plans: end-to-end, local, n-wise, local-double), ``replay``
(async DGL's replay buffers), ``stashed`` (stale gradients with weight stashing), ``hogwild``
(the interlocking paper's Hogwild), ``sequential`` (sequential greedy stages). ``pipeline``
(PyTorch's pipeline schedules for end-to-end) is chosen by the engine's ``pipeline`` option.
"""

from . import plan, replay, stashed, hogwild, sequential  # noqa: F401  (registration order: the parser's)
from .base import Policy

__all__ = ["Policy"]
