"""Engines say where components run: one process (simulated) or one process per component."""

from .common import StepResult
from .distributed import DistributedEngine
from .pipeline import PipelineEngine
from .simulated import SimulatedEngine

__all__ = ["SimulatedEngine", "DistributedEngine", "PipelineEngine", "StepResult"]
