"""Models: networks written as flat block lists (single-device code), with a registry.

    net = interlock.models.create("resnet20", components=4, heads="mlp_sr", partition="flops")
    interlock.models.names()                      # every registered model
    flat = interlock.models.build("resnet20")     # the flat Network: blocks, final head, sample input

Every model honours one contract (:class:`Network`), so partitioning and heads need no
per-model code. Register a new model with ``@interlock.models.register("name")`` on a
builder ``(*, components, **options) -> Network``.
"""

from . import dgl, gpt, resnet, toy, vgg  # noqa: F401  (registers the models)
from ._registry import ImageConfig, Network, build, names, register
from .assemble import PARTITIONS, choose_cuts, create

__all__ = ["create", "build", "names", "register", "choose_cuts", "Network", "ImageConfig", "PARTITIONS"]
