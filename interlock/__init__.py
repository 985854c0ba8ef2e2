"""interlock: depthwise model-parallel training with local losses.

    import interlock as il
    net = il.ComponentNet(blocks=[b1, b2, b3], heads=[h1, h2, h3])
    engine = il.SimulatedEngine(net, il.Interlocking(n=2), optimizer=..., loss_fn=...)
    result = engine.step(x, y)
"""

from . import clock, emulate, flops, heads, hf, models, trace
from .engines import (
    DistributedEngine, PipelineEngine, ReplayEngine, SequentialEngine, SimulatedEngine, StaleEngine, HogwildEngine, StepResult,
)
from .launch import run_local
from .split import SplitPlan, split
from .tasks import Task
from .net import ComponentNet, group_blocks, merge_adjacent, parameter_count, partition_balanced, partition_uniform
from .strategies import AsyncLocal, EndToEnd, GradientPlan, Hogwild, HogwildStashed, Interlocking, Local, LocalDouble, Sequential, Strategy

__version__ = "0.1.0"

__all__ = [
    "ComponentNet",
    "split",
    "SplitPlan",
    "Task",
    "SimulatedEngine",
    "DistributedEngine",
    "PipelineEngine",
    "ReplayEngine",
    "SequentialEngine",
    "StaleEngine",
    "HogwildEngine",
    "run_local",
    "StepResult",
    "Strategy",
    "GradientPlan",
    "EndToEnd",
    "Interlocking",
    "Local",
    "AsyncLocal",
    "Sequential",
    "LocalDouble",
    "Hogwild",
    "HogwildStashed",
    "partition_uniform",
    "partition_balanced",
    "group_blocks",
    "merge_adjacent",
    "parameter_count",
]
