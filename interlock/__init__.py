"""interlock: depthwise model-parallel training with local losses.

    import interlock as il
    net = il.ComponentNet(blocks=[b1, b2, b3], heads=[h1, h2, h3])
    engine = il.Engine(net, il.Interlocking(n=2), optimizer=..., loss_fn=...)   # runtime="ranks": one process per component
    result = engine.step(x, y)
"""

from .timemodel import clock, emulate
from .measure import flops, trace
from . import heads, models
from .network import hf
from .engine import Engine, StepResult
from .runtime.launch import run_local
from .network.split import SplitPlan, split
from .training.tasks import Task
from .training.loop import run
from .network.net import ComponentNet, group_blocks, merge_adjacent, parameter_count, partition_balanced, partition_uniform
from .core.strategies import AsyncLocal, EndToEnd, GradientPlan, Hogwild, HogwildStashed, Interlocking, Local, LocalDouble, Sequential, Strategy

__version__ = "0.1.0"

__all__ = [
    "ComponentNet",
    "split",
    "SplitPlan",
    "Task",
    "run",
    "Engine",
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
