"""Engines say where components run: one process (simulated) or one process per component."""

from .common import StepResult
from .simulated import SimulatedEngine

__all__ = ["SimulatedEngine", "StepResult"]
