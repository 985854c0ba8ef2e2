"""interlock: depthwise model-parallel training with local losses.

    import interlock as il
    net = il.ComponentNet(blocks=[b1, b2, b3], heads=[h1, h2, h3])
    engine = il.SimulatedEngine(net, il.Interlocking(n=2), optimizer=..., loss_fn=...)
    result = engine.step(x, y)
"""

from . import clock, emulate, flops, heads, models, trace
from .engines import DistributedEngine, PipelineEngine, SimulatedEngine, StepResult
from .launch import run_local
from .net import ComponentNet, group_blocks, parameter_count, partition_balanced, partition_uniform
from .strategies import EndToEnd, GradientPlan, Interlocking, Local, Strategy

__version__ = "0.1.0"

__all__ = [
    "ComponentNet",
    "SimulatedEngine",
    "DistributedEngine",
    "PipelineEngine",
    "run_local",
    "StepResult",
    "Strategy",
    "GradientPlan",
    "EndToEnd",
    "Interlocking",
    "Local",
    "partition_uniform",
    "partition_balanced",
    "group_blocks",
    "parameter_count",
]
