"""Heads: map a component's output to the task's predictions, with a registry.

    head = interlock.heads.create("mlp_sr", in_shape=(256, 16, 16), num_classes=10)
    interlock.heads.names()       # ['aux1', ..., 'aux4', 'cnn', 'conv', 'linear', 'mlp', 'mlp_sr', ...]
    interlock.heads.cost(net, x)  # per component: params and FLOPs of the component and its head

Register a new head with ``@interlock.heads.register("name")`` on a builder
``(*, in_shape, num_classes, **options) -> nn.Module``. A head may own its local loss with a
method ``local_loss(h, y, loss_fn)`` (PredSim's mixed loss); otherwise L_k = loss_fn(head(h), y).
"""

from . import conv, dgl, linear, predsim, sedona, transformer  # noqa: F401  (registers the heads)
from ._registry import create, local_loss, names, register, takes
from .costs import cost

__all__ = ["create", "names", "register", "takes", "local_loss", "cost"]
