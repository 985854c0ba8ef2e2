"""Your own model and data in the training program: importable factories, and turning what they
return (a module, a block list or a ComponentNet) into the components a run trains.

``model.factory=mypkg.models:build`` and ``data.factory=mypkg.data:make`` name functions that the
training program imports (the current directory is importable, as under ``python -m``) and
calls with ``model.kwargs`` / ``data.kwargs``, in every process of a distributed run; or pass
the objects themselves: ``train.run(config, model=..., data=...)``.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import nn

from .config import TrainConfig
from ..network.net import ComponentNet

__all__ = ["load_factory", "user_objects", "build_user_net", "PASSED"]

PASSED = "(passed to train.run)"  # what config.json records for a model or data given as an object


def load_factory(spec: str, what: str):
    """The callable ``module:attribute`` names (a ValueError that says what to fix otherwise)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{what}={spec!r}: name a function as module:function, e.g. mypkg.models:build")
    if os.getcwd() not in sys.path:  # as `python -m` would: the user's package beside the run
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"{what}={spec!r}: cannot import {module_name} ({err}); run from the folder that holds it or "
                         f"add it to PYTHONPATH") from err
    target = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ValueError(f"{what}={spec!r}: {module_name} has no {attr}")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"{what}={spec!r}: {attr} is a {type(target).__name__}, not a function")
    return target


def user_objects(config: TrainConfig, model=None, data=None) -> tuple[TrainConfig, object, object]:
    """(config as recorded, model, data): the passed objects, or what the factories return."""
    if model is not None and config.model.factory in ("", PASSED):
        config = replace(config, model=replace(config.model, factory=PASSED))
    if data is not None and config.data.factory in ("", PASSED):
        config = replace(config, data=replace(config.data, factory=PASSED))
    if data is None and config.data.factory:
        if config.data.factory == PASSED:
            raise ValueError("this run trained on data passed to train.run: pass the same data again (train.run(config, data=...))")
        data = load_factory(config.data.factory, "data.factory")(**config.data.kwargs)
    return config, model, data


def build_user_net(model, config: TrainConfig, sample_x: torch.Tensor) -> ComponentNet:
    """The ComponentNet for ``model`` (or, if None, for ``model.factory``): a ComponentNet as it
    is; a module or a list of blocks split into ``model.components`` by ``model.partition``
    (uniform, params, flops, time, K-1 block indices, or K-1 module paths) with ``model.heads``
    auxiliary heads built from each cut's output shape (interlock.network.split)."""
    from ..network.split import split

    mc = config.model
    torch.manual_seed(config.seed)  # the same weights in every process of a distributed run
    if model is None:
        if mc.factory == PASSED:
            raise ValueError("this run trained a model passed to train.run: pass the same model again (train.run(config, model=...))")
        model = load_factory(mc.factory, "model.factory")(**mc.kwargs)
    if isinstance(model, ComponentNet):
        if model.num_components != mc.components:
            raise ValueError(f"the model has {model.num_components} components but model.components={mc.components}; "
                             f"set model.components={model.num_components}")
        return model
    if not isinstance(model, nn.Module) and not (isinstance(model, Sequence) and model and all(isinstance(b, nn.Module) for b in model)):
        raise ValueError(f"the model is a {type(model).__name__}; give an nn.Module, a list of blocks or an interlock.ComponentNet")
    kw: dict = {"sample_input": sample_x[:2], "heads": None if mc.components == 1 else _head_spec(mc.heads), "head_kw": dict(mc.head_kw)}
    part = mc.partition
    if isinstance(part, list) and part and isinstance(part[0], str):
        kw["points"] = part
    elif isinstance(part, list):
        kw["cuts"] = part
    else:
        kw.update(components=mc.components, balance=part)
    net = split(model, **kw)
    if net.num_components != mc.components:
        raise ValueError(f"model.partition={part!r} gives {net.num_components} components; model.components={mc.components}")
    return net


def _head_spec(heads):
    if isinstance(heads, str):
        return heads
    raise ValueError(f"model.heads={heads!r}: with your own model give one registered head name for every cut "
                     f"(e.g. linear), or pass the heads with interlock.split(..., heads=[...]) and a ComponentNet")


def infer_num_classes(net: ComponentNet, x: torch.Tensor) -> int:
    """The size of the last dimension of the network's prediction on ``x`` (a dry run)."""
    from ..measure.flops import dry_run

    return int(dry_run(net, x[:2]).shape[-1])
