"""The weight initialisation the convolutional models share (torchvision's, for ResNet and VGG)."""

from __future__ import annotations

from torch import nn

__all__ = ["init_weights"]


def init_weights(module: nn.Module, *, linear_std: float | None = None) -> None:
    """Kaiming-normal (fan_out, ReLU) convolutions and BatchNorm at weight 1, bias 0, in place.

    ``linear_std``: linear layers get N(0, linear_std) weights and zero bias (torchvision's VGG uses
    0.01); None leaves them at PyTorch's default, as torchvision's ResNet does.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0.0, linear_std)
            nn.init.zeros_(m.bias)
